"""Small shared test helpers: conformance data, free ports, serving an aiohttp app, a test
realm's settings, running a coroutine test with a deadline, stopping a process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from aiohttp import web

from dclcomms.config import RealmConfig

DATA = Path(__file__).parent.parent / "data"
CONFORMANCE = DATA / "conformance"


def load_conformance(name: str) -> Any:
    """One of the reference-produced vector files (copied from shared/conformance)."""
    with open(CONFORMANCE / name, encoding="utf-8") as f:
        return json.load(f)


BENCH = Path(__file__).resolve().parents[2] / "bench"


def bench_json(script: str, *args: str, timeout: float = 300) -> Any:
    """The JSON that bench/``script`` prints when run with ``args``; a non-zero exit fails
    with the end of its stderr."""
    out = subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (never a fixed port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def start_app(app: web.Application) -> tuple[web.AppRunner, int]:
    """Serves an aiohttp app on a free 127.0.0.1 port; the caller awaits runner.cleanup()."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, int(port)


def realm_config(**kw: Any) -> RealmConfig:
    """A test realm's settings: 127.0.0.1, a free port, a tick every 0.1 s, quiet text logs;
    ``kw`` adds or overrides settings."""
    base: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "flush_interval_s": 0.1,
        "log_format": "text",
        "log_level": "WARNING",
    }
    return RealmConfig(**{**base, **kw})


def run(test: Callable[[], Awaitable[None]], timeout: float = 60.0) -> None:
    """Runs the coroutine function ``test`` in a fresh event loop, failing after ``timeout`` s;
    the realm clients (tests.helpers.realm_client) it left open are closed before the loop."""
    from tests.helpers.realm_client import close_leftovers

    async def main() -> None:
        try:
            await asyncio.wait_for(test(), timeout)
        finally:
            await close_leftovers()

    asyncio.run(main())


def stop_process(p: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
    """Stops a process the test started: ``sig``, SIGKILL after ``timeout`` s, then closes
    its pipes. Returns its exit code."""
    if p.poll() is None:
        p.send_signal(sig)
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
    code = p.wait()
    for f in (p.stdin, p.stdout, p.stderr):
        if f is not None:
            f.close()
    return code


@contextmanager
def cli_process(command: str, *args: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """``python -m dclcomms <command>`` with these flags and extra environment (LOG_LEVEL
    WARNING); yields the first line it prints (where it listens); stopped on the way out."""
    p = subprocess.Popen(
        [sys.executable, "-m", "dclcomms", command, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=dict(os.environ, LOG_LEVEL="WARNING", **(env or {})),
    )
    try:
        assert p.stdout is not None
        yield p.stdout.readline()
    finally:
        stop_process(p)


@contextmanager
def realm_cli(*args: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """``python -m dclcomms realm`` on 127.0.0.1 and a free port, with these flags and extra
    environment (LOG_LEVEL WARNING); yields the URL it listens on; stopped on the way out."""
    with cli_process("realm", "--host", "127.0.0.1", "--port", "0", *args, env=env) as line:
        assert line.startswith("dclcomms realm listening on "), line
        yield line.split()[-1]


def read_answer(s: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One whole HTTP answer on a raw socket (status, lowercase headers, body by
    Content-Length)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        assert chunk, f"closed before an answer: {data!r}"
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = s.recv(65536)
        assert chunk
        rest += chunk
    assert len(rest) == length, "bytes past the answer"
    return status, headers, rest
