"""The hot NATS subjects in C++ (libnats): heartbeats and session resets published by a
connector's C++ client and fed into the engine by the core's, against a real nats-server,
under the three schemes; interoperation with the reference subject layout (a plain
nats-py client publishing and reading per-peer subjects); bad input; order of resets
and heartbeats; the back-off filter; outbox bound; reconnection."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import nats
import numpy as np
import pytest

from dclcomms import codec
from dclcomms.archipelago import Engine
from dclcomms.archipelago.core import ArchipelagoCore
from dclcomms.heartbeats import UNSET
from dclcomms.metrics import Registry
from dclcomms.nats.pubsub import EngineFeed, NatsPubSub, decode_heartbeat_batch
from dclcomms.policy import FixedTransport, RealmPolicy, Transports, WsRoomTransport
from dclcomms.pubsub import (
    Heartbeat,
    HeartbeatBatch,
    IslandChanged,
    IslandData,
    IslandStatus,
)
from tests.helpers.nats_fixtures import (
    NatsServer,
    nats_server,  # noqa: F401 - fixture
)
from tests.helpers.pubsub import addr, batch_of, run, until

HB = "decentraland.kernel.comms.v3.Heartbeat"
PREFIX = {"workers": "peer.", "v3": "client-proto.peer."}


def engine() -> Engine:
    return Engine(join_distance=64.0, leave_distance=80.0, max_island_size=100)


def positions(e: Engine) -> dict[str, tuple[float, float, float]]:
    snap = e.snapshot()
    rows = snap.positions.tolist()
    return {p: (r[0], r[1], r[2]) for p, r in zip(snap.peer_ids.tolist(), rows, strict=True)}


@contextlib.asynccontextmanager
async def fed_engine(
    url: str, scheme: str, raw_cb: Callable[[Any], Awaitable[None]]
) -> AsyncIterator[tuple[NatsPubSub, NatsPubSub, Engine, EngineFeed]]:
    """A publishing C++ client, a C++ client feeding a fresh engine and a plain nats-py
    client subscribed to every subject with ``raw_cb``, all ready; all closed on the way
    out."""
    pub = await NatsPubSub.connect([url], subjects=scheme)
    sub = await NatsPubSub.connect([url], subjects=scheme)
    raw = await nats.connect(url)
    e = engine()
    feed = None
    try:
        await raw.subscribe(">", cb=raw_cb)
        feed = sub.feed_engine(e)
        assert feed is not None
        await sub.ready()
        await raw.flush()
        yield pub, sub, e, feed
    finally:
        if feed is not None:
            feed.close()
        await raw.close()
        await pub.aclose()
        await sub.aclose()


@pytest.mark.parametrize("scheme", ["native", "workers", "v3"])
def test_c_client_publishes_and_feeds_the_engine(
    nats_server: NatsServer,  # noqa: F811
    scheme: str,
) -> None:
    async def body() -> None:
        seen: list[tuple[str, bytes]] = []

        async def raw_cb(m: Any) -> None:
            seen.append((m.subject, m.data))

        async with fed_engine(nats_server.url, scheme, raw_cb) as (pub, sub, e, feed):
            assert pub.c_client is not None and sub.c_client is not None
            b = batch_of(300)
            pub.publish_heartbeats(b)
            await pub.flush()
            await until(lambda: e.peer_count == 300)
            feed.settle()
            got = positions(e)
            for i, a in enumerate(b.addresses):
                assert np.array_equal(np.float32(got[a]), b.positions[i]), a
            st = feed.stats()
            assert st["heartbeats"] == 300 and st["dropped_decode"] == 0
            await until(lambda: len(seen) == (1 if scheme == "native" else 300))
            if scheme == "native":
                assert seen[0][0] == "dclcomms.v1.heartbeats"
                back = decode_heartbeat_batch(seen[0][1])
                assert list(back.addresses) == list(b.addresses)
                assert np.array_equal(back.positions, b.positions)
                assert list(back.desired_rooms) == list(b.desired_rooms)
            else:
                # the reference layout: one Heartbeat per peer subject, in batch order
                assert [s for s, _ in seen] == [
                    f"{PREFIX[scheme]}{a}.heartbeat" for a in b.addresses
                ]
                for (_s, data), a, p, r in zip(
                    seen, b.addresses, b.positions.tolist(), b.desired_rooms, strict=True
                ):
                    assert data == Heartbeat((p[0], p[1], p[2]), r).to_bytes(), a
            # The preferred island of row 0 ("I7") reached the engine: a flush puts it
            # on a new island (I7 does not exist), and nothing was refused.
            assert e.flush()

    run(body)


@pytest.mark.parametrize("scheme", ["workers", "v3"])
def test_reference_layout_heartbeats_reach_the_engine(
    nats_server: NatsServer,  # noqa: F811
    scheme: str,
) -> None:
    """A reference connector (plain per-peer subjects, nats-py) feeding our C++ core;
    bad subjects and payloads are counted, the rest applied."""

    async def body() -> None:
        sub = await NatsPubSub.connect([nats_server.url], subjects=scheme)
        raw = await nats.connect(nats_server.url)
        e = engine()
        feed = sub.feed_engine(e)
        assert feed is not None
        try:
            await sub.ready()
            for i in range(20):
                msg = {"position": {"x": float(i), "y": 0.0, "z": 1.0}}
                if i == 3:
                    msg["desiredRoom"] = "I3"
                await raw.publish(f"{PREFIX[scheme]}{addr(i)}.heartbeat", codec.encode(HB, msg))
            await raw.publish(f"{PREFIX[scheme]}{addr(50)}.heartbeat", b"\xff")  # undecodable
            await raw.publish(f"{PREFIX[scheme]}0xABC.heartbeat", Heartbeat((1, 2, 3)).to_bytes())
            await raw.publish(f"{PREFIX[scheme]}{addr(51)}.heartbeat", b"")  # no position
            bad = f"{PREFIX[scheme]}{addr(52)}.heartbeat"
            await raw.publish(bad, codec.encode(HB, {"position": {"x": float("nan")}}))
            await raw.flush()
            await until(lambda: feed.stats()["received"] >= 24)
            feed.settle()
            st = feed.stats()
            assert e.peer_count == 20
            assert positions(e)[addr(7)] == (7.0, 0.0, 1.0)
            assert st["dropped_decode"] == 1
            assert st["no_position"] == 1
            assert st["invalid_position"] == 1
            assert sub.m_dropped.get(reason="decode") == 1
            assert sub.m_subject_errors.get(code="bad_address", direction="receive") == 1
        finally:
            feed.close()
            await raw.close()
            await sub.aclose()

    run(body)


@pytest.mark.parametrize("scheme", ["native", "workers", "v3"])
def test_resets_stay_in_order_with_heartbeats(
    nats_server: NatsServer,  # noqa: F811
    scheme: str,
) -> None:
    async def body() -> None:
        pub = await NatsPubSub.connect([nats_server.url], subjects=scheme)
        sub = await NatsPubSub.connect([nats_server.url], subjects=scheme)
        e = engine()
        feed = sub.feed_engine(e)
        assert feed is not None
        try:
            await sub.ready()
            one = HeartbeatBatch([addr(1)], np.zeros((1, 3), np.float32), [UNSET])
            for _ in range(50):  # heartbeat, disconnect: gone; connect, heartbeat: there
                pub.publish_heartbeats(one)
                pub.publish(f"peer.{addr(1)}.disconnect", None)
                pub.publish(f"peer.{addr(2)}.connect", None)
                pub.publish_heartbeats(
                    HeartbeatBatch([addr(2)], np.ones((1, 3), np.float32), [UNSET])
                )
            await pub.flush()
            await until(lambda: feed.stats()["resets"] == 100)
            feed.settle()
            assert set(positions(e)) == {addr(2)}
            assert feed.stats()["heartbeats"] == 100
        finally:
            feed.close()
            await pub.aclose()
            await sub.aclose()

    run(body)


def _core(bus: NatsPubSub, registry: Registry) -> ArchipelagoCore:
    policy = RealmPolicy(
        Transports(
            WsRoomTransport("ws://127.0.0.1:1", "unused-secret"),
            fixed=FixedTransport("offline:offline"),
        )
    )
    return ArchipelagoCore(
        engine(), bus, policy, registry=registry, reject_backoff_ms=60_000, world_bound_m=4096.0
    )


@pytest.mark.parametrize("scheme", ["native", "workers", "v3"])
def test_core_fed_in_cpp_ticks_and_publishes(
    nats_server: NatsServer,  # noqa: F811
    scheme: str,
) -> None:
    async def body() -> None:
        connector = await NatsPubSub.connect([nats_server.url], subjects=scheme)
        bus = await NatsPubSub.connect([nats_server.url], subjects=scheme)
        core = _core(bus, Registry())
        try:
            assert core.fed_in_cpp
            changed: dict[str, IslandChanged] = {}
            connector.subscribe(
                "engine.peer.*.island_changed", lambda s, m: changed.__setitem__(s.split(".")[2], m)
            )
            await connector.ready()
            await bus.ready()
            b = batch_of(40)
            connector.publish_heartbeats(b)
            await connector.flush()
            await until(lambda: core.engine.peer_count == 40)
            report = core.tick()
            assert report.island_changed == 40
            assert core.metrics.heartbeats.get() == 40
            await until(lambda: len(changed) == 40)
            assert set(changed) == set(b.addresses)
            # a peer in back-off: its heartbeats are filtered (and counted) in C++
            core._feed.set_backoff({addr(1): 2**62})
            connector.publish_heartbeats(b)
            await connector.flush()
            await until(
                lambda: (
                    core._feed.stats()["backoff_dropped"] == 1
                    and core._feed.stats()["heartbeats"] == 79
                )
            )
            core.sync_feed(settle=True)
            assert core.metrics.backoff_dropped.get() == 1
            assert core.metrics.heartbeats.get() == 79
            # beyond the world bound, or not finite: dropped and counted, the rest applied
            far = HeartbeatBatch(
                [addr(100), addr(101), addr(102)],
                np.array([[5000, 0, 0], [0, 0, 1], [0, float("inf"), 0]], np.float32),
                [UNSET] * 3,
            )
            connector.publish_heartbeats(far)
            await connector.flush()
            await until(
                lambda: (
                    core._feed.stats()["out_of_bounds"] == 1
                    and core._feed.stats()["heartbeats"] == 80
                )
            )
            core.sync_feed(settle=True)
            assert core.metrics.rejected_positions.get(reason="out_of_bounds") == 1
            assert core.metrics.rejected_positions.get(reason="invalid") == 1
            assert core.metrics.heartbeats.get() == 80
        finally:
            core.close()
            await connector.aclose()
            await bus.aclose()

    run(body)


# Addresses the C++ client refuses: the same rule as ADDRESS_RE (what the Python check
# before it applied), including characters outside ASCII and a NUL.
BAD_ADDRESSES = [
    "0xAB",
    "0x" + "G" * 40,
    "0x" + "A" * 40,  # uppercase
    "0X" + "a" * 40,
    "0x" + "a" * 39 + "\0",
    "0x" + "\u0663" * 40,  # Arabic-Indic digit three: a digit, not [0-9]
    "0x" + "a" * 41,
    "peer.*",
]


@pytest.mark.parametrize("scheme", ["workers", "v3"])
def test_c_client_refuses_logs_and_counts_bad_addresses(
    nats_server: NatsServer,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
    scheme: str,
) -> None:
    """A batch with bad addresses: only its good rows reach NATS (in order) and the
    engine; each bad one is counted once (bad_address, publish) and logged once."""

    async def body() -> None:
        seen: list[str] = []

        async def raw_cb(m: Any) -> None:
            seen.append(m.subject)

        async with fed_engine(nats_server.url, scheme, raw_cb) as (pub, _sub, e, _feed):
            assert pub.c_client is not None
            good = batch_of(len(BAD_ADDRESSES) + 1)
            mixed: list[str] = []
            for i, a in enumerate(good.addresses):  # good, bad, good, bad, ..., good
                mixed.append(a)
                if i < len(BAD_ADDRESSES):
                    mixed.append(BAD_ADDRESSES[i])
            rows = [i for i, a in enumerate(mixed) if a in good.addresses]
            positions_ = np.zeros((len(mixed), 3), np.float32)
            positions_[rows] = good.positions
            batch = HeartbeatBatch(mixed, positions_, [UNSET] * len(mixed))
            with caplog.at_level(logging.ERROR, logger="dclcomms.nats.pubsub"):
                pub.publish_heartbeats(batch)
            m = pub.m_subject_errors
            assert m.get(code="bad_address", direction="publish") == len(BAD_ADDRESSES)
            refused = [r for r in caplog.records if "refused NATS subject" in r.getMessage()]
            assert [r.__dict__["subject"] for r in refused] == [
                f"peer.{a}.heartbeat" for a in BAD_ADDRESSES
            ]
            await pub.flush()
            await until(lambda: e.peer_count == len(good))
            assert sorted(positions(e)) == sorted(good.addresses)
            await until(lambda: len(seen) == len(good))
            await asyncio.sleep(0.1)
            assert seen == [f"{PREFIX[scheme]}{a}.heartbeat" for a in good.addresses]
            # rows the outbox cannot take: dropped and counted as such, no address refused
            caplog.clear()
            small = await NatsPubSub.connect(
                [nats_server.url], subjects=scheme, max_outbox_bytes=400
            )
            try:
                with caplog.at_level(logging.ERROR, logger="dclcomms.nats.pubsub"):
                    small.publish_heartbeats(batch_of(100))
                assert small.m_dropped.get(reason="outbox_full") == 100
                assert small.m_subject_errors.get(code="bad_address", direction="publish") == 0
                assert not [r for r in caplog.records if "refused" in r.getMessage()]
            finally:
                await small.aclose()

    run(body)


def test_c_outbox_bound_and_reconnect(nats_server: NatsServer) -> None:  # noqa: F811
    async def body() -> None:
        small = await NatsPubSub.connect(
            [nats_server.url], subjects="workers", max_outbox_bytes=400
        )
        try:
            small.publish_heartbeats(batch_of(100))  # beyond the bound: every row dropped
            assert small.m_dropped.get(reason="outbox_full") == 100
            await small.flush()
            assert small.published == 0
        finally:
            await small.aclose()

        pub = await NatsPubSub.connect(
            [nats_server.url], subjects="native", reconnect_time_wait=0.1
        )
        reg = Registry()
        sub = await NatsPubSub.connect(
            [nats_server.url], subjects="native", reconnect_time_wait=0.1, registry=reg
        )
        e = engine()
        feed = sub.feed_engine(e)
        assert feed is not None
        try:
            await sub.ready()
            pub.publish_heartbeats(batch_of(10))
            await until(lambda: e.peer_count == 10)
            await asyncio.to_thread(nats_server.kill)
            await until(lambda: not sub.connected and not pub.connected)
            pub.publish_heartbeats(batch_of(20))  # buffered or dropped, never blocks
            await asyncio.to_thread(nats_server.restart)
            await until(lambda: sub.connected and pub.connected, timeout=10)
            await sub.flush()
            pub.publish_heartbeats(batch_of(30))
            await until(lambda: e.peer_count == 30, timeout=10)
            st = feed.stats()
            assert st["reconnects"] >= 1
            # the C++ client's own reconnections, on the registry's render
            assert registry_value(reg, 'dcl_nats_c_reconnects_total{client="dclcomms"}') >= 1
            assert registry_value(reg, 'dcl_nats_c_connected{client="dclcomms"}') == 1
        finally:
            feed.close()
            await pub.aclose()
            await sub.aclose()

    run(body)


def registry_value(reg: Registry, series: str) -> float:
    """The value of ``series`` (name and labels as rendered) in ``reg``'s exposition."""
    for line in reg.render().splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{series} not rendered")


