"""Acceptance: `dclcomms rooms` nodes announce themselves over a real NATS server, the core
balances islands across them, and a killed node's islands move to the live one."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from dclcomms.auth import jwt_decode
from dclcomms.config import RealmConfig
from dclcomms.nats.nodes import NodeBalancedWsRooms, NodeRegistry, NodeStatus
from dclcomms.nats.processes import CoreService
from dclcomms.nats.pubsub import NatsPubSub
from dclcomms.policy import build_transports
from dclcomms.realm import Realm
from dclcomms.rooms import main as rooms_main
from tests.helpers.common import free_port
from tests.helpers.nats_fixtures import NatsServer, nats_server  # noqa: F401 - fixture
from tests.helpers.realm_client import ArchipelagoClient, RoomClient, eventually

SECRET = "shared-ws-room-secret-0123456789"
INTERVAL = 0.2


def config() -> RealmConfig:
    return RealmConfig(
        host="127.0.0.1",
        port=0,
        flush_interval_s=0.1,
        log_format="text",
        log_level="WARNING",
        ws_room_secret=SECRET,
    )


@dataclass
class RoomsNode:
    node_id: str
    port: int
    proc: asyncio.subprocess.Process

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"


async def start_rooms(nats_url: str, node_id: str) -> RoomsNode:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "dclcomms",
        "rooms",
        "--port",
        str(port),
        "--ws-room-secret",
        SECRET,
        "--ws-room-require-token",
        "--nats",
        nats_url,
        "--public-url",
        f"ws://127.0.0.1:{port}",
        "--node-id",
        node_id,
        "--transport-node-interval-s",
        str(INTERVAL),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert f"listening on ws://127.0.0.1:{port}/rooms/" in line.decode(), line
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    return RoomsNode(node_id, port, proc)


@dataclass
class Deployment:
    url: str
    nodes: list[RoomsNode] = field(default_factory=list)
    buses: list[NatsPubSub] = field(default_factory=list)
    connector: Realm | None = None
    core: CoreService | None = None
    policy: NodeBalancedWsRooms | None = None


@contextlib.asynccontextmanager
async def deployment(url: str) -> AsyncIterator[Deployment]:
    d = Deployment(url)
    try:
        for n in ("node-a", "node-b"):
            d.nodes.append(await start_rooms(url, n))
        cfg = config()
        transports = build_transports(cfg, bound_port=80, ws_room_secret=SECRET)
        d.policy = NodeBalancedWsRooms(
            transports,
            registry=NodeRegistry(transport_node_interval_s=INTERVAL, transport_node_missed=3),
        )
        for _ in range(2):
            d.buses.append(await NatsPubSub.connect([url], reconnect_time_wait=0.1))
        d.connector = await Realm(cfg, pubsub=d.buses[0], run_core=False).start()
        d.core = await CoreService(cfg, d.buses[1], policy=d.policy).start()
        yield d
    finally:
        if d.connector is not None:
            await d.connector.stop()
        if d.core is not None:
            await d.core.stop()
        for b in d.buses:
            await b.aclose()
        for node in d.nodes:
            if node.proc.returncode is None:
                node.proc.terminate()
                await node.proc.wait()


async def client(realm: Realm, seed: int) -> ArchipelagoClient:
    c = ArchipelagoClient(seed)
    await c.connect(f"ws://127.0.0.1:{realm.port}")
    assert await c.handshake() == c.address
    return c


def run(body: Any, timeout: float = 60.0) -> None:
    asyncio.run(asyncio.wait_for(body(), timeout))


def test_announcements_arrive_and_are_parsed(nats_server: NatsServer) -> None:  # noqa: F811
    async def body() -> None:
        import nats

        nc = await nats.connect([nats_server.url])
        seen: dict[str, NodeStatus] = {}

        async def cb(msg: Any) -> None:
            s = NodeStatus.from_json(msg.data)
            assert msg.subject == f"dclcomms.transport.{s.node_id}.status"
            assert set(json.loads(msg.data)) == {
                "nodeId",
                "kind",
                "url",
                "maxIslandSize",
                "availableSeats",
                "usersCount",
                "rooms",
                "ts",
            }
            seen[s.node_id] = s

        await nc.subscribe("dclcomms.transport.*.status", cb=cb)
        async with deployment(nats_server.url) as d:
            assert d.policy is not None and d.core is not None
            await eventually(lambda: len(d.policy.registry) == 2, timeout=10)  # type: ignore[union-attr]
            await eventually(lambda: len(seen) == 2, timeout=10)
            for node in d.nodes:
                s = seen[node.node_id]
                assert (s.kind, s.url, s.max_island_size) == ("ws-room", node.url, 100)
                assert (s.available_seats, s.users_count, s.rooms) == (-1, 0, 0)
                assert d.policy.registry.get(node.node_id) is not None
            assert d.core.node_status_errors.get() == 0
            # a malformed or mislabelled announcement is refused and counted
            await nc.publish("dclcomms.transport.node-x.status", b"{not json")
            bad = NodeStatus("node-y", "ws-room", "ws://127.0.0.1:1", 10, -1, 0, 0, 1)
            await nc.publish("dclcomms.transport.node-z.status", bad.to_json())
            await nc.flush()
            await eventually(lambda: d.core.node_status_errors.get() == 2)  # type: ignore[union-attr]
            assert d.policy.registry.get("node-y") is None
            assert d.policy.registry.get("node-z") is None
        await nc.close()

    run(body)


def test_islands_balanced_and_moved_off_a_killed_node(nats_server: NatsServer) -> None:  # noqa: F811
    async def body() -> None:
        async with deployment(nats_server.url) as d:
            assert d.policy is not None and d.connector is not None
            await eventually(lambda: len(d.policy.registry) == 2, timeout=10)  # type: ignore[union-attr]
            a = await client(d.connector, 701)
            b = await client(d.connector, 702)
            await a.heartbeat(0.0, 0.0, 0.0)
            ia = await a.island()
            await b.heartbeat(900.0, 0.0, 900.0)
            ib = await b.island()
            assert ia["islandId"] != ib["islandId"]
            by_url = {n.url: n for n in d.nodes}

            def node_of(changed: dict[str, Any]) -> RoomsNode:
                conn = changed["connStr"]
                prefix = "ws-room:"
                assert conn.startswith(prefix), conn
                base = conn[len(prefix) :].split("/rooms/")[0]
                assert conn.split("/rooms/")[1].startswith(changed["islandId"] + "?access_token=")
                claims = jwt_decode(conn.split("access_token=")[1], SECRET)
                assert claims["room"] == changed["islandId"]
                return by_url[base]

            na, nb = node_of(ia), node_of(ib)
            assert {na.node_id, nb.node_id} == {"node-a", "node-b"}  # balanced
            # the strings work: each client joins its island's room on its node
            room_a = RoomClient(a.wallet)
            await room_a.join(ia["connStr"])
            await room_a.close()

            # kill a's node: its island moves to the live node, same id, new string
            na.proc.kill()
            await na.proc.wait()
            moved = await a.island(timeout=10)
            assert moved["islandId"] == ia["islandId"]
            assert moved["fromIslandId"] == ia["islandId"]
            assert node_of(moved) is nb
            assert d.policy.island_node[ia["islandId"]] == nb.node_id
            assert d.policy.registry.get(na.node_id) is None
            room_a = RoomClient(a.wallet)
            welcome = await room_a.join(moved["connStr"])
            assert welcome is not None
            await room_a.close()
            # b's island was not touched
            with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
                extra = await b.island(timeout=0.5)
                raise AssertionError(f"b got an unexpected island_changed: {extra}")
            await a.close()
            await b.close()

    run(body)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "--nats needs --public-url and --node-id"),
        (["--public-url", "ws://127.0.0.1:1"], "--nats needs --public-url and --node-id"),
        (["--public-url", "ws://127.0.0.1:1", "--node-id", "a.b"], "[bad_node_id]"),
        (["--public-url", "http://127.0.0.1:1", "--node-id", "a"], "must be ws:// or wss://"),
        (
            [
                "--public-url",
                "ws://127.0.0.1:1",
                "--node-id",
                "a",
                "--transport-node-interval-s",
                "0",
            ],
            "transport_node_interval_s (flag --transport-node-interval-s): must be >= 0.01",
        ),
    ],
)
def test_rooms_announce_flags_are_validated(
    extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as e:
        rooms_main(["--port", "0", "--nats", "nats://127.0.0.1:1", *extra])
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_rooms_without_nats_server_fails_cleanly() -> None:
    port = free_port()
    nats_url = f"nats://127.0.0.1:{free_port()}"  # nobody listens there
    announce = ["--nats", nats_url, "--node-id", "n1", "--public-url", f"ws://127.0.0.1:{port}"]
    r = subprocess.run(
        [sys.executable, "-m", "dclcomms", "rooms", "--port", str(port), *announce],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1, r
    assert "dclcomms rooms: cannot start: cannot connect to NATS" in r.stderr
    assert "Traceback" not in r.stderr
