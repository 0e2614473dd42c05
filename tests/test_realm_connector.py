"""Connector glue between the bus and the server's send calls (recorded, no sockets).

End-to-end behaviour is in test_realm.py; this file pins the relay rules that are hard
to provoke deterministically over sockets: who gets join/left within one tick, replaced
sessions, and messages for sessions that are not connected here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dclcomms.archipelago import Engine
from dclcomms.archipelago.core import ArchipelagoCore
from dclcomms.heartbeats import UNSET
from dclcomms.metrics import Registry
from dclcomms.policy import RealmPolicy, Transports, WsRoomTransport
from dclcomms.pubsub import HeartbeatBatch, InProcessPubSub, IslandChanged
from dclcomms.realm.connector import Connector


class Recorder:
    """Stands in for dclcomms.ws.Server's send methods and records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def send_island_changed(
        self,
        address: str,
        island_id: str,
        conn_str: str,
        from_island_id: str | None,
        peers: list[Any] | bytes,
    ) -> None:
        if isinstance(peers, bytes):  # the members' encoded entries
            peers = list(IslandChanged.from_bytes(peers).peers.items())
        self.calls.append(("changed", address, island_id, from_island_id, [p for p, _ in peers]))

    def send_island_changed_message(self, address: str, message: bytes) -> None:
        m = IslandChanged.from_bytes(message)
        self.send_island_changed(
            address, m.island_id, m.conn_str, m.from_island_id, list(m.peers.items())
        )

    def send_join_island(self, address: str, island_id: str, peer_id: str) -> None:
        self.calls.append(("join", address, island_id, peer_id))

    def send_left_island(self, address: str, island_id: str, peer_id: str) -> None:
        self.calls.append(("left", address, island_id, peer_id))


def addr(i: int) -> str:
    return f"0x{i:040x}"


class Clock:
    t = 1_000_000

    def __call__(self) -> int:
        return self.t


def setup() -> tuple[Connector, ArchipelagoCore, Recorder, InProcessPubSub]:
    bus = InProcessPubSub()
    server = Recorder()
    reg = Registry()
    connector = Connector(server, bus, reg)
    policy = RealmPolicy(Transports(ws_room=WsRoomTransport("ws://h:1", None)))
    core = ArchipelagoCore(Engine(), bus, policy, registry=reg, clock_ms=Clock())
    return connector, core, server, bus


def beat(connector: Connector, peers: dict[int, tuple[float, float]]) -> None:
    n = len(peers)
    pos = np.asarray([(x, 0.0, z) for x, z in peers.values()], np.float32)
    connector.on_heartbeats(HeartbeatBatch([addr(i) for i in peers], pos, [UNSET] * n))


def test_same_tick_arrivals_get_no_redundant_joins() -> None:
    connector, core, server, bus = setup()
    for i in (1, 2):
        connector.on_connected(addr(i))
    beat(connector, {1: (0.0, 0.0), 2: (5.0, 5.0)})
    core.tick()
    # both got island_changed with both members; no join for what they already know
    assert [c[0] for c in server.calls] == ["changed", "changed"]
    assert all(set(c[4]) == {addr(1), addr(2)} for c in server.calls)
    island = server.calls[0][2]
    # a third arrives next tick: the two members get a join, the newcomer its island
    server.calls.clear()
    connector.on_connected(addr(3))
    beat(connector, {3: (10.0, 0.0)})
    core.tick()
    assert ("changed", addr(3), island, None, [addr(1), addr(2), addr(3)]) in server.calls
    joins = sorted(c[1] for c in server.calls if c[0] == "join")
    assert joins == [addr(1), addr(2)]
    assert bus.handler_errors == 0


def test_replaced_session_reenters_and_left_reaches_members_only() -> None:
    connector, core, server, bus = setup()
    for i in (1, 2):
        connector.on_connected(addr(i))
    beat(connector, {1: (0.0, 0.0), 2: (5.0, 5.0)})
    core.tick()
    server.calls.clear()
    # a new session for 2 replaces the old one: its old membership is dropped and it
    # gets a fresh island_changed without from_island_id on its first heartbeat
    connector.on_connected(addr(2))
    beat(connector, {2: (5.0, 5.0)})
    core.tick()
    mine = [c for c in server.calls if c[1] == addr(2)]
    assert mine and mine[0][0] == "changed" and mine[0][3] is None
    assert connector.sessions == {addr(1), addr(2)}
    # 2 disconnects: 1 is told, nobody else; messages for absent sessions are dropped
    server.calls.clear()
    connector.on_disconnected(addr(2))
    connector.on_disconnected(addr(2))  # a second close for the same address is ignored
    core.tick()
    lefts = [c for c in server.calls if c[0] == "left"]
    assert [(c[1], c[3]) for c in lefts] == [(addr(1), addr(2))]
    assert connector.members == {lefts[0][2]: {addr(1)}}
    assert connector.island_of == {addr(1): lefts[0][2]}
    assert bus.handler_errors == 0