def test_python_client_still_available(nats_server: NatsServer) -> None:  # noqa: F811
    """c_client=False: everything through nats-py, the core subscribes in Python."""

    async def body() -> None:
        bus = await NatsPubSub.connect([nats_server.url], subjects="workers", c_client=False)
        try:
            assert bus.c_client is None
            assert bus.feed_engine(engine()) is None
            core = _core(bus, Registry())
            assert not core.fed_in_cpp
            core.close()
        finally:
            await bus.aclose()

    run(body)


def test_beyond_max_payload_is_dropped_counted_and_the_rest_goes(
    nats_server: NatsServer,  # noqa: F811
) -> None:
    """engine.islands of a big realm exceeds the server's 1 MiB max_payload: that message
    is dropped and counted (nats-py path), the ones queued after it still go out."""

    async def body() -> None:
        pub = await NatsPubSub.connect([nats_server.url], subjects="native")
        sub = await NatsPubSub.connect([nats_server.url], subjects="native")
        try:
            got: list[IslandStatus] = []
            sub.subscribe("engine.islands", lambda s, m: got.append(m))
            await sub.ready()
            peers = tuple(addr(i) for i in range(30_000))  # ~1.3 MB encoded
            big = IslandStatus((IslandData("I1", peers, 100, (0.0, 0.0, 0.0), 1.0),))
            small = IslandStatus((IslandData("I2", (addr(1),), 100, (0.0, 0.0, 0.0), 1.0),))
            pub.publish("engine.islands", big)
            pub.publish("engine.islands", small)
            await pub.flush()
            await until(lambda: len(got) == 1)
            assert got[0] == small
            assert pub.m_dropped.get(reason="max_payload") == 1
        finally:
            await pub.aclose()
            await sub.aclose()

    run(body)


