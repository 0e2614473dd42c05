"""The live map over real sockets: a realm serves /map and pushes frames on /map/feed at
each tick; a page that does not read is skipped forward, then closed, never buffered
without bound; too many pages are refused."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import aiohttp

from dclcomms import ws
from dclcomms.config import RealmConfig
from dclcomms.heartbeats import UNSET
from dclcomms.realm import Realm
from tests.helpers.common import realm_config, run
from tests.helpers.realm_client import ArchipelagoClient, eventually


def config(**kw: Any) -> RealmConfig:
    return realm_config(**kw)


async def _frames(
    page: aiohttp.ClientWebSocketResponse,
    until: Any,
    timeout: float = 10.0,
    state: dict[str, Any] | None = None,
) -> Any:
    """Applies frames as the page does (key resets, deltas patch) until ``until(state)``;
    pass the returned state back to continue from it."""
    if state is None:
        state = {"peers": {}, "islands": {}, "seq": None}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        msg = await page.receive(max(0.01, deadline - loop.time()))
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        f = json.loads(msg.data)
        if f["k"] == 1:
            p = f["peers"]
            state["peers"] = {p[i]: p[i + 1] for i in range(0, len(p), 4)}
            state["islands"] = {i["id"]: i for i in f["isl"]}
        else:
            assert state["seq"] is not None and f["seq"] == state["seq"] + 1, "delta without base"
            for s in f["del"]:
                state["peers"].pop(s, None)
            a = f["add"]
            state["peers"].update({a[i]: a[i + 1] for i in range(0, len(a), 4)})
            for g in f["gone"]:
                state["islands"].pop(g, None)
            state["islands"].update({i["id"]: i for i in f["isl"]})
        state["seq"] = f["seq"]
        state["counters"] = f["counters"]
        if until(state):
            return state


def test_realm_pushes_map_frames_each_tick() -> None:
    async def test() -> None:
        async with Realm(config()) as realm, aiohttp.ClientSession() as http:
            base = realm.url.replace("http", "ws")
            page_resp = await http.get(realm.url + "/map")
            assert page_resp.status == 200 and "<canvas" in await page_resp.text()
            page = await http.ws_connect(base + "/map/feed")
            clients = [ArchipelagoClient(seed) for seed in (11, 12, 13)]
            try:
                for i, c in enumerate(clients):
                    await c.connect(base)
                    await c.handshake()
                    await c.heartbeat(10.0 * i, 0.0, 500.0 if i == 2 else 0.0)
                state = await _frames(
                    page, lambda s: len(s["peers"]) == 3 and len(s["islands"]) == 2
                )
                assert set(state["peers"].values()) == {c.address for c in clients}
                trs = {i["tr"] for i in state["islands"].values()}
                assert trs == {"ws-room"}  # the default transport, from its connection strings
                assert state["counters"]["peers"] == 3 and state["counters"]["islands"] == 2
                await clients[2].close()
                state = await _frames(page, lambda s: len(s["peers"]) == 2, state=state)
                assert len(state["islands"]) == 1
                st = realm.server.stats()["feed"]
                assert st["pages"] == 1 and st["key_frames_sent"] >= 1 and st["frames_sent"] > 1
                metrics = await (await http.get(realm.url + "/metrics")).text()
                assert "dcl_ws_feed_pages 1" in metrics and "dcl_map_delta_bytes" in metrics
                replay = await (await http.get(realm.url + "/map/replay.json")).json()
                assert replay["frames"][0]["k"] == 1 and len(replay["frames"]) > 2
            finally:
                for c in clients:
                    await c.close()
                await page.close()

    run(test)


def test_map_can_be_switched_off() -> None:
    async def test() -> None:
        async with Realm(config(map_feed=False)) as realm, aiohttp.ClientSession() as http:
            r = await http.get(realm.url + "/map")
            assert r.status == 404
            try:
                await http.ws_connect(realm.url.replace("http", "ws") + "/map/feed")
                raise AssertionError("feed served while switched off")
            except aiohttp.WSServerHandshakeError as e:
                assert e.status == 404

    run(test)


def _silent_page(port: int) -> socket.socket:
    """A WebSocket client that upgrades and then never reads (a frozen tab)."""
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(
        b"GET /map/feed HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return s


def test_slow_page_is_skipped_forward_then_closed_and_memory_stays_bounded() -> None:
    async def test() -> None:
        server = ws.Server(
            ws.ServerConfig(
                connector=False,
                rooms=False,
                map_feed=True,
                map_feed_max_queued_bytes=256 * 1024,
                map_feed_max_skipped=5,
            )
        )
        port = server.start()
        silent = _silent_page(port)
        try:
            async with aiohttp.ClientSession() as http:
                fast = await http.ws_connect(f"ws://127.0.0.1:{port}/map/feed")
                await eventually(lambda: server.stats()["feed"]["pages"] == 2)
                received = 0
                for i in range(400):
                    key = json.dumps({"k": 1, "seq": i}) if server.feed_wants_key() else ""
                    server.publish_feed(json.dumps({"k": 0, "seq": i}) + " " * 65536, key)
                    msg = await fast.receive(5)  # the reading page gets every frame
                    assert msg.type == aiohttp.WSMsgType.TEXT
                    received += len(msg.data)
                    if server.stats()["feed"]["closed_slow"]:
                        break
                st = server.stats()["feed"]
                assert st["closed_slow"] == 1 and i < 399, st
                assert st["frames_skipped"] >= 5
                # What went to the silent page: the kernel's socket buffers plus at most
                # the limit, not the 26 MB published.
                assert st["bytes_sent"] - received < 16 * 2**20
                assert st["pages"] == 1
                await fast.close()
        finally:
            silent.close()
            server.stop()

    run(test)


def test_more_pages_than_the_limit_are_refused_1013() -> None:
    async def test() -> None:
        cfg = config(map_feed_max_pages=1)
        async with Realm(cfg) as realm, aiohttp.ClientSession() as http:
            url = realm.url.replace("http", "ws") + "/map/feed"
            first = await http.ws_connect(url)
            second = await http.ws_connect(url)
            msg = await second.receive(5)
            assert msg.type == aiohttp.WSMsgType.CLOSE
            assert second.close_code == 1013 and "too many map pages" in msg.extra
            msg = await first.receive(5)  # the first one is served
            assert msg.type == aiohttp.WSMsgType.TEXT and json.loads(msg.data)["k"] == 1
            await first.close()

    run(test)


def test_stats_service_serves_the_map_of_a_nats_deployment() -> None:
    """``dclcomms stats`` (StatsService) builds the same frames from the pub/sub alone."""
    import numpy as np

    from dclcomms.nats.processes import StatsService
    from dclcomms.pubsub import HeartbeatBatch, InProcessPubSub, IslandData, IslandStatus

    a, b = "0x" + "a" * 40, "0x" + "b" * 40

    async def test() -> None:
        bus = InProcessPubSub()
        svc = await StatsService(config(), bus).start()
        try:
            async with aiohttp.ClientSession() as http:
                assert (await http.get(svc.url + "/map")).status == 200
                page = await http.ws_connect(svc.url.replace("http", "ws") + "/map/feed")
                await eventually(lambda: svc.http.server.stats()["feed"]["pages"] == 1)
                pos = np.asarray([(0, 0, 0), (30, 0, 0)], np.float32)
                bus.publish_heartbeats(HeartbeatBatch([a, b], pos, [UNSET] * 2))
                island = IslandData("I7", (a, b), 100, (15.0, 0.0, 0.0), 15.0)
                bus.publish("engine.islands", IslandStatus((island,)))
                state = await _frames(page, lambda s: len(s["peers"]) == 2)
                assert set(state["islands"]) == {"I7"}
                metrics = await (await http.get(svc.url + "/metrics")).text()
                assert "dcl_ws_feed_pages 1" in metrics
                await page.close()
        finally:
            await svc.stop()

    run(test)
