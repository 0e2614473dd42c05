"""The core tick with the real engine and an in-process bus (no sockets).

Checks archipelago.md 2.4 publishing: island_changed to movers with the full member
map, join/left after every island_changed of the tick, left on disconnect/expiry,
tokens minted only on change, the policy asked once per changed island per tick,
transport switches re-issued, engine.islands every tick, engine.discovery on its period.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from dclcomms.archipelago import Engine
from dclcomms.archipelago.core import ArchipelagoCore
from dclcomms.heartbeats import UNSET, Unset
from dclcomms.policy import IslandView, RealmPolicy, Transport, Transports, WsRoomTransport
from dclcomms.pubsub import HeartbeatBatch, InProcessPubSub


def addr(i: int) -> str:
    return f"0x{i:040x}"


class CountingTransport(Transport):
    def __init__(self, name: str) -> None:
        self.name = name
        self.calls: list[tuple[str, tuple[str, ...]]] = []

    def issue(self, island_id: str, peer_ids: Sequence[str]) -> dict[str, str]:
        self.calls.append((island_id, tuple(peer_ids)))
        return {p: f"{self.name}:{island_id}:{p}" for p in peer_ids}


class Policy(RealmPolicy):
    """Islands of 3+ peers on 'big', others on 'small'; records every call."""

    def __init__(self, transports: Transports) -> None:
        super().__init__(transports)
        self.small = CountingTransport("small")
        self.big = CountingTransport("big")
        self.calls: list[tuple[str, int]] = []
        self.removed: list[str] = []

    def transport_for(self, island: IslandView) -> Transport:
        self.calls.append((island.id, len(island.peers)))
        return self.big if len(island.peers) >= 3 else self.small

    def island_removed(self, island_id: str) -> None:
        self.removed.append(island_id)


class Clock:
    def __init__(self) -> None:
        self.t = 1_000_000

    def __call__(self) -> int:
        return self.t


def setup() -> tuple[ArchipelagoCore, InProcessPubSub, Policy, list[tuple[str, Any]], Clock]:
    bus = InProcessPubSub()
    clock = Clock()
    policy = Policy(Transports(ws_room=WsRoomTransport("ws://x", None)))
    core = ArchipelagoCore(Engine(), bus, policy, clock_ms=clock, discovery_interval_ms=10_000)
    log: list[tuple[str, Any]] = []
    bus.subscribe("engine.>", lambda s, p: log.append((s, p)))
    return core, bus, policy, log, clock


def beat(
    bus: InProcessPubSub, peers: dict[int, tuple[float, float]], room: str | Unset = UNSET
) -> None:
    n = len(peers)
    pos = np.asarray([(x, 1.0, z) for x, z in peers.values()], np.float32)
    bus.publish_heartbeats(HeartbeatBatch([addr(i) for i in peers], pos, [room] * n))


def kinds(log: list[tuple[str, Any]]) -> list[str]:
    return [
        s.rsplit(".", 1)[1] if s.startswith("engine.") and s.count(".") > 1 else s for s, _ in log
    ]


def test_arrivals_moves_and_ordering() -> None:
    core, bus, policy, log, clock = setup()
    beat(bus, {1: (0.0, 0.0), 2: (10.0, 0.0)})
    core.tick()
    changed = [(s, p) for s, p in log if s.endswith("island_changed")]
    assert [s for s, _ in changed] == [
        f"engine.peer.{addr(1)}.island_changed",
        f"engine.peer.{addr(2)}.island_changed",
    ]
    (island,) = {p.island_id for _, p in changed}
    for _, p in changed:
        assert p.from_island_id is None
        assert p.peers == {addr(1): (0.0, 1.0, 0.0), addr(2): (10.0, 1.0, 0.0)}
    assert changed[0][1].conn_str == f"small:{island}:{addr(1)}"
    assert policy.calls == [(island, 2)]  # once for the island, not per peer
    # join notifications follow every island_changed; engine.islands and discovery end the tick
    k = kinds(log)
    assert k[:2] == ["island_changed", "island_changed"]
    assert k[2:4] == ["peer_join", "peer_join"] and k[-2:] == ["engine.islands", "engine.discovery"]
    assert len(log[-2][1].islands) == 1

    # a third peer arrives: the island crosses to 'big' => re-issued to the two members
    log.clear()
    policy.calls.clear()
    beat(bus, {3: (20.0, 5.0)})
    clock.t += 1000
    core.tick()
    changed = {s.split(".")[2]: p for s, p in log if s.endswith("island_changed")}
    assert changed[addr(3)].from_island_id is None
    assert changed[addr(3)].conn_str == f"big:{island}:{addr(3)}"
    for a in (addr(1), addr(2)):
        assert changed[a].from_island_id == island and changed[a].conn_str == f"big:{island}:{a}"
        assert set(changed[a].peers) == {addr(1), addr(2), addr(3)}
    assert policy.calls == [(island, 3)]
    assert policy.big.calls == [(island, (addr(3), addr(1), addr(2)))]
    joins = [p.peer_id for s, p in log if s.endswith("peer_join")]
    assert joins == [addr(3)]
    assert "engine.discovery" not in kinds(log)  # 1 s later: not yet due

    # nobody moves: nothing is published but engine.islands, no token minted
    log.clear()
    policy.calls.clear()
    n_small, n_big = len(policy.small.calls), len(policy.big.calls)
    beat(bus, {1: (0.0, 0.0), 2: (10.0, 0.0), 3: (20.0, 5.0)})
    clock.t += 1000
    core.tick()
    assert kinds(log) == ["engine.islands"]
    assert policy.calls == [] and (len(policy.small.calls), len(policy.big.calls)) == (
        n_small,
        n_big,
    )

    # peer 3 walks away: its own island, from = the old one; the old island is told it left
    log.clear()
    beat(bus, {3: (900.0, 900.0)})
    clock.t += 1000
    core.tick()
    (moved,) = [p for s, p in log if s.endswith("island_changed") and addr(3) in s]
    assert moved.from_island_id == island and moved.island_id != island
    assert moved.peers == {addr(3): (900.0, 1.0, 900.0)}
    lefts = [(s, p.peer_id) for s, p in log if s.endswith("peer_left")]
    assert lefts == [(f"engine.island.{island}.peer_left", addr(3))]
    k = kinds(log)
    assert k.index("peer_left") > max(i for i, x in enumerate(k) if x == "island_changed")
    assert bus.handler_errors == 0


def test_disconnect_and_expiry_publish_left() -> None:
    core, bus, policy, log, clock = setup()
    beat(bus, {1: (0.0, 0.0), 2: (1.0, 1.0), 3: (2.0, 2.0)})
    core.tick()
    island = log[0][1].island_id
    log.clear()
    bus.publish(f"peer.{addr(2)}.disconnect", None)
    clock.t += 1000
    core.tick()
    assert [(s, p.peer_id) for s, p in log if s.endswith("peer_left")] == [
        (f"engine.island.{island}.peer_left", addr(2))
    ]
    assert core.engine.peer_count == 2 and core.engine.island_of(addr(2)) is None
    assert all(addr(2) not in i.peers for i in core.engine.islands())
    # peer 1 keeps heartbeating, peer 3 goes silent for 60 s
    log.clear()
    clock.t += 59_000
    beat(bus, {1: (0.0, 0.0)})
    clock.t += 2_000
    core.tick()
    assert [p.peer_id for s, p in log if s.endswith("peer_left")] == [addr(3)]
    assert core.engine.peer_count == 1
    # the last member disconnects: the island disappears, nobody left to tell
    log.clear()
    bus.publish(f"peer.{addr(1)}.disconnect", None)
    core.tick()
    assert kinds(log)[:1] == ["engine.islands"] and not log[0][1].islands
    assert policy.removed == [island]


def test_desired_room_values_are_passed_to_the_engine() -> None:
    """str sets, "" clears, UNSET (field absent) keeps: all three reach update_many unharmed."""
    core, bus, _policy, log, _clock = setup()
    beat(bus, {1: (0.0, 0.0)})
    beat(bus, {2: (2000.0, 0.0)})
    core.tick()
    islands = {s.split(".")[2]: p.island_id for s, p in log if s.endswith("island_changed")}
    beat(bus, {1: (0.0, 0.0)}, room=islands[addr(2)])
    beat(bus, {1: (0.0, 0.0)}, room="")
    beat(bus, {1: (0.0, 0.0)}, room=UNSET)
    core.tick()
    assert core.engine.peer_count == 2
    assert bus.handler_errors == 0  # the bus logs handler exceptions: none happened


def test_policy_failure_falls_back_and_is_counted() -> None:
    bus = InProcessPubSub()

    class Broken(RealmPolicy):
        def transport_for(self, island: IslandView) -> Transport:
            raise RuntimeError("policy bug")

    ws = WsRoomTransport("ws://h:1", None)
    core = ArchipelagoCore(Engine(), bus, Broken(Transports(ws_room=ws)), clock_ms=Clock())
    got: list[Any] = []
    bus.subscribe("engine.peer.*.island_changed", lambda s, p: got.append(p))
    beat(bus, {1: (0.0, 0.0)})
    core.tick()
    assert got[0].conn_str == f"ws-room:ws://h:1/rooms/{got[0].island_id}"
    assert core.metrics.policy_errors.get() == 1


class Refusing(Transport):
    """Admits everyone except the peers in ``refused``."""

    name = "picky"

    def __init__(self, refused: set[str]) -> None:
        self.refused = refused
        self.asked: list[str] = []

    def issue(self, island_id: str, peer_ids: Sequence[str]) -> dict[str, str]:
        self.asked.extend(peer_ids)
        return {p: f"picky:{island_id}:{p}" for p in peer_ids if p not in self.refused}


def test_rejected_peer_is_evicted_and_backed_off_for_30_s() -> None:
    """archipelago.md 2.6 rule 4: a peer the transport rejects gets a leave and is not
    re-admitted for 30 s; its heartbeats meanwhile are ignored (counted)."""
    bus = InProcessPubSub()
    clock = Clock()
    picky = Refusing({addr(2)})

    class Only(RealmPolicy):
        def transport_for(self, island: IslandView) -> Transport:
            return picky

    core = ArchipelagoCore(
        Engine(), bus, Only(Transports(ws_room=WsRoomTransport("ws://x", None))), clock_ms=clock
    )
    log: list[tuple[str, Any]] = []
    bus.subscribe("engine.>", lambda s, p: log.append((s, p)))
    beat(bus, {1: (0.0, 0.0), 2: (10.0, 0.0)})
    core.tick()
    changed = [s for s, _ in log if s.endswith("island_changed")]
    assert changed == [f"engine.peer.{addr(1)}.island_changed"]  # 2 got no string
    assert core.metrics.rejected.get() == 1
    assert core.engine.island_of(addr(2)) is None  # evicted at the end of the tick
    log.clear()
    clock.t += 1_000
    beat(bus, {1: (0.0, 0.0), 2: (10.0, 0.0)})  # 2 keeps heartbeating: ignored
    core.tick()
    (island,) = {p.island_id for s, p in log if s.endswith("peer_left")}
    assert [p.peer_id for s, p in log if s.endswith("peer_left")] == [addr(2)]
    assert core.engine.peer_count == 1 and core.metrics.backoff_dropped.get() == 1
    assert picky.asked == [addr(1), addr(2)]  # not asked again during the back-off
    # 30 s after the rejection it is admitted again (and the transport asked again)
    clock.t += 29_000
    beat(bus, {2: (10.0, 0.0)})
    core.tick()
    assert picky.asked[-1] == addr(2) and core.metrics.rejected.get() == 2
    picky.refused.clear()  # the transport changed its mind: after the next back-off, 2 is in
    clock.t += 30_000
    log.clear()
    beat(bus, {2: (10.0, 0.0)})
    core.tick()
    got = [p for s, p in log if s == f"engine.peer.{addr(2)}.island_changed"]
    assert len(got) == 1 and got[0].island_id == island and got[0].conn_str.startswith("picky:")
    core.close()


def test_non_finite_and_out_of_world_heartbeats_are_not_clustered() -> None:
    """A connector on NATS that is not ours may publish NaN or +-3.4e38: the core drops those
    rows (counted by reason) and clusters the rest of the batch; 0 = finiteness only."""
    from dclcomms.metrics import Registry

    bus = InProcessPubSub()
    reg = Registry()
    policy = Policy(Transports(ws_room=WsRoomTransport("ws://x", None)))
    core = ArchipelagoCore(
        Engine(), bus, policy, clock_ms=Clock(), registry=reg, world_bound_m=4096.0
    )
    log: list[tuple[str, Any]] = []
    bus.subscribe("engine.>", lambda s, p: log.append((s, p)))
    pos = np.asarray(
        [
            (0.0, 0.0, 0.0),
            (np.nan, 0.0, 0.0),
            (3.4e38, 0.0, 0.0),
            (0.0, 0.0, -np.inf),
            (0.0, 5000.0, 0.0),
            (10.0, 0.0, 4096.0),  # on the bound: clustered
        ],
        np.float32,
    )
    bus.publish_heartbeats(HeartbeatBatch([addr(i) for i in range(6)], pos, [UNSET] * 6))
    core.tick()
    changed = {s.split(".")[2] for s, _ in log if s.endswith("island_changed")}
    assert changed == {addr(0), addr(5)}
    assert core.engine.peer_count == 2
    assert core.metrics.rejected_positions.get(reason="invalid") == 2
    assert core.metrics.rejected_positions.get(reason="out_of_bounds") == 2
    assert core.metrics.heartbeats.get() == 2
    text = reg.render()
    assert 'dcl_archipelago_heartbeats_rejected_total{reason="out_of_bounds"} 2' in text

    # no bound: finite positions all pass, non-finite ones never do
    core2 = ArchipelagoCore(Engine(), InProcessPubSub(), policy, clock_ms=Clock())
    core2._on_heartbeats(HeartbeatBatch([addr(i) for i in range(6)], pos, [UNSET] * 6))
    assert core2.engine.peer_count == 4
    assert core2.metrics.rejected_positions.get(reason="invalid") == 2
