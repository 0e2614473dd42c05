"""The connector relay of the core's island messages over NATS: a ws.Server with a
Connector on the C++ client, a "core" bus that publishes hand-made ticks, the exact frames
each session must receive, and the two-tick sequence the relay tests share."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp

from dclcomms import codec, ws
from dclcomms.metrics import Registry
from dclcomms.nats.pubsub import NatsPubSub
from dclcomms.pubsub import IslandChanged, IslandMembers, IslandPeer, IslandStatus
from dclcomms.realm.connector import Connector
from tests.helpers.realm_client import ArchipelagoClient

V3 = "decentraland.kernel.comms.v3."
STRANGER = "0x" + "e" * 40  # never connected here
MARK = "0x" + "f" * 40  # the marker peer


@dataclass
class Setup:
    server: ws.Server
    connector: Connector
    registry: Registry
    conn_bus: NatsPubSub
    core_bus: NatsPubSub
    url: str


@contextlib.asynccontextmanager
async def relay(nats_url: str, subjects: str, **server_config: Any) -> AsyncIterator[Setup]:
    """A connector (``ws.ServerConfig(port=0, rooms=False, **server_config)``) and a core
    bus on ``subjects``; everything is closed on the way out."""
    conn_bus = await NatsPubSub.connect([nats_url], subjects=subjects, name="connector")
    core_bus = await NatsPubSub.connect([nats_url], subjects=subjects, name="core")
    server = ws.Server(ws.ServerConfig(port=0, rooms=False, **server_config))
    port = server.start()
    registry = Registry()
    connector = Connector(server, conn_bus, registry)
    try:
        assert connector.relayed_in_cpp
        await conn_bus.ready()
        await core_bus.ready()
        yield Setup(server, connector, registry, conn_bus, core_bus, f"ws://127.0.0.1:{port}")
    finally:
        connector.close()
        server.stop()
        await core_bus.aclose()
        await conn_bus.aclose()


async def joined(s: Setup, seed: int) -> ArchipelagoClient:
    c = ArchipelagoClient(seed)
    await c.connect(s.url)
    assert await c.handshake() == c.address
    return c


def frame(packet: dict[str, Any]) -> bytes:
    return codec.encode(V3 + "ServerPacket", packet)


def changed(island: str, conn: str, from_id: str | None, members: IslandMembers) -> bytes:
    m: dict[str, Any] = {"islandId": island, "connStr": conn}
    if from_id is not None:
        m["fromIslandId"] = from_id
    m["peers"] = {p: {"x": v[0], "y": v[1], "z": v[2]} for p, v in members.items()}
    return frame({"islandChanged": m})


def move(kind: str, island: str, peer: str) -> bytes:
    return frame({kind: {"islandId": island, "peerId": peer}})


async def frames_until(c: ArchipelagoClient, last: bytes, timeout: float = 30.0) -> list[bytes]:
    """The raw frames c receives up to and including ``last``."""
    assert c.ws is not None
    out: list[bytes] = []
    while not out or out[-1] != last:
        msg = await c.ws.receive(timeout)
        assert msg.type == aiohttp.WSMsgType.BINARY, (msg, out)
        out.append(bytes(msg.data))
    return out


async def end_tick(bus: NatsPubSub) -> None:
    """The islands status that ends a tick, sent before anything published later (the
    native scheme groups what one loop turn publishes per island)."""
    bus.publish("engine.islands", IslandStatus(()))
    await bus.flush()


async def relay_two_ticks(s: Setup, a: ArchipelagoClient, b: ArchipelagoClient) -> None:
    """Two ticks through the core bus, then checks that a and b received exactly their
    frames, the connector's islands and its relay counters."""
    core = s.core_bus
    # Tick 1: a, b and a stranger enter I1 (the core says a came from I0: a had no island
    # here, so no from); the stranger's join is news to nobody (a and b are fresh on I1).
    one = IslandMembers(
        [
            (a.address, (1.0, 0.0, 1.0)),
            (b.address, (2.0, 0.0, 2.0)),
            (STRANGER, (3.0, 0.0, 3.0)),
        ]
    )
    core.publish_island_changed(
        [
            (a.address, IslandChanged("I1", "conn-a1", "I0", one)),
            (STRANGER, IslandChanged("I1", "conn-s", None, one)),
            (b.address, IslandChanged("I1", "conn-b1", None, one)),
        ]
    )
    core.publish_island_peers("peer_join", [IslandPeer("I1", STRANGER)])
    await end_tick(core)
    # Tick 2: the stranger leaves I1 (a and b are told), a moves to I2 (from I1) and b
    # hears that a left; a marker join on I1 ends it for b, on I2 for a.
    two = IslandMembers([(a.address, (500.0, 0.0, 500.0))])
    core.publish_island_peers("peer_left", [IslandPeer("I1", STRANGER)])
    core.publish_island_changed([(a.address, IslandChanged("I2", "conn-a2", "I1", two))])
    core.publish_island_peers("peer_left", [IslandPeer("I1", a.address)])
    await end_tick(core)
    core.publish_island_peers("peer_join", [IslandPeer("I1", MARK), IslandPeer("I2", MARK)])
    got_a = await frames_until(a, move("joinIsland", "I2", MARK))
    got_b = await frames_until(b, move("joinIsland", "I1", MARK))
    assert got_a == [
        changed("I1", "conn-a1", None, one),
        move("leftIsland", "I1", STRANGER),
        changed("I2", "conn-a2", "I1", two),
        move("joinIsland", "I2", MARK),
    ]
    assert got_b == [
        changed("I1", "conn-b1", None, one),
        move("leftIsland", "I1", STRANGER),
        move("leftIsland", "I1", a.address),
        move("joinIsland", "I1", MARK),
    ]
    assert s.connector.island_of_address(a.address) == "I2"
    assert s.connector.island_of_address(b.address) == "I1"
    assert s.connector.island_of_address(STRANGER) is None
    st = s.server.stats()["connector"]
    assert st["relayed_island_changed"] == 3
    assert st["relayed_not_connected"] == 1
    assert st["relayed_left_island"] == 3
    assert st["relayed_join_island"] == 2
