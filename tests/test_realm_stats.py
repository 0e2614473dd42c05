"""Stats routes fed through the bus, with the reference JSON shapes (archipelago.md 5)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import numpy as np
from aiohttp import web

from dclcomms.heartbeats import UNSET
from dclcomms.http import Request, Response, Router
from dclcomms.pubsub import Discovery, HeartbeatBatch, InProcessPubSub, IslandData, IslandStatus
from dclcomms.stats import Stats
from tests.helpers.common import start_app

A, B, C = "0x" + "a" * 40, "0x" + "b" * 40, "0x" + "c" * 40


class Clock:
    def __init__(self) -> None:
        self.t = 1_700_000_000_000

    def __call__(self) -> int:
        return self.t


def _setup(**kw: Any) -> tuple[InProcessPubSub, Stats, Router, Clock]:
    bus = InProcessPubSub()
    clock = Clock()
    stats = Stats(bus, clock_ms=clock, **kw)
    router = Router()
    stats.routes(router)
    return bus, stats, router, clock


def _hb(bus: InProcessPubSub, addrs: list[str], pos: list[tuple[float, float, float]]) -> None:
    n = len(addrs)
    bus.publish_heartbeats(HeartbeatBatch(addrs, np.asarray(pos, np.float32), [UNSET] * n))


def _get(router: Router, path: str, query: str = "") -> Response:
    return asyncio.run(router.dispatch(Request("GET", path, query)))


def test_peers_islands_parcels() -> None:
    bus, _stats, router, clock = _setup()
    _hb(bus, [A, B], [(1.0, 2.0, 3.0), (-17.0, 0.0, 40.0)])
    peer_a = {
        "id": A,
        "address": A,
        "lastPing": clock.t,
        "parcel": [0, 0],
        "position": [1.0, 2.0, 3.0],
    }
    peer_b = {
        "id": B,
        "address": B,
        "lastPing": clock.t,
        "parcel": [-2, 2],
        "position": [-17.0, 0.0, 40.0],
    }
    for prefix in ("", "/comms"):
        assert _get(router, prefix + "/peers").json() == {"ok": True, "peers": [peer_a, peer_b]}
        assert _get(router, prefix + f"/peers/{A.upper().replace('0X', '0x')}").json() == {
            "ok": True,
            "peer": peer_a,
        }
        r = _get(router, prefix + f"/peers/{C}")
        assert (r.status, r.json()) == (404, {"ok": False, "peer": None})
    assert _get(router, "/peers", f"id={B}&id={C}").json() == {"ok": True, "peers": [peer_b]}

    bus.publish(
        "engine.islands",
        IslandStatus((IslandData("I1", (A, C), 100, (1.0, 0.0, 3.0), 0.0),)),
    )
    island = {
        "id": "I1",
        "peers": [peer_a],
        "maxPeers": 100,
        "center": [1.0, 0.0, 3.0],
        "radius": 0.0,
    }
    assert _get(router, "/islands").json() == {"ok": True, "islands": [island]}  # C never seen
    assert _get(router, "/comms/islands/I1").json() == island
    r = _get(router, "/islands/I9")
    assert (r.status, r.body) == (404, b"")

    _hb(bus, [C], [(2.0, 0.0, 2.0)])
    assert _get(router, "/parcels").json() == {
        "parcels": [
            {"peersCount": 2, "parcel": {"x": 0, "y": 0}},
            {"peersCount": 1, "parcel": {"x": -2, "y": 2}},
        ]
    }


def test_disconnect_and_silence_forget_peers() -> None:
    bus, _stats, router, clock = _setup(heartbeat_timeout_ms=60_000)
    _hb(bus, [A, B], [(0.0, 0.0, 0.0)] * 2)
    bus.publish(f"peer.{A}.disconnect", None)
    assert [p["id"] for p in _get(router, "/peers").json()["peers"]] == [B]
    clock.t += 59_000
    _hb(bus, [C], [(0.0, 0.0, 0.0)])
    clock.t += 2_000  # B silent 61 s, C 2 s
    assert [p["id"] for p in _get(router, "/peers").json()["peers"]] == [C]


def test_core_status_follows_discovery() -> None:
    bus, _stats, router, clock = _setup()
    assert _get(router, "/core-status").json() == {"healthy": False, "userCount": 0}
    bus.publish("engine.discovery", Discovery("archipelago", clock.t, "abc", 3))
    assert _get(router, "/core-status").json() == {"healthy": True, "userCount": 3}
    clock.t += 90_000
    assert _get(router, "/core-status").json() == {"healthy": False, "userCount": 3}


def test_hot_scenes_without_content_server_group_by_parcel() -> None:
    bus, _stats, router, _clock = _setup()
    _hb(bus, [A, B, C], [(1.0, 0.0, 1.0), (2.0, 0.0, 2.0), (100.0, 0.0, -1.0)])
    assert _get(router, "/hot-scenes").json() == [
        {"id": "0,0", "name": "", "baseCoords": [0, 0], "usersTotalCount": 2, "parcels": [[0, 0]]},
        {
            "id": "6,-1",
            "name": "",
            "baseCoords": [6, -1],
            "usersTotalCount": 1,
            "parcels": [[6, -1]],
        },
    ]


def test_hot_scenes_from_a_real_content_server() -> None:
    calls: list[list[str]] = []
    scene = {
        "id": "bafyscene",
        "pointers": ["0,0", "0,1", "6,-1"],
        "content": [{"file": "thumb.png", "hash": "bafythumb"}],
        "metadata": {
            "display": {"title": "Plaza", "navmapThumbnail": "thumb.png", "description": "hi"},
            "scene": {"base": "0,0", "parcels": ["0,0", "0,1", "6,-1"]},
            "contact": {"name": "Ann"},
            "source": {"projectId": "p1"},
        },
    }

    async def active(request: web.Request) -> web.Response:
        body = await request.json()
        calls.append(sorted(body["pointers"]))
        return web.json_response([scene] if "0,0" in body["pointers"] else [])

    async def run() -> None:
        app = web.Application()
        app.router.add_post("/entities/active", active)
        runner, port = await start_app(app)
        try:
            bus, stats, router, _clock = _setup(content_url=f"http://127.0.0.1:{port}")
            _hb(bus, [A, B, C], [(1.0, 0.0, 1.0), (2.0, 0.0, 20.0), (500.0, 0.0, 500.0)])
            r = await router.dispatch(Request("GET", "/hot-scenes"))
            assert json.loads(r.body) == [
                {
                    "id": "bafyscene",
                    "name": "Plaza",
                    "baseCoords": [0, 0],
                    "usersTotalCount": 2,
                    "parcels": [[0, 0], [0, 1], [6, -1]],
                    "thumbnail": f"http://127.0.0.1:{port}/contents/bafythumb",
                    "creator": "Ann",
                    "projectId": "p1",
                    "description": "hi",
                }
            ]
            await router.dispatch(Request("GET", "/hot-scenes"))  # cached: no second call
            assert calls == [["0,0", "0,1", "31,31"]]
        finally:
            await runner.cleanup()
        r = await router.dispatch(Request("GET", "/hot-scenes"))  # cache still valid
        assert r.status == 200
        stats.hot_scenes_cache_s = 0
        stats._scene_cache.clear()
        r = await router.dispatch(Request("GET", "/hot-scenes"))  # server gone
        assert (r.status, json.loads(r.body)) == (
            503,
            {"error": "content server unavailable", "code": "content_unavailable"},
        )

    asyncio.run(run())


def _with_core(clock: Clock) -> tuple[InProcessPubSub, Any, Stats, Stats]:
    """A core on a bus and two stats on it: one reading the core's engine, one on its own."""
    from dclcomms.archipelago import Engine
    from dclcomms.archipelago.core import ArchipelagoCore
    from dclcomms.config import RealmConfig
    from dclcomms.policy import build_transports, make_policy

    cfg = RealmConfig()
    bus = InProcessPubSub()
    policy = make_policy(None, build_transports(cfg, bound_port=1, ws_room_secret="s"), cfg)
    core = ArchipelagoCore(Engine(), bus, policy, clock_ms=clock)
    return bus, core, Stats(bus, engine=core.engine, clock_ms=clock), Stats(bus, clock_ms=clock)


