"""``dclcomms connector|core|stats --nats`` and ``dclcomms realm --nats`` as real processes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from typing import Any

import aiohttp

from tests.conftest import free_port
from tests.nats_fixtures import (
    NatsServer,
    nats_server,  # noqa: F401 - fixture
)

from .realm_client import ArchipelagoClient

LK = [
    "--livekit-host",
    "livekit.example.org",
    "--livekit-api-key",
    "devkey",
    "--livekit-api-secret",
    "devsecret-0123456789-0123456789-abcdef",
]
BASE = ["--host", "127.0.0.1", "--port", "0", "--flush-interval", "0.1"]


def spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "dclcomms", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, LOG_FORMAT="json"),
    )


def first_line(p: subprocess.Popen[str], prefix: str) -> str:
    assert p.stdout is not None
    line = p.stdout.readline()
    assert line.startswith(prefix), (
        line,
        p.stderr.read() if p.poll() is not None and p.stderr else "",
    )
    return line


def stop_all(procs: list[subprocess.Popen[str]]) -> list[int | None]:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    codes: list[int | None] = []
    for p in procs:
        try:
            codes.append(p.wait(timeout=20))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            codes.append(None)
    return codes


async def get_json(url: str) -> Any:
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        assert r.status == 200, await r.text()
        return await r.json()


async def island_and_stats(connector_url: str, stats_url: str, seed: int) -> None:
    c = ArchipelagoClient(seed)
    await c.connect(connector_url.replace("http://", "ws://"))
    await c.handshake()
    try:
        deadline = time.monotonic() + 10
        while True:  # the core may still be subscribing: heartbeat until assigned
            await c.heartbeat(1.0, 0.0, 1.0)
            try:
                island = await c.island(timeout=0.5)
                break
            except TimeoutError:
                assert time.monotonic() < deadline
        assert island["connStr"].startswith("livekit:wss://livekit.example.org")
        while True:
            peers = await get_json(stats_url + "/peers")
            if [p["address"] for p in peers["peers"]] == [c.address]:
                break
            assert time.monotonic() < deadline, peers
            await asyncio.sleep(0.05)
    finally:
        await c.close()


def test_three_processes_over_nats(nats_server: NatsServer) -> None:  # noqa: F811
    nats = ["--nats", nats_server.url]
    procs = [
        spawn("core", *BASE, *LK, *nats),
        spawn("stats", *BASE, *nats),
        spawn("connector", *BASE, *LK, *nats),
    ]
    try:
        first_line(procs[0], "dclcomms core running (workers subjects on nats://127.0.0.1:")
        stats = first_line(procs[1], "dclcomms stats running").split()[-1]
        conn = first_line(procs[2], "dclcomms connector running").split()[-1]
        asyncio.run(asyncio.wait_for(island_and_stats(conn, stats, 601), 30))
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


def test_cli_errors() -> None:
    dead = f"nats://127.0.0.1:{free_port()}"
    p = spawn("core", *BASE, *LK, "--nats", dead)
    assert p.wait(timeout=30) == 1
    err = p.stderr.read() if p.stderr else ""
    assert "dclcomms core: error: cannot start:" in err and "[nats_unavailable]" in err, err
    p = spawn("core", *BASE, "--nats", dead)  # no LiveKit, fixed adapter or shared secret
    assert p.wait(timeout=30) == 2
    err = p.stderr.read() if p.stderr else ""
    assert "dclcomms core: error:" in err and "[bad_value]" in err, err
    p = spawn("stats", *BASE)  # --nats is required
    assert p.wait(timeout=30) == 2
    assert "--nats" in (p.stderr.read() if p.stderr else "")
    p = spawn("connector", *BASE, "--nats", dead, "--subjects", "v4")
    assert p.wait(timeout=30) == 2
