"""NatsPubSub against real nats-server processes: schemes, batching, safety, reconnects."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import numpy as np
import pytest

from dclcomms.errors import BusError, SubjectError
from dclcomms.metrics import Registry
from dclcomms.nats.pubsub import NatsPubSub
from dclcomms.pubsub import (
    Discovery,
    Heartbeat,
    HeartbeatBatch,
    IslandChanged,
    IslandData,
    IslandPeer,
    IslandStatus,
    encode_payload,
)
from tests.helpers.common import free_port
from tests.helpers.nats_fixtures import (
    NatsServer,
    nats_server,  # noqa: F401 - fixture
)
from tests.helpers.pubsub import addr, batch_of, bus_of, pub_sub_wire, run, until, wire_of

SEED = 7


MESSAGES: dict[str, Any] = {
    f"engine.peer.{addr(1)}.island_changed": IslandChanged(
        "I2", "livekit:wss://h?access_token=t", "I1", {addr(1): (1.0, 2.0, 3.0)}
    ),
    "engine.island.I2.peer_join": IslandPeer("I2", addr(1)),
    "engine.island.I2.peer_left": IslandPeer("I2", addr(3)),
    "engine.islands": IslandStatus((IslandData("I2", (addr(1),), 100, (1.0, 0.0, 3.0), 4.0),)),
    "engine.discovery": Discovery("archipelago", 1_700_000_000_000, "abc", 1),
    f"peer.{addr(2)}.disconnect": None,
    f"peer.{addr(2)}.connect": None,
}


def _streams(items: list[Any]) -> tuple[list[Any], list[Any]]:
    """(the peer.* messages, the others), each in the order it crossed NATS."""

    def subject(x: Any) -> str:
        return x if isinstance(x, str) else x[0]

    peer = [x for x in items if subject(x).startswith("peer.")]
    return peer, [x for x in items if not subject(x).startswith("peer.")]


@pytest.mark.parametrize(
    ("scheme", "wire"),
    [
        (
            "workers",
            [
                f"engine.peer.{addr(1)}.island_changed",
                "engine.island.I2.peer_join",
                "engine.island.I2.peer_left",
                "engine.islands",
                "engine.discovery",
                f"peer.{addr(2)}.disconnect",
                f"peer.{addr(2)}.connect",
            ],
        ),
        (
            "v3",
            [
                f"client-proto.{addr(1)}.island_changed",
                "client-proto.island.I2.peer_join",
                "client-proto.island.I2.peer_left",
                "archipelago.islands",
                "service.discovery",
                f"peer.{addr(2)}.disconnect",
                f"peer.{addr(2)}.connect",
            ],
        ),
    ],
)
def test_every_message_crosses_nats_typed_under_both_schemes(
    nats_server: NatsServer,  # noqa: F811
    scheme: str,
    wire: list[str],
) -> None:
    async def body() -> None:
        async with pub_sub_wire(nats_server.url, scheme) as (pub, sub, nats_wire):
            seen = nats_wire.seen
            got: list[tuple[str, Any]] = []
            sub.subscribe("engine.>", lambda s, p: got.append((s, p)))
            sub.subscribe("peer.*.disconnect", lambda s, p: got.append((s, p)))
            sub.subscribe("peer.*.connect", lambda s, p: got.append((s, p)))
            await sub.ready()
            for s, m in MESSAGES.items():
                pub.publish(s, m)
            await pub.flush()
            await until(lambda: len(got) == len(MESSAGES) and len(seen) >= len(MESSAGES))
            # A connector's peer.* messages (connect, disconnect, heartbeats) leave on the C
            # client's connection, in order with each other; the rest on nats-py's. NATS
            # orders messages per connection only, and no consumer relies on an order
            # between the two (in a deployment they come from different processes), so
            # each connection's stream is checked in order, not one interleaving of both.
            assert len(got) == len(MESSAGES) and len(seen) == len(wire)
            assert _streams(got) == _streams(list(MESSAGES.items()))
            assert _streams([s for s, _ in seen]) == _streams(wire)
            disc = dict(seen)[wire[4]]
            if scheme == "v3":
                assert disc.startswith(b'{"serverName":"archipelago"')
            else:
                assert disc == encode_payload(MESSAGES["engine.discovery"])
            assert sub.handler_errors == 0

    run(body)


@pytest.mark.parametrize("scheme", ["workers", "v3"])
def test_heartbeats_split_per_peer_and_rebatched(
    nats_server: NatsServer,  # noqa: F811
    scheme: str,
) -> None:
    async def body() -> None:
        async with pub_sub_wire(nats_server.url, scheme) as (pub, sub, wire):
            batches: list[HeartbeatBatch] = []
            plain: list[tuple[str, Heartbeat]] = []
            sub.subscribe_heartbeats(batches.append)
            sub.subscribe(f"peer.{addr(3)}.heartbeat", lambda s, p: plain.append((s, p)))
            await sub.ready()
            b = batch_of(200)
            pub.publish_heartbeats(b)
            await pub.flush()
            await until(lambda: sum(len(x) for x in batches) == 200 and len(wire.seen) == 200)
            prefix = "peer." if scheme == "workers" else "client-proto.peer."
            assert wire.subjects == [f"{prefix}{a}.heartbeat" for a in b.addresses]
            # re-batched on receive: far fewer deliveries than messages
            assert len(batches) < 20, len(batches)
            addrs = [a for x in batches for a in x.addresses]
            assert addrs == list(b.addresses)
            pos = np.concatenate([x.positions for x in batches])
            assert np.array_equal(pos, b.positions)
            rooms = [r for x in batches for r in x.desired_rooms]
            assert rooms == list(b.desired_rooms)
            assert [s for s, _ in plain] == [f"peer.{addr(3)}.heartbeat"]
            assert np.array_equal(np.float32(plain[0][1].position), b.positions[3])

    run(body)


def test_bad_tokens_are_refused_logged_and_counted(
    nats_server: NatsServer,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def body() -> None:
        reg = Registry()
        async with (
            bus_of(nats_server.url, "workers", registry=reg) as bus,
            wire_of(nats_server.url) as wire,
        ):
            raw = wire.nc
            got: list[Any] = []
            bus.subscribe_heartbeats(got.append)
            bus.subscribe("engine.island.*.peer_join", lambda s, p: got.append(p))
            await bus.ready()
            with caplog.at_level(logging.ERROR, logger="dclcomms.nats.pubsub"):
                bus.publish("peer.*.heartbeat", Heartbeat((0.0, 0.0, 0.0)))
                bus.publish("peer.>.disconnect", None)
                bus.publish("peer.0xAB.disconnect", None)
                bus.publish("engine.island.I 1.peer_join", IslandPeer("I 1", addr(1)))
                bus.publish("engine.island.I1.x.peer_join", IslandPeer("I1", addr(1)))
                bus.publish("nope", None)
            m = bus.m_subject_errors
            assert m.get(code="bad_address", direction="publish") == 3
            assert m.get(code="bad_island_id", direction="publish") == 1
            assert m.get(code="bad_subject", direction="publish") == 2
            assert sum("refused NATS subject" in r.getMessage() for r in caplog.records) == 6
            # received: bad tokens and undecodable payloads are dropped, counted
            await raw.publish("peer.0xnotanaddress.heartbeat", encode_payload(Heartbeat((1, 2, 3))))
            await raw.publish("engine.island.I$.peer_join", b"")
            await raw.publish(f"peer.{addr(1)}.heartbeat", b"\xff\xff\xff")
            await raw.publish(f"peer.{addr(2)}.heartbeat", encode_payload(Heartbeat((1, 2, 3))))
            await raw.flush()
            await until(lambda: len(got) == 1)
            await asyncio.sleep(0.1)
            assert len(got) == 1 and list(got[0].addresses) == [addr(2)]
            assert m.get(code="bad_address", direction="receive") == 1
            assert m.get(code="bad_island_id", direction="receive") == 1
            assert bus.m_dropped.get(reason="decode") == 1
            await bus.flush()
            await wire.settle()
            good = {f"peer.{addr(1)}.heartbeat", f"peer.{addr(2)}.heartbeat"}
            assert [s for s in wire.subjects if s not in good] == [
                "peer.0xnotanaddress.heartbeat",
                "engine.island.I$.peer_join",
            ]  # nothing we refused reached NATS
            assert "dcl_nats_subject_errors_total" in reg.render()
            with pytest.raises(SubjectError) as e:
                bus.subscribe("peer.0xZZ.heartbeat", lambda s, p: None)
            assert e.value.code == "bad_address"

    run(body)


def test_several_urls_and_unreachable_servers(nats_server: NatsServer) -> None:  # noqa: F811
    async def body() -> None:
        dead = f"nats://127.0.0.1:{free_port()}"
        bus = await NatsPubSub.connect([dead, nats_server.url], connect_timeout=0.5)
        try:
            assert bus.nc.is_connected
        finally:
            await bus.aclose()
        with pytest.raises(BusError) as e:
            await NatsPubSub.connect([dead], connect_timeout=0.5)
        assert e.value.code == "nats_unavailable"
        with pytest.raises(BusError) as e2:
            await NatsPubSub.connect([])
        assert e2.value.code == "nats_unavailable"

    run(body)


def test_outbox_bound_drops_and_counts(nats_server: NatsServer) -> None:  # noqa: F811
    async def body() -> None:
        bus = await NatsPubSub.connect([nats_server.url], subjects="workers", max_outbox_bytes=100)
        try:
            for i in range(50):  # synchronous: nothing drains in between
                bus.publish(f"engine.island.I{i}.peer_join", IslandPeer(f"I{i}", addr(i)))
            assert bus.m_dropped.get(reason="outbox_full") > 0
            kept = 50 - int(bus.m_dropped.get(reason="outbox_full"))
            await bus.flush()
            assert bus.published == kept
        finally:
            await bus.aclose()
        bus.publish("engine.islands", IslandStatus(()))  # after close: dropped, no raise
        assert bus.m_dropped.get(reason="closed") == 1
        with pytest.raises(BusError) as e:
            bus.subscribe("engine.islands", lambda s, p: None)
        assert e.value.code == "bus_closed"

    run(body)


def test_reconnect_restores_subscriptions(nats_server: NatsServer) -> None:  # noqa: F811
    async def body() -> None:
        async with (
            bus_of(nats_server.url, reconnect_time_wait=0.1) as pub,
            bus_of(nats_server.url, reconnect_time_wait=0.1) as sub,
        ):
            got: list[Any] = []
            sub.subscribe("engine.islands", lambda s, p: got.append(p))
            await sub.ready()
            pub.publish("engine.islands", IslandStatus(()))
            await until(lambda: len(got) == 1)
            await asyncio.to_thread(nats_server.kill)
            await until(lambda: not sub.nc.is_connected and not pub.nc.is_connected)
            pub.publish("engine.islands", IslandStatus(()))  # buffered or dropped, never blocks
            await asyncio.to_thread(nats_server.restart)
            await until(lambda: sub.nc.is_connected and pub.nc.is_connected, timeout=10)
            await until(lambda: sub.m_reconnects.get() >= 1)
            await sub.nc.flush()
            status = IslandStatus((IslandData("I9", (addr(9),), 100, (0.0, 0.0, 0.0), 1.0),))
            pub.publish("engine.islands", status)
            await until(lambda: got[-1] == status, timeout=10)

    run(body)