def test_stats_next_to_the_core_read_the_engine_positions() -> None:
    clock = Clock()
    bus, core, shared, own = _with_core(clock)
    routers = []
    for s in (shared, own):
        routers.append(Router())
        s.routes(routers[-1])

    def answers(path: str) -> list[Any]:
        return [_get(r, path).json() for r in routers]

    _hb(bus, [A, B, C], [(1.0, 2.0, 3.0), (-17.0, 0.0, 40.0), (300.0, 0.0, 0.0)])
    with_engine, on_its_own = answers("/peers")  # not placed yet: listed all the same
    assert with_engine == on_its_own and len(with_engine["peers"]) == 3
    core.tick()
    clock.t += 1_000
    _hb(bus, [A], [(5.0, 1.0, 6.0)])  # a move between ticks: the engine holds it already
    assert shared._peers == {}  # no copy of the positions here
    for path in ("/peers", f"/peers/{A}", "/islands", "/parcels", "/hot-scenes"):
        with_engine, on_its_own = answers(path)
        assert with_engine == on_its_own, path
    peers = _get(routers[0], "/peers").json()["peers"]
    assert {p["id"]: (p["position"], p["lastPing"]) for p in peers} == {
        A: ([5.0, 1.0, 6.0], clock.t),
        B: ([-17.0, 0.0, 40.0], clock.t - 1_000),
        C: ([300.0, 0.0, 0.0], clock.t - 1_000),
    }
    addrs, xyz = shared.positions()
    assert addrs == [p["id"] for p in peers]
    assert xyz.dtype == np.float64 and xyz.tolist() == [p["position"] for p in peers]
    assert own.positions()[0] == [A, B, C]

    bus.publish(f"peer.{B}.disconnect", None)  # gone at once, before the engine forgets it
    assert [p["id"] for p in _get(routers[0], "/peers").json()["peers"]] == [A, C]
    clock.t += 59_500  # C silent for 60.5 s
    assert shared.sweep() == own.sweep() == 1
    with_engine, on_its_own = answers("/peers")
    assert with_engine == on_its_own and [p["id"] for p in with_engine["peers"]] == [A]
    for s in (shared, own):
        s.close()
    core.close()
