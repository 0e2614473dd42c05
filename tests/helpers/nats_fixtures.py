"""Real ``nats-server`` processes for tests: one node, or a 3-node cluster.

Every server listens on free loopback ports (client, cluster, HTTP monitoring),
is waited for until it answers (``/healthz``; for a cluster, until every node
has routes to all the others) and is stopped at teardown with SIGTERM, then
SIGKILL after a grace period. :data:`STARTED` records every process this module
ever spawned so a test can assert that none outlives its fixture.

A NATS server may already run on 127.0.0.1:4222: it is never used.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.common import free_port, stop_process

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"
STARTED: list[subprocess.Popen[bytes]] = []


class NatsServer:
    """One ``nats-server`` process (optionally a cluster member)."""

    def __init__(
        self,
        name: str,
        *,
        port: int | None = None,
        cluster_port: int | None = None,
        routes: list[int] | None = None,
        log_dir: Path | None = None,
        config: Path | None = None,
    ) -> None:
        self.name = name
        self.config = config  # a nats-server configuration file (e.g. max_payload)
        self.port = port or free_port()
        self.http_port = free_port()
        self.cluster_port = cluster_port
        self.routes = routes or []
        self.log_path = (log_dir / f"{name}.log") if log_dir is not None else None
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> NatsServer:
        args = [
            NATS_SERVER,
            "-a",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-m",
            str(self.http_port),
            "-n",
            self.name,
        ]
        if self.config is not None:
            args[1:1] = ["-c", str(self.config)]  # the command line overrides the file
        if self.cluster_port is not None:
            args += ["--cluster_name", "dclcomms-test"]
            args += ["--cluster", f"nats://127.0.0.1:{self.cluster_port}"]
            if self.routes:
                args += ["--routes", ",".join(f"nats://127.0.0.1:{p}" for p in self.routes)]
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        finally:
            if self.log_path:
                out.close()  # type: ignore[union-attr]
        STARTED.append(self.proc)
        return self

    def _get(self, path: str) -> dict[str, object]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=1.0) as r:
            data: dict[str, object] = json.loads(r.read())
            return data

    def wait_ready(self, timeout: float = 30.0, *, routes: int = 0) -> None:
        """Until ``/healthz`` answers ok and the node has ``routes`` routes."""
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"nats-server {self.name} exited with {self.proc.returncode}")
            try:
                if self._get("/healthz").get("status") == "ok":
                    n = self._get("/routez").get("num_routes", 0) if routes else 0
                    if isinstance(n, int) and n >= routes:
                        return
                    last = f"{n} routes"
            except OSError as e:
                last = e
            time.sleep(0.05)
        raise TimeoutError(f"nats-server {self.name} not ready: {last}")

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds. Idempotent."""
        p = self.proc
        if p is None or p.poll() is not None:
            return
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(grace)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(grace)

    def kill(self) -> None:
        """SIGKILL now (a crash)."""
        p = self.proc
        if p is not None and p.poll() is None:
            p.kill()
            p.wait(5.0)

    def restart(self) -> None:
        """Start again on the same ports (after :meth:`stop` or :meth:`kill`)."""
        self.stop()
        self.start()
        self.wait_ready(routes=len(self.routes) if self.cluster_port is not None else 0)


class NatsCluster:
    """``n`` fully meshed nodes on free ports."""

    def __init__(self, n: int = 3, log_dir: Path | None = None) -> None:
        cports = [free_port() for _ in range(n)]
        self.nodes = [
            NatsServer(
                f"n{i}",
                cluster_port=cports[i],
                routes=[p for j, p in enumerate(cports) if j != i],
                log_dir=log_dir,
            )
            for i in range(n)
        ]

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    def start(self) -> NatsCluster:
        for n in self.nodes:
            n.start()
        for n in self.nodes:
            n.wait_ready(routes=len(self.nodes) - 1)
        return self

    def stop(self) -> None:
        for n in self.nodes:
            with contextlib.suppress(Exception):
                n.stop()


def leaked() -> list[int]:
    """Pids of spawned nats-server processes still running."""
    return [p.pid for p in STARTED if p.poll() is None]


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    s = NatsServer("single", log_dir=tmp_path).start()
    try:
        s.wait_ready()
        yield s
    finally:
        s.stop()
    assert not s.running()


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    c = NatsCluster(3, log_dir=tmp_path)
    try:
        c.start()
        yield c
    finally:
        c.stop()
    assert not any(n.running() for n in c.nodes)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


__all__ = [
    "NatsCluster",
    "NatsServer",
    "leaked",
    "nats_cluster",
    "nats_server",
    "pid_alive",
]


# --- dclcomms processes ------------------------------------------------------


#: ``dclcomms`` processes started by :func:`spawn` in the running test; the conftest
#: stops them and closes their pipes after it (:func:`reap_spawned`).
SPAWNED: list[subprocess.Popen[str]] = []


def spawn(*args: str) -> subprocess.Popen[str]:
    p = subprocess.Popen(
        [sys.executable, "-m", "dclcomms", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, LOG_FORMAT="json"),
    )
    SPAWNED.append(p)
    return p


def reap_spawned() -> None:
    """Stops what :func:`spawn` started (if still running) and closes the pipes."""
    while SPAWNED:
        stop_process(SPAWNED.pop(), signal.SIGKILL)


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