def test_island_changes_typed_decoder_matches_the_generic_codec() -> None:
    """decode_island_changes uses the typed C++ decoder; same result as the generic codec
    on random messages, ValueError on malformed ones."""
    from dclcomms import _core
    from dclcomms.nats.pubsub import _IslandGroup, decode_island_changes
    from dclcomms.pubsub import IslandMembers

    rng = np.random.default_rng(3)
    for k in range(50):
        n = int(rng.integers(0, 6))
        members = IslandMembers(
            {addr(1000 * k + i): (float(i), 0.0, float(-i)) for i in range(int(rng.integers(1, 5)))}
        )
        g = _IslandGroup(f"I{k}", members)
        for i in range(n):
            g.addrs.append(addr(10 * k + i))
            g.conn_strs.append("" if i % 3 == 0 else f"ws-room:x/{k}/{i}?é")
            g.from_ids.append("" if i % 2 else f"I{i}")
        data = g.encode()
        generic = codec.decode("dclcomms.nats.v1.IslandChanges", data)
        island, peers, raw, conn, froms = _core.nats_decode_island_changes(data)
        assert island == generic.get("islandId", "")
        assert peers == members.to_bytes()
        assert conn == generic.get("connStrs", []) and froms == generic.get("fromIslandIds", [])
        assert len(raw) == 20 * n
        got = decode_island_changes(data)
        assert [a for a, _ in got] == g.addrs
        assert [m.conn_str for _, m in got] == g.conn_strs
        assert [m.from_island_id for _, m in got] == [f or None for f in g.from_ids]
        assert all(m.peers == members for _, m in got)
    for bad in (b"\x08\x01", b"\x0a\x05I1", b"\xff\xff", b"\x1a\x03abc"):
        with pytest.raises(ValueError):
            decode_island_changes(bad)
