"""The native NATS scheme (batched heartbeats, island_changed per island) against a real
nats-server: wire shape, round trips, ordering, bad input, outbox bound, reconnects."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import numpy as np
import pytest

from dclcomms import codec
from dclcomms.heartbeats import UNSET
from dclcomms.metrics import Registry
from dclcomms.nats.pubsub import (
    decode_heartbeat_batch,
    decode_island_changes,
    encode_heartbeat_batch,
)
from dclcomms.nats.subjects import NATIVE, scheme
from dclcomms.pubsub import (
    Heartbeat,
    HeartbeatBatch,
    IslandChanged,
    IslandData,
    IslandMembers,
    IslandPeer,
    IslandStatus,
)
from tests.helpers.nats_fixtures import (
    NatsServer,
    nats_server,  # noqa: F401 - fixture
)
from tests.helpers.pubsub import addr, batch_of, bus_of, pub_sub_wire, run, until, wire_of


def test_native_scheme_subscriptions() -> None:
    s = scheme("native")
    assert s is NATIVE and s.batched
    assert s.wire_patterns("peer.*.heartbeat") == ["dclcomms.v1.heartbeats"]
    assert s.wire_patterns(f"peer.{addr(1)}.heartbeat") == ["dclcomms.v1.heartbeats"]
    assert s.wire_patterns("engine.peer.*.island_changed") == ["dclcomms.v1.island.*.changed"]
    assert set(s.wire_patterns("engine.>")) == {
        "dclcomms.v1.island.*.changed",
        "dclcomms.v1.island.*.members",
        "engine.islands",
        "engine.discovery",
    }
    assert s.wire_patterns("engine.island.*.peer_left") == ["dclcomms.v1.island.*.members"]
    # everything else as in the workers scheme
    assert s.to_wire("engine.islands") == "engine.islands"
    assert s.to_wire(f"peer.{addr(1)}.connect") == f"peer.{addr(1)}.connect"
    assert s.to_wire("client.peer." + addr(1) + ".chat") == "client.peer." + addr(1) + ".chat"


def test_heartbeat_batch_codec_round_trip() -> None:
    b = batch_of(50)
    rooms = list(b.desired_rooms)
    rooms[3] = ""
    b = HeartbeatBatch(b.addresses, b.positions, rooms)
    data = encode_heartbeat_batch(b)
    assert len(data) < 50 * 33 + 64  # 20-byte address + 12-byte position each
    got = decode_heartbeat_batch(data)
    assert list(got.addresses) == list(b.addresses)
    assert np.array_equal(got.positions, b.positions)
    assert list(got.desired_rooms) == rooms
    for bad in (
        codec.encode("dclcomms.nats.v1.HeartbeatBatch", {"addresses": b"\x01" * 21}),
        codec.encode(
            "dclcomms.nats.v1.HeartbeatBatch",
            {"addresses": b"\x01" * 20, "positions": b"\x00" * 11},
        ),
        codec.encode(
            "dclcomms.nats.v1.HeartbeatBatch",
            {
                "addresses": b"\x01" * 20,
                "positions": b"\x00" * 12,
                "desiredRooms": [{"index": 1, "room": "x"}],
            },
        ),
        b"\xff\xff",
    ):
        with pytest.raises(ValueError):
            decode_heartbeat_batch(bad)


def test_native_heartbeats_one_message_per_batch(nats_server: NatsServer) -> None:  # noqa: F811
    async def body() -> None:
        async with pub_sub_wire(nats_server.url, "native") as (pub, sub, wire):
            batches: list[HeartbeatBatch] = []
            plain: list[tuple[str, Heartbeat]] = []
            sub.subscribe_heartbeats(batches.append)
            sub.subscribe(f"peer.{addr(3)}.heartbeat", lambda s, p: plain.append((s, p)))
            await sub.ready()
            b = batch_of(500)
            pub.publish_heartbeats(b)
            pub.publish(f"peer.{addr(3)}.heartbeat", Heartbeat((1.0, 2.0, 3.0), "I9"))
            await pub.flush()
            await until(lambda: sum(len(x) for x in batches) == 501 and len(wire.seen) == 2)
            assert wire.subjects == ["dclcomms.v1.heartbeats"] * 2
            assert len(batches) == 2
            assert list(batches[0].addresses) == list(b.addresses)
            assert np.array_equal(batches[0].positions, b.positions)
            assert list(batches[0].desired_rooms) == list(b.desired_rooms)
            assert list(batches[1].addresses) == [addr(3)]
            assert batches[1].desired_rooms == ["I9"]
            assert [s for s, _ in plain] == [f"peer.{addr(3)}.heartbeat"] * 2
            assert plain[1][1] == Heartbeat((1.0, 2.0, 3.0), "I9")
            assert sub.handler_errors == 0

    run(body)


def test_native_island_changed_one_message_per_island(
    nats_server: NatsServer,  # noqa: F811
) -> None:
    async def body() -> None:
        async with pub_sub_wire(nats_server.url, "native") as (pub, sub, wire):
            seen = wire.seen
            got: list[tuple[str, Any]] = []
            one: list[tuple[str, Any]] = []
            sub.subscribe("engine.>", lambda s, p: got.append((s, p)))
            sub.subscribe(f"engine.peer.{addr(2)}.island_changed", lambda s, p: one.append((s, p)))
            await sub.ready()
            a = IslandMembers({addr(i): (float(i), 0.0, 1.0) for i in range(1, 4)})
            b = IslandMembers({addr(9): (9.0, 0.0, 9.0)})
            sent = [
                (f"engine.peer.{addr(1)}.island_changed", IslandChanged("I1", "c1", None, a)),
                (f"engine.peer.{addr(9)}.island_changed", IslandChanged("I2", "c9", "I1", b)),
                (f"engine.peer.{addr(2)}.island_changed", IslandChanged("I1", "c2", "I0", a)),
                # bytes are accepted too (decoded, then grouped)
                (
                    f"engine.peer.{addr(3)}.island_changed",
                    IslandChanged("I1", "c3", None, a).to_bytes(),
                ),
                ("engine.island.I1.peer_join", IslandPeer("I1", addr(1))),
                (
                    "engine.islands",
                    IslandStatus((IslandData("I1", (addr(1),), 100, (0, 0, 0), 1),)),
                ),
            ]
            for s, m in sent:
                pub.publish(s, m)
            await pub.flush()
            await until(lambda: len(got) == 6 and len(seen) == 5)
            # I1's recipients with one map share one message (the bytes-published one
            # carries an equal but distinct map: a group of its own), in publish order
            assert [s for s, _ in seen] == [
                "dclcomms.v1.island.I1.changed",
                "dclcomms.v1.island.I2.changed",
                "dclcomms.v1.island.I1.changed",
                "dclcomms.v1.island.I1.members",
                "engine.islands",
            ]
            changes = decode_island_changes(seen[0][1])
            assert [x for x, _ in changes] == [addr(1), addr(2)]
            expected = {
                s: (m if isinstance(m, IslandChanged) else IslandChanged.from_bytes(m))
                for s, m in sent[:4]
            }
            got_changed = {s: p for s, p in got if s.endswith("island_changed")}
            assert got_changed == expected
            assert got_changed[sent[0][0]].peers is got_changed[sent[2][0]].peers  # decoded once
            assert [s for s, _ in got][-2:] == ["engine.island.I1.peer_join", "engine.islands"]
            assert one == [(sent[2][0], expected[sent[2][0]])]

    run(body)


def test_native_peer_join_left_one_message_per_island(
    nats_server: NatsServer,  # noqa: F811
) -> None:
    async def body() -> None:
        async with pub_sub_wire(nats_server.url, "native") as (pub, sub, wire):
            got: list[tuple[str, Any]] = []
            joins: list[tuple[str, Any]] = []
            sub.subscribe("engine.island.*.peer_left", lambda s, p: got.append((s, p)))
            sub.subscribe("engine.island.*.peer_join", lambda s, p: got.append((s, p)))
            sub.subscribe("engine.island.I2.peer_join", lambda s, p: joins.append((s, p)))
            await sub.ready()
            # as the core publishes a tick: every peer_left, then every peer_join
            sent = [
                ("engine.island.I1.peer_left", IslandPeer("I1", addr(1))),
                ("engine.island.I2.peer_left", IslandPeer("I2", addr(2))),
                ("engine.island.I1.peer_left", IslandPeer("I1", addr(3))),
                ("engine.island.I2.peer_join", IslandPeer("I2", addr(1))),
                ("engine.island.I3.peer_join", IslandPeer("I3", addr(3))),
                ("engine.island.I2.peer_join", IslandPeer("I2", addr(4)).to_bytes()),
                # a later left of an island with joins this turn: a new message (order kept)
                ("engine.island.I2.peer_left", IslandPeer("I2", addr(1))),
            ]
            for s, m in sent:
                pub.publish(s, m)
            await pub.flush()
            await until(lambda: len(got) == 7 and len(wire.seen) == 4)
            assert wire.subjects == [
                "dclcomms.v1.island.I1.members",
                "dclcomms.v1.island.I2.members",
                "dclcomms.v1.island.I3.members",
                "dclcomms.v1.island.I2.members",
            ]
            by_island: dict[str, list[tuple[str, Any]]] = {}
            for s, p in got:
                by_island.setdefault(p.island_id, []).append((s, p))
            expect: dict[str, list[tuple[str, Any]]] = {}
            for s, m in sent:
                p = m if isinstance(m, IslandPeer) else IslandPeer.from_bytes(m)
                expect.setdefault(p.island_id, []).append((s, p))
            assert by_island == expect  # per island, in publish order
            assert joins == [
                ("engine.island.I2.peer_join", IslandPeer("I2", addr(1))),
                ("engine.island.I2.peer_join", IslandPeer("I2", addr(4))),
            ]
            assert sub.handler_errors == 0
            # a peer id that is not an address cannot travel natively: refused, counted
            pub.publish("engine.island.I1.peer_join", IslandPeer("I1", "bob"))
            pub.publish("engine.island.I1.peer_join", IslandPeer("I9", addr(1)))
            assert pub.m_subject_errors.get(code="bad_address", direction="publish") == 1
            assert pub.m_dropped.get(reason="decode") == 1

    run(body)


def test_native_bad_input_is_refused_and_counted(
    nats_server: NatsServer,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def body() -> None:
        reg = Registry()
        async with (
            bus_of(nats_server.url, "native", registry=reg) as bus,
            wire_of(nats_server.url) as wire,
        ):
            raw = wire.nc
            batches: list[HeartbeatBatch] = []
            changed: list[tuple[str, Any]] = []
            bus.subscribe_heartbeats(batches.append)
            bus.subscribe("engine.peer.*.island_changed", lambda s, p: changed.append((s, p)))
            await bus.ready()
            m = bus.m_subject_errors
            with caplog.at_level(logging.ERROR, logger="dclcomms.nats.pubsub"):
                # a batch with bad addresses: only the good ones travel
                b = batch_of(3)
                bad = HeartbeatBatch(
                    [b.addresses[0], "0xAB", "0x" + "G" * 40],
                    b.positions,
                    [UNSET] * 3,
                )
                bus.publish_heartbeats(bad)
                members = IslandMembers({addr(1): (0.0, 0.0, 0.0)})
                bus.publish(
                    f"engine.peer.{addr(1)}.island_changed",
                    IslandChanged("I 1", "c", None, members),
                )
                bus.publish(f"engine.peer.{addr(1)}.island_changed", b"\xff\xff\xff")
            assert m.get(code="bad_address", direction="publish") == 2
            assert m.get(code="bad_island_id", direction="publish") == 1
            assert bus.m_dropped.get(reason="decode") == 1
            await bus.flush()
            await until(lambda: sum(len(x) for x in batches) == 1, timeout=20)
            assert list(batches[0].addresses) == [b.addresses[0]]
            # received: undecodable batches, a bad island token, a payload of another island
            good = IslandChanged("I2", "c", None, members)
            await raw.publish("dclcomms.v1.heartbeats", b"\xff\xff\xff")
            await raw.publish("dclcomms.v1.island.I$.changed", b"")
            await raw.publish("dclcomms.v1.island.I1.changed", b"\x0a")
            async with bus_of(nats_server.url, "native") as pub:
                pub.publish(f"engine.peer.{addr(1)}.island_changed", good)
                await pub.flush()
                data = None
                await until(lambda: len(changed) == 1, timeout=20)

                async def grab(msg: Any) -> None:
                    nonlocal data
                    data = bytes(msg.data)

                s2 = await raw.subscribe("dclcomms.v1.island.I2.changed", cb=grab)
                await raw.flush()
                pub.publish(f"engine.peer.{addr(1)}.island_changed", good)
                await pub.flush()
                await until(lambda: data is not None and len(changed) == 2, timeout=20)
                await s2.unsubscribe()
                await raw.publish("dclcomms.v1.island.I3.changed", data or b"")  # says I2
                await raw.flush()
            await until(lambda: bus.m_dropped.get(reason="decode") == 4, timeout=20)
            await asyncio.sleep(0.1)
            assert changed == [(f"engine.peer.{addr(1)}.island_changed", good)] * 2
            assert m.get(code="bad_subject", direction="receive") == 1
            await wire.settle()
            assert "dclcomms.v1.island.I 1.changed" not in wire.subjects

    run(body)


def test_native_outbox_bound_and_reconnect(nats_server: NatsServer) -> None:  # noqa: F811
    async def body() -> None:
        async with bus_of(nats_server.url, "native", max_outbox_bytes=400) as small:
            members = IslandMembers({addr(i): (0.0, 0.0, 0.0) for i in range(3)})
            for i in range(40):  # synchronous: nothing drains in between
                small.publish(
                    f"engine.peer.{addr(i)}.island_changed",
                    IslandChanged("I1", "c" * 20, None, members),
                )
            dropped = int(small.m_dropped.get(reason="outbox_full"))
            assert 0 < dropped < 40
            small.publish_heartbeats(batch_of(100))  # 3.2 kB: beyond the bound
            assert small.m_dropped.get(reason="outbox_full") == dropped + 1
            await small.flush()
            assert small.published == 1  # one message for I1's kept recipients

        async with (
            bus_of(nats_server.url, "native", reconnect_time_wait=0.1) as pub,
            bus_of(nats_server.url, "native", reconnect_time_wait=0.1) as sub,
        ):
            got: list[HeartbeatBatch] = []
            sub.subscribe_heartbeats(got.append)
            await sub.ready()
            pub.publish_heartbeats(batch_of(10))
            await until(lambda: len(got) == 1)
            await asyncio.to_thread(nats_server.kill)
            await until(lambda: not sub.nc.is_connected and not pub.nc.is_connected)
            pub.publish_heartbeats(batch_of(10))  # buffered or dropped, never blocks
            await asyncio.to_thread(nats_server.restart)
            await until(lambda: sub.nc.is_connected and pub.nc.is_connected, timeout=10)
            await sub.nc.flush()
            n = len(got)
            pub.publish_heartbeats(batch_of(20))
            await until(lambda: any(len(x) == 20 for x in got[n:]), timeout=10)

    run(body)
