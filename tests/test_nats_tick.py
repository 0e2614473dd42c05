"""The core's tick in C++ (native scheme, C++ client) against a real nats-server: the same
bytes on the wire as the Python path for joins, moves, leaves, transport switches,
rejections and every built-in transport; what reaches a subscribing bus; its reject paths
(transport failures, bad island ids, the outbox bound)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from dclcomms.archipelago import Engine
from dclcomms.archipelago.core import ArchipelagoCore, TickReport
from dclcomms.clock import now_ms
from dclcomms.heartbeats import UNSET, HeartbeatBatch
from dclcomms.metrics import Registry
from dclcomms.nats.pubsub import decode_island_changes
from dclcomms.policy import (
    FixedTransport,
    IslandView,
    LiveKitTransport,
    NativeIssuer,
    P2PTransport,
    RealmPolicy,
    Transport,
    Transports,
    WsRoomTransport,
)
from dclcomms.pubsub import IslandChanged
from tests.helpers.nats_fixtures import (
    NatsServer,
    nats_server,  # noqa: F401 - fixture
)
from tests.helpers.pubsub import addr, bus_of, run, until, wire_of

NOW_S = 1_800_000_000  # the clock of every token


class Rejecting(Transport):
    """A transport of its own (issued in Python): refuses every peer whose address ends
    in 0 or 5."""

    name = "rejecting"

    def issue(self, island_id: str, peer_ids: Sequence[str]) -> dict[str, str]:
        return {p: f"custom:{island_id}:{p[-4:]}" for p in peer_ids if p[-1] not in "05"}


class Prefixed(FixedTransport):
    """A built-in transport whose ``issue`` a subclass overrides: always asked in Python."""

    name = "prefixed"

    def issue(self, island_id: str, peer_ids: Sequence[str]) -> dict[str, str]:
        return {p: f"{self.conn_str}/{island_id}/{p[-2:]}" for p in peer_ids}


class BySize(RealmPolicy):
    """Every transport, by island size, so that ticks that grow and shrink islands
    switch them (each switch re-issues every member). Islands of 9 or more members are
    rechecked every tick and flip between WebSocket rooms and LiveKit each time: a
    switch without a membership change (its members re-issued, none arriving)."""

    def __init__(self, transports: Transports) -> None:
        super().__init__(transports)
        self.custom = Rejecting()
        self.prefixed = Prefixed("pre:fix")
        self.big: dict[str, bool] = {}  # island -> on LiveKit

    def transport_for(self, island: IslandView) -> Transport:
        t = self.transports
        n = len(island.peers)
        assert t.p2p is not None and t.livekit is not None and t.fixed is not None
        if n >= 9:
            flip = self.big[island.id] = not self.big.get(island.id, True)
            return t.livekit if flip else t.ws_room
        self.big.pop(island.id, None)
        return {1: t.fixed, 2: t.p2p, 3: self.prefixed, 4: self.custom, 5: t.livekit}.get(
            n, t.ws_room
        )

    def islands_to_recheck(self) -> list[str]:
        return list(self.big)

    def island_removed(self, island_id: str) -> None:
        self.big.pop(island_id, None)


def transports(secret: str | None = "room-secret") -> Transports:
    return Transports(
        WsRoomTransport("ws://rooms.example:9000", secret),
        livekit=LiveKitTransport("lk.example", "api-key", "api-secret"),
        fixed=FixedTransport("offline:offline"),
        p2p=P2PTransport(max_island_size=16),
    )


def place(engine: Engine, peers: dict[int, tuple[float, float]]) -> None:
    """Heartbeats of ``peers`` now (the core's clock: they do not expire)."""
    ids = sorted(peers)
    pos = np.array([(peers[i][0], 0.0, peers[i][1]) for i in ids], dtype=np.float32)
    engine.update_many([addr(i) for i in ids], pos, [UNSET] * len(ids), now_ms=now_ms())


def cluster(first: int, n: int, x: float, z: float) -> dict[int, tuple[float, float]]:
    return {first + k: (x + 3.0 * k, z) for k in range(n)}


# Ticks of the scenario: who is where (peers absent from a step are disconnected).
STEPS: list[dict[int, tuple[float, float]]] = [
    # islands of 1..7 members (each size picks another transport), and one of 12
    {
        **cluster(1, 1, 0, 0),
        **cluster(10, 2, 500, 0),
        **cluster(20, 3, 1000, 0),
        **cluster(30, 4, 1500, 0),
        **cluster(40, 5, 2000, 0),
        **cluster(50, 7, 2500, 0),
        **cluster(60, 12, 3000, 0),
    },
    # moves between islands (sizes change: switches), leaves, arrivals
    {
        **cluster(1, 1, 500, 6),  # 1 joins 10's island (size 3)
        **cluster(10, 2, 500, 0),
        **cluster(20, 2, 1000, 0),  # 22 leaves
        **cluster(30, 4, 1500, 0),
        **cluster(40, 5, 2000, 0),
        **cluster(50, 7, 2500, 0),
        **cluster(60, 9, 3000, 0),  # 69..71 leave
        **cluster(80, 4, 3500, 0),  # arrivals
        **cluster(90, 1, 1506, 0),  # joins 30's island (size 5)
    },
    # the peers rejected by the custom transport come back (still backed off)
    {**cluster(10, 2, 500, 0), **cluster(30, 4, 1500, 0), **cluster(100, 4, 4000, 0)},
]


async def scenario(
    url: str, *, c_client: bool, prefix: str = "I"
) -> tuple[list[list[tuple[str, bytes]]], list[TickReport], dict[str, float]]:
    """The wire (minus engine.discovery) of each tick, the reports and some metrics."""
    registry = Registry()
    async with (
        bus_of(url, "native", c_client=c_client, registry=registry) as bus,
        wire_of(url) as wire,
    ):
        engine = Engine(join_distance=20.0, leave_distance=30.0, id_prefix=prefix)
        core = ArchipelagoCore(engine, bus, BySize(transports()), registry=registry)
        assert core._cpp_tick is c_client
        ticks, reports = [], []
        for step in STEPS:
            known = {int(p, 16) for p in engine.snapshot().peer_ids}
            for gone in sorted(known - set(step)):
                engine.disconnect(addr(gone))
            place(engine, step)
            for _ in range(2):  # the second: the evicted peers' peer_left
                reports.append(core.tick())
                await bus.flush()  # ticks are a flush period apart
                await wire.settle()
                ticks.append([(s, d) for s, d in wire.seen if s != "engine.discovery"])
                wire.seen.clear()
        core.close()
        m = core.metrics
        metrics = {
            "issued": sum(m.issued.values.values()),
            "rejected": m.rejected.get(),
            "switches": m.switches.get(),
            "policy_errors": m.policy_errors.get(),
            **{
                code: bus.m_subject_errors.get(code=code, direction="publish")
                for code in ("bad_island_id", "bad_subject", "bad_address")
            },
            **{f"issued_{k[0][1]}": v for k, v in m.issued.values.items()},
        }
    return ticks, reports, metrics


@pytest.fixture
def frozen_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tokens minted in Python and in C++ carry the same iat/nbf/exp."""
    monkeypatch.setattr("dclcomms.policy.time.time", lambda: float(NOW_S))


@pytest.mark.usefixtures("frozen_clock")
def test_cpp_tick_writes_the_python_paths_bytes(nats_server: NatsServer) -> None:  # noqa: F811
    async def main() -> None:
        py_ticks, py_reports, py_metrics = await scenario(nats_server.url, c_client=False)
        cpp_ticks, cpp_reports, cpp_metrics = await scenario(nats_server.url, c_client=True)
        assert [(r.changes, r.left, r.island_changed, r.switches) for r in cpp_reports] == [
            (r.changes, r.left, r.island_changed, r.switches) for r in py_reports
        ]
        assert cpp_metrics == py_metrics
        for py, cpp in zip(py_ticks, cpp_ticks, strict=True):
            assert [s for s, _ in cpp] == [s for s, _ in py]
            assert cpp == py
        # the scenario covers what it claims
        assert py_metrics["switches"] >= 2 * len(STEPS) and py_metrics["rejected"] >= 2
        # the island of 12, rechecked on the tick where nothing moved in it, switched: all
        # of its members re-issued, each "from" that same island
        (big,) = [
            c
            for s, d in cpp_ticks[1]
            if s.endswith(".changed")
            for c in [decode_island_changes(d)]
            if len(c) == 12
        ]
        assert {m.from_island_id for _, m in big} == {big[0][1].island_id}
        assert {m.conn_str.split("?")[0] for _, m in big} == {"livekit:wss://lk.example"}
        assert {"fixed", "p2p", "ws-room", "livekit", "rejecting", "prefixed"} <= {
            k.removeprefix("issued_") for k in py_metrics
        }
        subjects = [s for t in cpp_ticks for s, _ in t]
        assert any(s.endswith(".members") for s in subjects)
        assert subjects.count("engine.islands") == len(cpp_ticks) == 2 * len(STEPS)
        first = cpp_ticks[0]
        assert first[-1][0] == "engine.islands"
        assert b"?access_token=" in b"".join(d for _, d in first)  # tokens minted in C++
        assert b"pre:fix/" in b"".join(d for _, d in first)  # the subclass's own issue()

    run(main, timeout=60)


@pytest.mark.usefixtures("frozen_clock")
def test_bad_island_ids_are_refused_and_counted_as_before(nats_server: NatsServer) -> None:  # noqa: F811
    """An engine prefix no subject may carry: every island_changed and peer_join refused
    (subject error), engine.islands still published, the same counts both ways."""

    async def main() -> None:
        py = await scenario(nats_server.url, c_client=False, prefix="I:")
        cpp = await scenario(nats_server.url, c_client=True, prefix="I:")
        assert cpp[2] == py[2]
        assert cpp[2]["bad_island_id"] > 0 and cpp[2]["bad_subject"] > 0
        assert cpp[0] == py[0]
        assert all(s == "engine.islands" for t in cpp[0] for s, _ in t)

    run(main, timeout=60)


def test_every_island_changed_reaches_a_subscribing_bus(nats_server: NatsServer) -> None:  # noqa: F811
    """10 islands of 40 peers: a connector's bus gets every peer's island_changed, with
    its connection string and its island's whole member map, then the joins."""

    async def main() -> None:
        async with (
            bus_of(nats_server.url, "native") as core_bus,
            bus_of(nats_server.url, "native") as conn_bus,
        ):
            got: dict[str, IslandChanged] = {}
            joins: list[str] = []
            conn_bus.subscribe(
                "engine.peer.*.island_changed", lambda s, m: got.setdefault(s.split(".")[2], m)
            )
            conn_bus.subscribe("engine.island.*.peer_join", lambda s, m: joins.append(m.peer_id))
            await conn_bus.ready()
            engine = Engine(join_distance=20.0, leave_distance=30.0)
            core = ArchipelagoCore(engine, core_bus, BySize(transports()))
            assert core._cpp_tick
            peers = {i: (1000.0 * (i // 40), 0.4 * (i % 40)) for i in range(400)}
            place(engine, peers)
            report = core.tick()
            assert report.island_changed == 400
            await until(lambda: len(got) == 400 and len(joins) == 400)
            islands = {i.id: i for i in engine.islands()}
            assert len(islands) == 10
            for a, msg in got.items():
                island = islands[msg.island_id]
                assert a in island.peers
                assert list(msg.peers) == list(island.peers)
                assert msg.from_island_id is None
                assert msg.conn_str.startswith(
                    f"ws-room:ws://rooms.example:9000/rooms/{island.id}?"
                )
            assert sorted(joins) == sorted(addr(i) for i in range(400))
            core.close()

    run(main)


class BrokenIssuer(WsRoomTransport):
    """A transport whose C++ minting fails (an impossible LiveKit key)."""

    def native_issuer(self) -> NativeIssuer | None:
        return ("livekit", "livekit:x?access_token=", "", "secret", 300, NOW_S)


class Raising(Transport):
    name = "raising"

    def issue(self, island_id: str, peer_ids: Sequence[str]) -> dict[str, str]:
        raise RuntimeError("transport down")


@pytest.mark.parametrize("bad", [BrokenIssuer("ws://h:1", "s"), Raising()])
def test_a_failing_transport_is_a_policy_error_and_sends_nothing(
    nats_server: NatsServer,  # noqa: F811
    bad: Transport,
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Policy(RealmPolicy):
        def transport_for(self, island: IslandView) -> Transport:
            return bad if addr(0) in island.peers else self.transports.default

    async def main() -> None:
        async with bus_of(nats_server.url, "native") as bus, wire_of(nats_server.url) as wire:
            engine = Engine(join_distance=20.0, leave_distance=30.0)
            core = ArchipelagoCore(engine, bus, Policy(transports()))
            place(engine, {0: (0, 0), 1: (1, 0), 2: (500, 0)})
            with caplog.at_level(logging.ERROR, "dclcomms.archipelago.core"):
                report = core.tick()
            assert "transport failed" in caplog.text
            assert core.metrics.policy_errors.get() == 1
            assert report.island_changed == 1  # peer 2's island only
            await bus.flush()
            await wire.settle()
            changes = [s for s, _ in wire.seen if s.endswith(".changed")]
            assert changes == [f"dclcomms.v1.island.{engine.island_of(addr(2))}.changed"]
            core.close()

    run(main)


def test_the_outbox_bound_drops_and_counts(nats_server: NatsServer) -> None:  # noqa: F811
    """Beyond max_outbox_bytes the C++ client drops (counted), the tick goes on."""

    async def main() -> None:
        async with bus_of(nats_server.url, "native", max_outbox_bytes=4096) as bus:
            engine = Engine(join_distance=20.0, leave_distance=30.0)
            core = ArchipelagoCore(engine, bus, RealmPolicy(transports()))
            assert core._cpp_tick
            # one island of 100 (a ~16 KB IslandChanges) and 20 small ones
            peers = {i: (0.1 * i, 0.0) for i in range(100)}
            peers.update({100 + k: (1000.0 * (k + 1), 0.0) for k in range(20)})
            place(engine, peers)
            report = core.tick()
            assert report.island_changed == 120
            await bus.flush()
            assert bus.m_dropped.get(reason="outbox_full") >= 1
            core.close()

    run(main)


def test_the_python_path_stays_for_other_buses(nats_server: NatsServer) -> None:  # noqa: F811
    async def main() -> None:
        for scheme, c_client, mode in (
            ("native", True, "converge"),
            ("workers", True, "converge"),
            ("native", False, "converge"),
            ("native", True, "reference"),
        ):
            async with bus_of(nats_server.url, scheme, c_client=c_client) as bus:
                core = ArchipelagoCore(Engine(mode=mode), bus, RealmPolicy(transports()))
                expected = (scheme, c_client, mode) == ("native", True, "converge")
                assert core._cpp_tick is expected
                core.close()
        async with bus_of(nats_server.url, "native") as bus:
            await bus.aclose()
            assert not bus.publishes_ticks

    run(main)


def test_native_issuers_only_for_the_built_in_issue() -> None:
    """The built-in transports describe their minting; a transport of its own, or a
    subclass overriding issue(), is asked in Python (the scenario above compares the
    strings of each)."""
    t = transports()
    for transport in (t.fixed, t.p2p, t.ws_room, t.livekit):
        assert transport is not None
        assert transport.native_issuer() is not None
    assert Prefixed("a:b").native_issuer() is None
    assert Rejecting().native_issuer() is None


class RejectOnce(Transport):
    """Refuses ``peer`` the first time it is asked for it (then admits it)."""

    name = "reject-once"

    def __init__(self, peer: str) -> None:
        self.peer = peer
        self.refused = 0

    def issue(self, island_id: str, peer_ids: Sequence[str]) -> dict[str, str]:
        out = {p: f"fixed:{island_id}" for p in peer_ids}
        if self.peer in out and not self.refused:
            self.refused += 1
            del out[self.peer]
        return out


def test_a_rejected_peer_is_evicted_backed_off_and_readmitted(
    nats_server: NatsServer,  # noqa: F811
) -> None:
    """archipelago.md 2.6 rule 4 with the C++ tick and the C++ feed: no island_changed for
    the refused peer, its island hears peer_left, its heartbeats are dropped during the
    back-off, and after it the peer is admitted again."""
    refused = addr(2)
    transport = RejectOnce(refused)

    class Policy(RealmPolicy):
        def transport_for(self, island: IslandView) -> Transport:
            return transport

    async def main() -> None:
        async with (
            bus_of(nats_server.url, "native") as connector,
            bus_of(nats_server.url, "native") as bus,
        ):
            changed: list[str] = []
            left: list[str] = []
            connector.subscribe(
                "engine.peer.*.island_changed", lambda s, m: changed.append(s.split(".")[2])
            )
            connector.subscribe("engine.island.*.peer_left", lambda s, m: left.append(m.peer_id))
            await connector.ready()
            engine = Engine(join_distance=20.0, leave_distance=30.0)
            core = ArchipelagoCore(engine, bus, Policy(transports()), reject_backoff_ms=3_000)
            assert core._cpp_tick and core.fed_in_cpp
            await bus.ready()
            pos = np.array([(0, 0, 0), (1, 0, 0), (2, 0, 0)], dtype=np.float32)
            beat = HeartbeatBatch([addr(1), addr(2), addr(3)], pos, [UNSET] * 3)

            def fed(counter: Any) -> float:
                core.sync_feed(settle=True)  # what the C++ feed applied, into the metrics
                return float(counter.get())

            async def heartbeats(n: int) -> None:
                connector.publish_heartbeats(beat)
                await connector.flush()
                await until(lambda: fed(core.metrics.heartbeats) >= n)

            await heartbeats(3)
            report = core.tick()
            rejected_at = time.monotonic()  # the back-off started during that tick
            assert report.island_changed == 2
            assert core.metrics.rejected.get() == 1
            assert engine.island_of(refused) is None  # evicted at the end of the tick
            core.tick()  # its island hears it left
            await until(lambda: len(changed) == 2 and left == [refused])
            assert refused not in changed
            # during the back-off its heartbeats are dropped in C++ (counted)
            connector.publish_heartbeats(beat)
            await connector.flush()
            await until(lambda: fed(core.metrics.backoff_dropped) == 1)
            core.tick()
            assert engine.island_of(refused) is None
            # after it: admitted again, and this time the transport issues its string
            await asyncio.sleep(max(0.0, rejected_at + 3.1 - time.monotonic()))
            core.tick()  # forgets the expired back-off
            await heartbeats(7)
            assert core.tick().island_changed == 1
            await until(lambda: changed.count(refused) == 1)
            assert engine.island_of(refused) == engine.island_of(addr(1))
            core.close()

    run(main)
