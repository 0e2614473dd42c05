"""``dclcomms connector|core|stats --nats`` and ``dclcomms realm --nats`` as real processes."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp

from tests.helpers.common import free_port
from tests.helpers.nats_fixtures import (
    NatsServer,
    first_line,
    nats_server,  # noqa: F401 - fixture
    spawn,
    stop_all,
)
from tests.helpers.realm_client import ArchipelagoClient, RoomClient, assigned

LK = [
    "--livekit-host",
    "livekit.example.org",
    "--livekit-api-key",
    "devkey",
    "--livekit-api-secret",
    "devsecret-0123456789-0123456789-abcdef",
]
BASE = ["--host", "127.0.0.1", "--port", "0", "--flush-interval-s", "0.1"]


async def get_json(url: str) -> Any:
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        assert r.status == 200, await r.text()
        return await r.json()


async def island_and_stats(connector_url: str, stats_url: str, seed: int) -> None:
    c = ArchipelagoClient(seed)
    await c.connect(connector_url.replace("http://", "ws://"))
    await c.handshake()
    try:
        island = await assigned(c, 1.0, 1.0, timeout=10)  # the core may still be subscribing
        deadline = time.monotonic() + 10
        assert island["connStr"].startswith("livekit:wss://livekit.example.org")
        while True:
            peers = await get_json(stats_url + "/peers")
            if [p["address"] for p in peers["peers"]] == [c.address]:
                break
            assert time.monotonic() < deadline, peers
            await asyncio.sleep(0.05)
    finally:
        await c.close()


async def core_http(core_url: str, stats_url: str) -> None:
    """The core process's own HTTP: readiness, status and metrics."""
    deadline = time.monotonic() + 10
    async with aiohttp.ClientSession() as s:
        while True:
            async with s.get(core_url + "/health/ready") as r:
                if r.status == 200:
                    assert await r.json() == {"ready": True}
                    break
                assert r.status == 503 and (await r.json())["ready"] is False
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        while True:  # the client has left: its disconnect reaches the core over NATS
            status = await get_json(core_url + "/status")
            if status["peers"] == 0:
                break
            assert time.monotonic() < deadline, status
            await asyncio.sleep(0.05)
        assert status["busConnected"] is True and status["subjects"] == "native"
        assert status["healthy"] is True and status["islands"] == 0
        assert status["lastTickMs"] > 0
        async with s.get(core_url + "/metrics") as r:
            assert r.status == 200
            text = await r.text()
        assert "dcl_archipelago_heartbeats_total" in text
        assert 'dcl_nats_connected{client="dclcomms-core"} 1' in text
        for url in (core_url, stats_url):
            async with s.get(url + "/health/live") as r:
                assert r.status == 200 and await r.text() == "alive"
        async with s.get(core_url + "/nope") as r:
            assert r.status == 404 and "error" in await r.json()


def test_three_processes_over_nats(nats_server: NatsServer) -> None:  # noqa: F811
    nats = ["--nats", nats_server.url]
    procs = [
        spawn("core", *BASE, *LK, *nats),
        spawn("stats", *BASE, *nats),
        spawn("connector", *BASE, *LK, *nats),
    ]
    try:
        core = first_line(
            procs[0], "dclcomms core running (native subjects on nats://127.0.0.1:"
        ).split()[-1]
        stats = first_line(procs[1], "dclcomms stats running").split()[-1]
        conn = first_line(procs[2], "dclcomms connector running").split()[-1]
        asyncio.run(asyncio.wait_for(island_and_stats(conn, stats, 601), 30))
        asyncio.run(asyncio.wait_for(core_http(core, stats), 30))
    finally:
        codes = stop_all(procs)
    assert codes == [0, 0, 0]
    err = procs[0].stderr.read() if procs[0].stderr else ""
    assert '"msg":"core started"' in err, err


def test_realm_with_nats_runs_every_part_in_one_process(nats_server: NatsServer) -> None:  # noqa: F811
    p = spawn("realm", *BASE, *LK, "--nats", nats_server.url, "--subjects", "v3")
    try:
        line = first_line(p, "dclcomms realm running (v3 subjects on")
        url = line.split()[-1]
        asyncio.run(asyncio.wait_for(island_and_stats(url, url, 602), 30))
    finally:
        codes = stop_all([p])
    assert codes == [0]


async def join_island_room(url: str, seed: int) -> None:
    """A client's island connection string names the realm's bound port: the room opens."""
    port = int(url.rsplit(":", 1)[1])
    c = ArchipelagoClient(seed)
    await c.connect(url.replace("http://", "ws://"))
    await c.handshake()
    room = RoomClient(c.wallet)
    try:
        island = await assigned(c, 1.0, 1.0, timeout=10)
        conn = island["connStr"]
        assert conn.startswith(f"ws-room:ws://127.0.0.1:{port}/rooms/"), conn
        welcome = await room.join(conn)
        assert welcome["alias"] >= 1
    finally:
        await room.close()
        await c.close()


def test_realm_with_nats_on_port_0_hands_out_its_bound_port(nats_server: NatsServer) -> None:  # noqa: F811
    """``realm --nats --port 0``: ws-room connection strings name the port bound, not 80."""
    p = spawn("realm", *BASE, "--nats", nats_server.url)
    try:
        url = first_line(p, "dclcomms realm running").split()[-1]
        asyncio.run(asyncio.wait_for(join_island_room(url, 603), 30))
    finally:
        codes = stop_all([p])
    assert codes == [0]


def test_cli_errors() -> None:
    dead = f"nats://127.0.0.1:{free_port()}"
    p = spawn("core", *BASE, *LK, "--nats", dead)
    assert p.wait(timeout=30) == 1
    err = p.stderr.read() if p.stderr else ""
    assert "dclcomms core: error: cannot start:" in err and "[nats_unavailable]" in err, err
    p = spawn("core", *BASE, *LK, "--nats", dead, "--transport-node-interval-s", "0")
    assert p.wait(timeout=30) == 2
    assert "transport_node_interval_s" in (p.stderr.read() if p.stderr else "")
    p = spawn("core", *BASE, "--nats", dead)  # no LiveKit, fixed adapter or shared secret
    assert p.wait(timeout=30) == 2
    err = p.stderr.read() if p.stderr else ""
    assert "dclcomms core: error:" in err and "[bad_value]" in err, err
    p = spawn("stats", *BASE)  # --nats is required
    assert p.wait(timeout=30) == 2
    assert "--nats" in (p.stderr.read() if p.stderr else "")
    p = spawn("connector", *BASE, "--nats", dead, "--subjects", "v4")
    assert p.wait(timeout=30) == 2
