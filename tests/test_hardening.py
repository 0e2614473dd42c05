"""Limits that keep a realm serving under abuse, as real processes on 127.0.0.1.

* HTTP bodies: a request declaring a body over ``http_max_body_bytes`` is answered 413 from
  its headers; 30 concurrent 30 MB POSTs leave the realm's peak RSS under +50 MB.
* File descriptors: a realm limited to 256 descriptors (``RLIMIT_NOFILE`` 256/256) under a
  flood of idle WebSocket upgrades keeps answering ``/status`` and welcoming a valid client,
  without spinning on ``accept``.

The realm runs as ``python -m dclcomms realm`` so its RSS and descriptor limit are its own.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import aiohttp

from tests.helpers.common import stop_process
from tests.helpers.realm_client import ArchipelagoClient

MB = 1 << 20


def _status_kb(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def realm_process(
    *args: str, nofile: int | None = None
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    def limit() -> None:
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    p = subprocess.Popen(
        [sys.executable, "-m", "dclcomms", "realm", "--host", "127.0.0.1", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=dict(os.environ, LOG_LEVEL="WARNING"),
        preexec_fn=limit,
    )
    try:
        assert p.stdout is not None
        line = p.stdout.readline()
        assert line.startswith("dclcomms realm listening on "), line
        yield p, line.split()[-1]
    finally:
        stop_process(p)


async def _post_big(port: int, size: int) -> tuple[int, bytes]:
    """POST ``size`` bytes as curl does: ``Expect: 100-continue``, the body after 1 s without
    an answer (websocketpp sends no 100), and no more of it once a final answer arrived.
    Returns (status, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        (
            f"POST /status HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nExpect: 100-continue\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Length: {size}\r\n\r\n"
        ).encode()
    )
    answer = asyncio.ensure_future(reader.read(65536))
    await asyncio.wait([answer], timeout=1.0)
    chunk = b"x" * MB
    try:
        for _ in range(size // MB):
            if answer.done():
                break
            writer.write(chunk)
            await writer.drain()
    except ConnectionError:
        pass
    try:
        raw = await asyncio.wait_for(answer, 30)
    except ConnectionError:
        raw = b""
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/1.1 ") else 0
    return status, body


def test_oversized_http_bodies_are_refused_from_their_headers() -> None:
    with realm_process() as (p, url):
        port = int(url.rsplit(":", 1)[1])

        async def body() -> None:
            async with aiohttp.ClientSession() as s, s.get(url + "/status") as r:
                assert r.status == 200
            base = _status_kb(p.pid, "VmHWM")
            results = await asyncio.gather(*(_post_big(port, 30 * MB) for _ in range(30)))
            peak = _status_kb(p.pid, "VmHWM")
            assert [st for st, _ in results] == [413] * 30, results[:3]
            assert json.loads(results[0][1]) == {"error": "Request Entity Too Large"}
            assert (peak - base) * 1024 < 50 * MB, (base, peak)
            # a body within the limit still reaches the router (GET-only route: 405)
            async with aiohttp.ClientSession() as s:
                async with s.post(url + "/status", data=b"x" * 1000) as r:
                    assert r.status == 405, await r.text()
                async with s.get(url + "/metrics") as r:
                    text = await r.text()
            assert "dcl_ws_server_http_too_large_total 30" in text, text

        asyncio.run(asyncio.wait_for(body(), 120))


def _flood(ip: str, port: int, n: int) -> list[socket.socket]:
    """n idle WebSocket upgrades to the connector from source address ip (never authenticated)."""
    req = (
        f"GET /archipelago/ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: archipelago\r\n\r\n"
    ).encode()
    socks = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((ip, 0))
        s.settimeout(5)
        try:
            s.connect(("127.0.0.1", port))
            s.sendall(req)
        except OSError:
            s.close()
            continue
        socks.append(s)
    return socks


def _answers(socks: list[socket.socket]) -> dict[int, int]:
    """Status line code of each socket's first answer (0: none, the socket is held open)."""
    out: dict[int, int] = {}
    for s in socks:
        s.settimeout(0.05)
        try:
            head = s.recv(64)
            code = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/1.1 ") else -1
        except (TimeoutError, BlockingIOError):
            code = 0
        except OSError:
            code = -1
        out[code] = out.get(code, 0) + 1
    return out


async def _status_ms(url: str, n: int = 5) -> list[float]:
    times = []
    async with aiohttp.ClientSession() as s:
        for _ in range(n):
            t0 = time.perf_counter()
            async with s.get(url + "/status") as r:
                assert r.status == 200, await r.text()
                await r.read()
            times.append((time.perf_counter() - t0) * 1000)
    return times


def test_descriptor_flood_under_ulimit_256_keeps_status_and_valid_clients() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2048:  # the flood's own sockets
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    # eviction of old unauthenticated connections off (a minute): this test covers the
    # refusals, the reserve and the per-address cap; the next one covers eviction
    with realm_process("--unauthenticated-evict-min-age-ms", "60000", nofile=256) as (p, url):
        port = int(url.rsplit(":", 1)[1])
        # one attacker address: 600 idle upgrades (before: every descriptor taken, accept spinning)
        held = _flood("127.0.0.2", port, 600)
        try:
            time.sleep(0.5)
            answers = _answers(held)
            # at most max_unauthenticated_per_ip (auto: 64) upgraded, every other one refused 503
            assert answers.get(101, 0) <= 64 and answers.get(503, 0) >= len(held) - 64, answers
            cpu0, t0 = _cpu_s(p.pid), time.monotonic()
            time.sleep(1.0)
            cpu = (_cpu_s(p.pid) - cpu0) / (time.monotonic() - t0)
            assert cpu < 0.5, f"realm at {cpu:.0%} CPU while flooded: accept loop spinning?"

            async def while_flooded() -> None:
                times = await _status_ms(url)
                assert statistics.median(times) < 100, times
                c = ArchipelagoClient(611)
                await c.connect(url.replace("http://", "ws://"))
                try:
                    assert await c.handshake() == c.address  # welcome
                finally:
                    await c.close()
                async with aiohttp.ClientSession() as s, s.get(url + "/metrics") as r:
                    text = await r.text()
                refused = [
                    ln
                    for ln in text.splitlines()
                    if ln.startswith("dcl_ws_server_refused_per_ip_total ")
                ]
                assert refused and int(refused[0].split()[1]) >= 500, refused
                assert "dcl_ws_server_fd_limit 256" in text

            asyncio.run(asyncio.wait_for(while_flooded(), 60))

            # many attacker addresses: past max_connections (256 - 64) upgrades are refused
            # 503 (reserve connections serve /health/*, /status, /metrics only); no spinning
            more = []
            for i in range(3, 13):
                more += _flood(f"127.0.0.{i}", port, 32)
            try:
                time.sleep(0.5)
                answers = _answers(more)
                assert answers.get(503, 0) >= len(more) - (256 - 64), answers
                cpu0, t0 = _cpu_s(p.pid), time.monotonic()
                time.sleep(1.0)
                cpu = (_cpu_s(p.pid) - cpu0) / (time.monotonic() - t0)
                assert cpu < 0.5, f"realm at {cpu:.0%} CPU at its connection limit"

                async def at_limit() -> None:
                    times = await _status_ms(url)
                    assert statistics.median(times) < 100, times
                    async with aiohttp.ClientSession() as s, s.get(url + "/metrics") as r:
                        text = await r.text()
                    gauges = dict(
                        ln.split() for ln in text.splitlines() if ln.startswith("dcl_ws_server_")
                    )
                    assert int(gauges["dcl_ws_server_admitted_reserve_total"]) > 0, gauges
                    assert int(gauges["dcl_ws_server_max_connections"]) == 256 - 64
                    assert int(gauges["dcl_ws_server_connections"]) <= 256 - 64 + 32, gauges

                asyncio.run(asyncio.wait_for(at_limit(), 60))
            finally:
                for s in more:
                    s.close()
        finally:
            for s in held:
                s.close()
        assert p.poll() is None, "the realm died under the flood"


def test_many_address_flood_cannot_keep_valid_clients_out() -> None:
    """Idle upgrades from many 127.x addresses (each under the per-address cap) fill every
    slot of a realm limited to 256 descriptors. Before: a valid client got 503 until the
    flood's sockets timed out (15 s). Now a newcomer at the cap evicts the oldest connection
    that has not completed a handshake once it is older than
    ``unauthenticated_evict_min_age_ms`` (2 s): the client gets ``welcome`` while the flood
    holds, /status answers, and the evicted sockets are closed (counted)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2048:  # the flood's own sockets
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    with realm_process(nofile=256) as (p, url):
        port = int(url.rsplit(":", 1)[1])
        flood: list[socket.socket] = []
        try:
            t0 = time.monotonic()
            for i in range(2, 12):  # 10 addresses x 40: under the per-address cap of 64
                flood += _flood(f"127.0.0.{i}", port, 40)
            # every slot (256 - 64 = 192) taken by the flood
            time.sleep(max(0.0, 2.3 - (time.monotonic() - t0)))  # past the 2 s minimum age
            answers = _answers(flood)
            assert answers.get(101, 0) >= 192 - 8, answers  # a few may be evicted already

            async def while_flooded() -> int:
                times = await _status_ms(url)
                assert statistics.median(times) < 100, times
                clients = [ArchipelagoClient(seed) for seed in (613, 614, 615)]
                try:
                    for c in clients:  # each stays: the next one needs a slot of its own
                        await c.connect(url.replace("http://", "ws://"))
                        assert await c.handshake() == c.address  # welcome
                    async with aiohttp.ClientSession() as s, s.get(url + "/metrics") as r:
                        text = await r.text()
                finally:
                    for c in clients:
                        await c.close()
                gauges = dict(
                    ln.split() for ln in text.splitlines() if ln.startswith("dcl_ws_server_")
                )
                evicted = int(gauges["dcl_ws_server_evicted_unauthenticated_total"])
                assert evicted >= 3, gauges
                assert int(gauges["dcl_ws_server_max_connections"]) == 256 - 64
                assert int(gauges["dcl_ws_server_connections"]) <= 256 - 64 + 32, gauges
                return evicted

            evicted = asyncio.run(asyncio.wait_for(while_flooded(), 60))
            # the evicted flood sockets were closed by the realm (EOF after their 101)
            closed = 0
            time.sleep(0.2)
            for s in flood:
                s.setblocking(False)
                try:
                    data = s.recv(4096)
                    while data:
                        data = s.recv(4096)
                    closed += 1
                except (TimeoutError, BlockingIOError):
                    pass
                except OSError:
                    closed += 1
            assert closed >= evicted, (closed, evicted)
            cpu0, t1 = _cpu_s(p.pid), time.monotonic()
            time.sleep(1.0)
            cpu = (_cpu_s(p.pid) - cpu0) / (time.monotonic() - t1)
            assert cpu < 0.5, f"realm at {cpu:.0%} CPU while flooded"
        finally:
            for s in flood:
                s.close()
        assert p.poll() is None, "the realm died under the flood"


def test_positions_outside_the_world_are_rejected_not_clustered() -> None:
    """The issue's +-3.4e38: finite, so it passed the NaN check and reached the stats as a
    38-digit parcel. Now dropped and counted like NaN; the session stays and clusters once
    it sends a position in the world."""
    with realm_process("--flush-interval-s", "0.1", "--world-bound-m", "3000") as (_p, url):

        async def body() -> None:
            c = ArchipelagoClient(612)
            await c.connect(url.replace("http://", "ws://"))
            try:
                await c.handshake()
                for x, z in ((3.4e38, 0.0), (0.0, -3.4e38), (3000.5, 0.0)):
                    await c.heartbeat(x, 0.0, z)
                try:
                    got = await c.island(timeout=1.0)
                    raise AssertionError(f"clustered outside the world: {got}")
                except TimeoutError:
                    pass
                async with aiohttp.ClientSession() as s:
                    async with s.get(url + "/metrics") as r:
                        text = await r.text()
                    async with s.get(url + "/peers") as r:
                        peers = (await r.json())["peers"]
                assert "dcl_ws_connector_heartbeats_dropped_out_of_bounds_total 3" in text, text
                assert peers == [], peers
                await c.heartbeat(2999.0, 0.0, -2999.0)  # in the world
                changed = await c.island(timeout=10.0)
                assert c.address in changed["peers"]
            finally:
                await c.close()

        asyncio.run(asyncio.wait_for(body(), 60))
