"""``dclcomms rooms``: HTTP status/metrics and clean shutdown of the real process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import aiohttp
import pytest

from dclcomms.rooms import serve
from dclcomms.ws import ServerConfig
from tests.helpers.common import cli_process, free_port, read_answer
from tests.helpers.ws_wire import Identity, recv_close, room_handshake, run_async

SEED = 424242


@run_async
async def test_status_metrics_and_health() -> None:
    rng = random.Random(SEED)
    print(f"seed={SEED}")
    port = free_port()
    ready = asyncio.Event()
    task = asyncio.create_task(serve(ServerConfig(port=port, commit_hash="abc123"), ready=ready))
    await ready.wait()
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as s:
            keep = [await room_handshake(s, port, "plaza", Identity.random(rng)) for _ in range(2)]
            keep.append(await room_handshake(s, port, "bar", Identity.random(rng)))
            for path in ("/status", "/rooms/status"):
                async with s.get(base + path) as r:
                    assert r.status == 200
                    assert r.headers["Access-Control-Allow-Origin"] == "*"
                    doc = json.loads(await r.text())
                assert set(doc) == {
                    "version",
                    "currentTime",
                    "commitHash",
                    "users",
                    "rooms",
                    "details",
                }
                assert doc["commitHash"] == "abc123"
                assert abs(doc["currentTime"] - time.time() * 1000) < 10_000
                assert (doc["users"], doc["rooms"]) == (3, 2)
                assert sorted((d["roomName"], d["count"]) for d in doc["details"]) == [
                    ("bar", 1),
                    ("plaza", 2),
                ]
            async with s.get(base + "/metrics") as r:
                assert r.status == 200
                text = await r.text()
            assert "dcl_ws_rooms_users 3\n" in text
            assert "dcl_ws_rooms_rooms 2\n" in text
            assert "dcl_ws_rooms_welcomed_total 3\n" in text
            assert "# TYPE dcl_ws_rooms_unreliable_dropped_total counter" in text
            assert "plaza" not in text and "0x" not in text  # no per-room / per-peer labels
            for line in text.splitlines():
                assert line.startswith("#") or line.startswith("dcl_"), line
            async with s.get(base + "/health/live") as r:
                assert (r.status, await r.text()) == (200, "alive")
            async with s.get(base + "/nothing") as r:
                assert r.status == 404
                assert json.loads(await r.text()) == {"error": "Not Found"}
            for ws, _ in keep:
                await ws.close()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@run_async
async def test_cli_process_stops_cleanly_on_sigterm() -> None:
    rng = random.Random(SEED + 1)
    print(f"seed={SEED + 1}")
    port = free_port()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "dclcomms",
        "rooms",
        "--port",
        str(port),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert f"listening on ws://127.0.0.1:{port}/rooms/" in line.decode()
        async with aiohttp.ClientSession() as s:
            ws, _ = await room_handshake(s, port, "r", Identity.random(rng))
            proc.send_signal(signal.SIGTERM)
            assert await recv_close(ws) == (1001, "server shutting down")
        assert await asyncio.wait_for(proc.wait(), 30) == 0
        rest = (await proc.stdout.read()).decode()
        assert "stopped" in rest
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_sender_bucket_flags_are_validated(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from dclcomms.config import settings
    from dclcomms.rooms import main as rooms_main

    monkeypatch.setattr(settings, "_warned", set())  # each old name warns once per process

    for flag in ("--rooms-sender-max-msgs-per-s", "--rooms-sender-max-bytes-per-s"):
        with pytest.raises(SystemExit) as e:
            rooms_main(["--port", "0", flag, "-1"])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert "must be >= 0" in err and flag in err and "[bad_value]" in err
    # the flags' old names are still validated the same way (with a deprecation warning)
    for old, new in (
        ("--sender-max-msgs-per-s", "--rooms-sender-max-msgs-per-s"),
        ("--sender-max-bytes-per-s", "--rooms-sender-max-bytes-per-s"),
    ):
        with pytest.raises(SystemExit) as e, pytest.warns(FutureWarning, match=new):
            rooms_main(["--port", "0", old, "-1"])
        assert e.value.code == 2
        assert "must be >= 0" in capsys.readouterr().err


@contextlib.contextmanager
def rooms_process(*args: str) -> Iterator[int]:
    """``python -m dclcomms rooms`` on 127.0.0.1 and a port of its own choosing, with these
    flags; yields the port it listens on; stopped on the way out."""
    with cli_process("rooms", "--port", "0", *args) as line:
        m = re.search(r"listening on ws://127\.0\.0\.1:(\d+)/rooms/", line)
        assert m, line
        yield int(m.group(1))


def http(port: int, raw: bytes) -> tuple[int, dict[str, str], bytes, socket.socket]:
    """One request on a new connection: status, lowercase headers, body, the socket."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(raw)
    return (*read_answer(s), s)


def test_the_node_takes_the_connection_and_http_limits() -> None:
    """A rooms node is held to the same admission and plain-HTTP limits as a realm, set by
    flag: its connection cap (in /metrics), keep-alive off (each answer closes), the body
    cap (413 from the headers); a bad value stops it with the setting named (exit 2)."""
    with rooms_process(
        "--max-connections", "77", "--http-keep-alive-ms", "0", "--http-max-body-bytes", "16"
    ) as port:
        status, headers, body, s = http(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        with s:
            assert status == 200 and "dcl_ws_server_max_connections 77\n" in body.decode()
            assert headers["connection"] == "close"
            assert s.recv(1) == b""  # closed by the node after its answer
        over = b"POST /status HTTP/1.1\r\nHost: x\r\nContent-Length: 17\r\n\r\n"
        status, _, body, s = http(port, over)
        with s:
            assert (status, body) == (413, b'{"error":"Request Entity Too Large"}')
    for flag, value, error in (
        (
            "--http-keep-alive-ms",
            "-1",
            "http_keep_alive_ms (flag --http-keep-alive-ms): must be >= 0, got -1 [bad_value]",
        ),
        (
            "--max-connections",
            "x",
            "max_connections (flag --max-connections): expected int, got 'x' [bad_value]",
        ),
    ):
        out = subprocess.run(
            [sys.executable, "-m", "dclcomms", "rooms", "--port", "0", flag, value],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 2, (flag, out.stderr)
        assert out.stderr.rstrip().endswith(f"dclcomms rooms: error: {error}"), out.stderr
