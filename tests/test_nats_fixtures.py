"""The nats-server fixtures: real processes, ready when yielded, none leaked."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import nats

from tests.helpers.nats_fixtures import (  # noqa: F401 - fixtures
    NatsCluster,
    NatsServer,
    leaked,
    nats_cluster,
    nats_server,
    pid_alive,
)


async def _roundtrip(pub_url: str, sub_url: str, subject: str) -> bytes:
    sub_nc = await nats.connect(sub_url)
    pub_nc = await nats.connect(pub_url)
    try:
        sub = await sub_nc.subscribe(subject)
        await sub_nc.flush()
        # the interest reaches the publisher's node over the routes some time later: publish
        # until a message arrives
        deadline = time.monotonic() + 30
        while True:
            await pub_nc.publish(subject, b"hello")
            await pub_nc.flush()
            try:
                msg = await sub.next_msg(timeout=0.2)
            except nats.errors.TimeoutError:
                assert time.monotonic() < deadline, "no message over the routes in 30 s"
                continue
            return bytes(msg.data)
    finally:
        await pub_nc.close()
        await sub_nc.close()


def test_single_server_carries_messages(nats_server: NatsServer) -> None:  # noqa: F811
    assert nats_server.port != 4222 and nats_server.running()
    assert asyncio.run(_roundtrip(nats_server.url, nats_server.url, "t.a")) == b"hello"


def test_cluster_routes_between_nodes(nats_cluster: NatsCluster) -> None:  # noqa: F811
    urls = nats_cluster.urls
    assert len(set(urls)) == 3
    assert asyncio.run(_roundtrip(urls[0], urls[2], "t.b")) == b"hello"


def test_stop_kill_restart_and_no_leaks(tmp_path: Path) -> None:
    s = NatsServer("leak", log_dir=tmp_path).start()
    s.wait_ready()
    pid = s.proc.pid if s.proc else 0
    s.kill()
    assert not pid_alive(pid) or not s.running()
    s.restart()
    assert s.running()
    assert asyncio.run(_roundtrip(s.url, s.url, "t.c")) == b"hello"
    pid2 = s.proc.pid if s.proc else 0
    s.stop()
    s.stop()  # idempotent
    assert not s.running() and pid2 != pid
    assert (tmp_path / "leak.log").read_text()  # the server logged to the test's directory
    assert leaked() == []
