"""The live map's feed (dclcomms.livemap): frame contents, deltas, key frames on demand,
the bounded replay ring, the HTTP routes and their reject paths."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import numpy as np
import pytest

from dclcomms.heartbeats import UNSET
from dclcomms.http import Request, Response, Router
from dclcomms.livemap import MapFeed, asset, transport_of
from dclcomms.metrics import Registry
from dclcomms.pubsub import (
    HeartbeatBatch,
    InProcessPubSub,
    IslandChanged,
    IslandData,
    IslandStatus,
)
from dclcomms.stats import Stats

A, B, C = "0x" + "a" * 40, "0x" + "b" * 40, "0x" + "c" * 40


class Clock:
    def __init__(self) -> None:
        self.t = 1_700_000_000_000

    def __call__(self) -> int:
        return self.t


class Sink:
    """Records what the feed publishes; ``want`` says whether a page waits for a key."""

    def __init__(self) -> None:
        self.want = False
        self.sent: list[tuple[str, str]] = []

    def publish_feed(self, delta: str, key: str = "") -> None:
        self.sent.append((delta, key))

    def feed_wants_key(self) -> bool:
        return self.want


def _setup(**kw: Any) -> tuple[InProcessPubSub, MapFeed, Sink, Clock]:
    bus = InProcessPubSub()
    clock = Clock()
    stats = Stats(bus, clock_ms=clock)
    sink = Sink()
    feed = MapFeed(stats, bus, sink, clock_ms=clock, **kw)
    return bus, feed, sink, clock


def _hb(bus: InProcessPubSub, addrs: list[str], pos: list[tuple[float, float, float]]) -> None:
    n = len(addrs)
    bus.publish_heartbeats(HeartbeatBatch(addrs, np.asarray(pos, np.float32), [UNSET] * n))


def _islands(bus: InProcessPubSub, *islands: tuple[str, tuple[str, ...]]) -> None:
    bus.publish(
        "engine.islands",
        IslandStatus(
            tuple(IslandData(i, peers, 100, (10.0, 0.0, 20.0), 5.0) for i, peers in islands)
        ),
    )


def _last(sink: Sink) -> dict[str, Any]:
    return json.loads(sink.sent[-1][0])


def test_transport_of_connection_strings() -> None:
    assert transport_of("livekit:wss://lk.example?access_token=x") == "livekit"
    assert transport_of("ws-room:ws://h/rooms/I1?access_token=x") == "ws-room"
    assert transport_of("p2p:I1:0xabc") == "p2p"
    assert transport_of("offline:offline.dcl.eth") == "fixed"


def test_each_tick_sends_a_delta_with_only_what_changed() -> None:
    bus, _feed, sink, clock = _setup()
    _hb(bus, [A, B], [(1.2, 0.0, 3.7), (-17.0, 5.0, 40.0)])
    bus.publish("engine.peer.x.island_changed", IslandChanged("I1", "p2p:I1:" + A, None, {}))
    _islands(bus, ("I1", (A, B)))
    d = _last(sink)
    assert d["k"] == 0 and d["seq"] == 1 and d["q"] == 1.0
    slots = {d["add"][i + 1]: d["add"][i] for i in range(0, len(d["add"]), 4)}
    assert set(slots) == {A, B}
    i = d["add"].index(B)
    assert d["add"][i + 1 : i + 3] == [-17, 40]  # quantised to 1 m, y dropped
    (isl,) = d["isl"]
    assert isl["id"] == "I1" and isl["tr"] == "p2p"
    assert (isl["x"], isl["z"], isl["r"]) == (8, 20, 8)  # the circle (10, 20) r 5 on a 4 m grid
    assert sorted(isl["m"]) == sorted(slots.values())
    assert [c[1:] for c in isl["ch"]] == [["+", A], ["+", B]]
    assert d["counters"]["peers"] == 2 and d["counters"]["islands"] == 1
    assert sorted(d["hot"]) == [[-2, 2, 1], [0, 0, 1]]  # parcels (16 m) with their peers

    # Next tick: A moved less than a quantum, B moved; nothing else is repeated.
    clock.t += 1000
    _hb(bus, [A, B], [(1.4, 0.0, 3.9), (-10.0, 5.0, 40.0)])
    _islands(bus, ("I1", (A, B)))
    d = _last(sink)
    assert d["seq"] == 2 and d["add"] == [] and d["del"] == [] and d["isl"] == []
    assert d["mov"] == [slots[B], 7, 0]  # (slot step, dx, dz): -17 -> -10
    assert d["geo"] == []
    # Several movers: in slot order, each slot a step from the previous one.
    clock.t += 1000
    _hb(bus, [A, B], [(5.0, 0.0, 3.9), (-10.0, 5.0, 38.0)])
    _islands(bus, ("I1", (A, B)))
    d = _last(sink)
    lo, hi = sorted([(slots[A], 4, 0), (slots[B], 0, -2)])
    assert d["mov"] == [lo[0], lo[1], lo[2], hi[0] - lo[0], hi[1], hi[2]]

    # B leaves: its slot is deleted, I1 is re-sent with the change, I2 appears.
    clock.t += 1000
    bus.publish(f"peer.{B}.disconnect", None)
    bus.publish("engine.peer.x.island_changed", IslandChanged("I2", "livekit:x", None, {}))
    _islands(bus, ("I1", (A,)), ("I2", ()))
    d = _last(sink)
    assert d["del"] == [slots[B]]
    by_id = {i["id"]: i for i in d["isl"]}
    assert by_id["I1"]["m"] == [slots[A]] and by_id["I1"]["ch"][0][1:] == ["-", B]
    assert by_id["I2"]["tr"] == "livekit"
    assert d["counters"]["island_changes_per_s"] == 1.0
    # I2 disappears.
    clock.t += 1000
    _islands(bus, ("I1", (A,)))
    assert _last(sink)["gone"] == ["I2"]
    # A circle that moves (members unchanged) goes in "geo", not with its members.
    clock.t += 1000
    bus.publish(
        "engine.islands",
        IslandStatus((IslandData("I1", (A,), 100, (30.0, 0.0, 20.0), 5.0),)),
    )
    d = _last(sink)
    assert d["isl"] == [] and d["geo"] == ["I1", 32, 20, 8]


def test_key_frame_only_when_a_page_wants_one_and_it_rebuilds_the_map() -> None:
    bus, _feed, sink, clock = _setup(key_every=1000)
    _hb(bus, [A, B, C], [(0, 0, 0), (16, 0, 16), (33, 0, 0)])
    _islands(bus, ("I1", (A, B)), ("I2", (C,)))
    assert sink.sent[-1][1] == ""  # nobody asked
    sink.want = True
    clock.t += 1000
    _hb(bus, [C], [(40, 0, 0)])
    _islands(bus, ("I1", (A, B)), ("I2", (C,)))
    delta, key = sink.sent[-1]
    k = json.loads(key)
    assert k["k"] == 1 and k["seq"] == json.loads(delta)["seq"] == 2
    peers = {k["peers"][i + 1]: k["peers"][i + 2 : i + 4] for i in range(0, len(k["peers"]), 4)}
    assert peers == {A: [0, 0], B: [16, 16], C: [40, 0]}
    assert {i["id"]: len(i["m"]) for i in k["isl"]} == {"I1": 2, "I2": 1}
    assert all(len(i["ch"]) >= 1 for i in k["isl"])  # recent changes travel with the key


def test_slots_are_reused_and_changes_are_bounded() -> None:
    bus, feed, sink, clock = _setup()
    many = [f"0x{i:040x}" for i in range(30)]
    _hb(bus, many, [(float(i), 0.0, 0.0) for i in range(30)])
    _islands(bus, ("I1", tuple(many)))
    for a in many[:10]:
        bus.publish(f"peer.{a}.disconnect", None)
    clock.t += 1000
    _islands(bus, ("I1", tuple(many[10:])))
    new = [f"0x{i + 100:040x}" for i in range(10)]
    _hb(bus, new, [(0.0, 0.0, 0.0)] * 10)
    clock.t += 1000
    _islands(bus, ("I1", tuple(many[10:])))
    d = _last(sink)
    assert sorted(d["add"][0::4]) == sorted(json.loads(sink.sent[1][0])["del"])  # reused
    key = json.loads(feed.snapshot())
    (isl,) = key["isl"]
    assert len(isl["ch"]) == 10  # only the recent ones are kept


def test_ring_is_bounded_and_replays_from_a_key_frame() -> None:
    bus, feed, _sink, clock = _setup(ring_ticks=10, key_every=4)
    for i in range(25):
        clock.t += 1000
        _hb(bus, [A], [(float(i * 3), 0.0, 0.0)])
        _islands(bus, ("I1", (A,)))
    assert len(feed.ring) == 10
    assert feed.ring_bytes == sum(len(e.frame) for e in feed.ring)
    frames = [json.loads(f) for f in feed.replay()]
    assert frames[0]["k"] == 1  # starts at a key frame
    seqs = [f["seq"] for f in frames]
    assert seqs == list(range(seqs[0], 26))
    # Keys every 4 ticks (seq 1, 5, ...): the last 10 ticks are 16..25, the first key 17.
    assert seqs[0] == 17
    # Replaying the last 3 s starts at the newest key at or before then.
    recent = [json.loads(f)["seq"] for f in feed.replay(3.0)]
    assert recent[0] == 21 and recent[-1] == 25


def _get(router: Router, path: str, query: str = "") -> Response:
    return asyncio.run(router.dispatch(Request("GET", path, query)))


def test_routes_page_assets_replay_and_rejects() -> None:
    bus, feed, _sink, _clock = _setup()
    router = Router()
    feed.routes(router)
    _hb(bus, [A], [(0.0, 0.0, 0.0)])
    _islands(bus, ("I1", (A,)))
    page = _get(router, "/map")
    assert page.status == 200 and page.headers["Content-Type"].startswith("text/html")
    assert b"/map/map.js" in page.body and b"<canvas" in page.body
    assert b"http" not in page.body.replace(b"https:", b"").split(b"<body>")[0]  # no CDN
    js = _get(router, "/map/map.js")
    assert js.status == 200 and js.body == asset("map.js") and b"/map/feed" in js.body
    assert _get(router, "/map/map.css").status == 200
    missing = _get(router, "/map/nope.js")
    assert missing.status == 404 and missing.json() == {"error": "Not Found"}
    r = _get(router, "/map/replay.json", "seconds=60")
    assert r.status == 200 and r.json()["frames"][0]["k"] == 1
    for bad in ("x", "-1", "nan", "inf"):
        r = _get(router, "/map/replay.json", f"seconds={bad}")
        assert r.status == 400 and r.json()["code"] == "bad_request", bad
    snap = _get(router, "/map/snapshot.json").json()
    assert snap["k"] == 1 and snap["counters"]["peers"] == 1


def test_metrics_and_bad_arguments() -> None:
    reg = Registry()
    bus, feed, _sink, _clock = _setup(registry=reg)
    _hb(bus, [A], [(0.0, 0.0, 0.0)])
    _islands(bus, ("I1", (A,)))
    text = reg.render()
    for name in ("dcl_map_frame_build_seconds", "dcl_map_delta_bytes", "dcl_map_replay_bytes"):
        assert name in text
    with pytest.raises(ValueError):
        MapFeed(feed.stats, bus, ring_ticks=0)
    feed.close()
    n = feed.seq
    _islands(bus, ("I1", (A,)))
    assert feed.seq == n  # unsubscribed


def test_hot_scenes_by_name_from_a_real_content_server() -> None:
    from aiohttp import web

    from tests.helpers.common import start_app

    scene = {
        "id": "bafyscene",
        "pointers": ["0,0", "0,1"],
        "metadata": {"display": {"title": "Plaza"}, "scene": {"base": "0,0", "parcels": ["0,0"]}},
    }

    async def active(request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response([scene] if "0,0" in body["pointers"] else [])

    async def run() -> None:
        app = web.Application()
        app.router.add_post("/entities/active", active)
        runner, port = await start_app(app)
        try:
            bus = InProcessPubSub()
            clock = Clock()
            stats = Stats(bus, clock_ms=clock, content_url=f"http://127.0.0.1:{port}")
            sink = Sink()
            feed = MapFeed(stats, bus, sink, clock_ms=clock)
            _hb(bus, [A, B, C], [(1.0, 0.0, 1.0), (2.0, 0.0, 2.0), (500.0, 0.0, 500.0)])
            for _ in range(40):  # a lookup every 15 ticks, in the background
                clock.t += 1000
                _islands(bus, ("I1", (A, B)), ("I2", (C,)))
                await asyncio.sleep(0.05)  # the tick runs right after engine.islands
                if json.loads(sink.sent[-1][0])["scenes"]:
                    break
            assert json.loads(sink.sent[-1][0])["scenes"] == [["Plaza", 0, 0, 2]]
            assert json.loads(feed.snapshot())["scenes"] == [["Plaza", 0, 0, 2]]
            feed.close()
        finally:
            await runner.cleanup()

    asyncio.run(asyncio.wait_for(run(), 30))
    # Without a content server there is nothing to name: the parcels stand alone.
    bus, _feed, sink, _clock = _setup()
    _hb(bus, [A], [(0.0, 0.0, 0.0)])
    _islands(bus, ("I1", (A,)))
    assert _last(sink)["scenes"] == []
