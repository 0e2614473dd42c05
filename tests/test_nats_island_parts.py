"""engine.islands beyond the NATS server's max_payload: published in parts, joined again.

Pure tests of the split and the assembler (every reject path), then a real nats-server
whose max_payload is 4 KiB (configuration file): the core's status travels in parts that
each fit and that a plain protobuf reader (the official runtime, as the reference services
read it) accepts as an IslandStatusMessage; the stats service shows every island; a
snapshot with a part missing is never shown.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import nats
import numpy as np
import pytest

from dclcomms import _core
from dclcomms.archipelago import Engine
from dclcomms.archipelago.core import ArchipelagoCore
from dclcomms.errors import DecodeError, EncodeError
from dclcomms.heartbeats import UNSET
from dclcomms.nats.processes import StatsService
from dclcomms.nats.pubsub import NatsPubSub
from dclcomms.nats.status_parts import (
    PART_HEADER_MAX,
    IslandStatusAssembler,
    IslandStatusTooLarge,
    parse_part,
    part_header,
    split_island_status,
)
from dclcomms.policy import FixedTransport, RealmPolicy, Transports, WsRoomTransport
from dclcomms.pubsub import HeartbeatBatch, IslandData, IslandStatus
from tests.helpers.codec_schema import message_class
from tests.helpers.common import realm_config, run
from tests.helpers.nats_fixtures import NatsServer

MAX_PAYLOAD = 4096
V3 = "decentraland.kernel.comms.v3."


def addr(i: int) -> str:
    return f"0x{i:040x}"


def status(islands: int, per_island: int, first: int = 0) -> IslandStatus:
    return IslandStatus(
        tuple(
            IslandData(
                f"I{k + 1}",
                tuple(addr(first + k * per_island + j) for j in range(per_island)),
                100,
                (float(k * 300), 0.0, 5.0),
                float(k) + 0.5,
            )
            for k in range(islands)
        )
    )


def reference_decode(data: bytes) -> list[tuple[str, list[str]]]:
    """What a protobuf reader that knows only the reference schema sees."""
    m = message_class(V3 + "IslandStatusMessage").FromString(data)
    return [(d.id, list(d.peers)) for d in m.data]


# --- the split ---------------------------------------------------------------------


def test_a_status_that_fits_is_sent_whole() -> None:
    data = status(3, 4).to_bytes()
    assert split_island_status(data, len(data), 7) == [data]
    assert parse_part(data) is None


def test_split_parts_fit_carry_whole_islands_and_read_as_reference_messages() -> None:
    s = status(60, 9)
    data = s.to_bytes()
    assert len(data) > 5 * MAX_PAYLOAD
    parts = split_island_status(data, MAX_PAYLOAD, 1234567890123)
    assert len(parts) > 5
    seen: list[tuple[str, list[str]]] = []
    header_class = message_class("dclcomms.nats.v1.IslandStatusPart")
    for i, p in enumerate(parts):
        assert len(p) <= MAX_PAYLOAD
        part = parse_part(p)
        assert part is not None
        assert (part.snapshot, part.index, part.count) == (1234567890123, i, len(parts))
        # field 1000 is an IslandStatusPart for the protobuf runtime too
        length = p[2]
        h = header_class.FromString(p[3 : 3 + length])
        assert (h.snapshot, h.index, h.count) == (1234567890123, i, len(parts))
        # a reader that does not know field 1000 sees whole islands
        islands = reference_decode(p)
        assert islands and islands == reference_decode(part.body)
        seen += islands
    assert seen == reference_decode(data)
    assert IslandStatus.from_bytes(b"".join(parse_part(p).body for p in parts)) == s  # type: ignore[union-attr]


def test_the_cpp_split_writes_the_same_bytes() -> None:
    """The core's C++ tick (native scheme) splits with _core.nats_split_island_status."""
    for islands, per_island, max_payload in ((60, 9, MAX_PAYLOAD), (300, 3, 1000), (5, 2, 10_000)):
        data = status(islands, per_island).to_bytes()
        for snapshot in (0, 1, 2**40 + 3, 2**64 - 1):
            got = _core.nats_split_island_status(data, max_payload, snapshot)
            assert got == split_island_status(data, max_payload, snapshot)
    with pytest.raises(EncodeError) as e:
        _core.nats_split_island_status(status(2, 200).to_bytes(), MAX_PAYLOAD, 1)
    assert e.value.code == "max_payload"
    with pytest.raises(DecodeError):
        _core.nats_split_island_status(b"\x0a\x7f" + b"x" * 5000, MAX_PAYLOAD, 1)


def test_an_island_too_large_for_a_part_is_refused() -> None:
    data = status(2, 200).to_bytes()  # ~9 KB per island
    with pytest.raises(IslandStatusTooLarge) as e:
        split_island_status(data, MAX_PAYLOAD, 1)
    assert e.value.code == "max_payload"


def test_split_rejects_a_malformed_message() -> None:
    with pytest.raises(ValueError, match="truncated"):
        split_island_status(b"\x0a\x7f" + b"x" * 5000, MAX_PAYLOAD, 1)
    with pytest.raises(ValueError, match="wire type 3"):
        split_island_status(b"\x0b" + b"x" * 5000, MAX_PAYLOAD, 1)


def test_part_headers_bounded() -> None:
    h = part_header(2**64 - 1, 65_535, 65_536)
    assert len(h) <= PART_HEADER_MAX


# --- joining -------------------------------------------------------------------------


def parts_of(s: IslandStatus, snapshot: int) -> list[bytes]:
    return split_island_status(s.to_bytes(), MAX_PAYLOAD, snapshot)


def test_assembler_joins_a_snapshot_in_any_order() -> None:
    s = status(30, 9)
    parts = parts_of(s, 5)
    a = IslandStatusAssembler()
    out = [a.add(p) for p in reversed(parts)]
    assert out[:-1] == [None] * (len(parts) - 1)
    assert out[-1] is not None and IslandStatus.from_bytes(out[-1]) == s
    assert (a.incomplete, a.invalid) == (0, 0)


def test_a_missing_part_never_yields_a_partial_snapshot() -> None:
    first, second = status(30, 9), status(25, 9, first=1000)
    a = IslandStatusAssembler()
    p1, p2 = parts_of(first, 1), parts_of(second, 2)
    assert all(a.add(p) is None for i, p in enumerate(p1) if i != 2)  # part 2 lost
    out = [a.add(p) for p in p2]
    assert out[:-1] == [None] * (len(p2) - 1)
    assert out[-1] is not None and IslandStatus.from_bytes(out[-1]) == second
    assert a.incomplete == 1
    # the late part of the given-up snapshot starts it again, never completes it alone
    assert a.add(p1[2]) is None


def test_a_whole_message_supersedes_unfinished_snapshots() -> None:
    a = IslandStatusAssembler()
    assert a.add(parts_of(status(30, 9), 1)[0]) is None
    whole = status(2, 2).to_bytes()
    assert a.add(whole) == whole
    assert a.incomplete == 1


def test_too_many_unfinished_snapshots_are_given_up_oldest_first() -> None:
    a = IslandStatusAssembler(max_pending=2)
    for snap in (1, 2, 3):
        assert a.add(parts_of(status(30, 9), snap)[0]) is None
    assert a.incomplete == 1
    rest = parts_of(status(30, 9), 1)[1:]
    assert all(a.add(p) is None for p in rest)  # snapshot 1 was given up: starts over


def test_pending_parts_are_bounded_in_bytes() -> None:
    """A publisher announcing many large parts cannot make a reader hold them all."""
    a = IslandStatusAssembler(max_pending_bytes=3 * MAX_PAYLOAD)
    big = parts_of(status(60, 9), 1)  # > 5 parts of ~4 KB
    assert len(big) > 3
    assert a.add(big[0]) is None and a.add(big[1]) is None
    with pytest.raises(ValueError, match="exceeds"):
        for p in big[2:]:
            a.add(p)
    assert a.invalid == 1 and a.pending_bytes == 0
    # an unfinished older snapshot makes room for a newer one (given up, counted)
    small = parts_of(status(20, 9), 2)
    assert a.add(parts_of(status(60, 9), 3)[0]) is None
    assert a.add(parts_of(status(60, 9), 3)[1]) is None
    out = [a.add(p) for p in small]
    assert out[-1] is not None and IslandStatus.from_bytes(out[-1]) == status(20, 9)
    assert a.incomplete == 1 and a.pending_bytes == 0


@pytest.mark.parametrize(
    ("header", "error"),
    [
        (part_header(1, 3, 3), "index 3 of 3"),
        (b"\xc2\x3e\x04\x08\x01\x10\x00", "index 0 of 0"),  # no count
        (b"\xc2\x3e\x02\x18\x02", "index 0 of 2"),  # no snapshot
        (b"\xc2\x3e\x03\x08\x01\x18", "truncated"),
        (b"\xc2\x3e\x05\x0a\x01\x00\x18\x01", "wire type 2"),
        (b"\xc2\x3e\xff\x7f\x08\x01", "truncated"),
        (part_header(1, 0, 70_000), "of 70000"),
    ],
)
def test_malformed_part_headers_are_refused(header: bytes, error: str) -> None:
    a = IslandStatusAssembler()
    with pytest.raises(ValueError, match=error):
        a.add(header + status(1, 1).to_bytes())
    assert a.invalid == 1


def test_inconsistent_or_duplicate_parts_drop_the_snapshot() -> None:
    parts = parts_of(status(30, 9), 9)
    a = IslandStatusAssembler()
    assert a.add(parts[0]) is None
    with pytest.raises(ValueError, match="each once"):
        a.add(parts[0])
    assert a.invalid == 1
    # the snapshot is gone: its other parts start it over and cannot complete it
    assert all(a.add(p) is None for p in parts[1:])
    body = parse_part(parts[1])
    assert body is not None
    with pytest.raises(ValueError, match="expected"):
        a.add(part_header(9, 0, body.count + 1) + body.body)
    assert a.invalid == 2


# --- over a real nats-server with a small max_payload ----------------------------------


def small_payload_server(tmp_path: Path) -> NatsServer:
    conf = tmp_path / "nats.conf"
    conf.write_text(f"max_payload: {MAX_PAYLOAD}\n")
    s = NatsServer("small", log_dir=tmp_path, config=conf).start()
    s.wait_ready()
    return s


def make_core(bus: NatsPubSub) -> ArchipelagoCore:
    ws_room = WsRoomTransport("ws://127.0.0.1:1", "unused-secret")
    policy = RealmPolicy(Transports(ws_room, fixed=FixedTransport("offline:offline")))
    engine = Engine(join_distance=64.0, leave_distance=80.0, max_island_size=100)
    return ArchipelagoCore(engine, bus, policy, heartbeat_timeout_ms=3_600_000)


async def get_json(url: str) -> Any:
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        assert r.status == 200, await r.text()
        return await r.json()


GROUPS, PER_GROUP = 40, 8


def heartbeats() -> HeartbeatBatch:
    pos = np.zeros((GROUPS * PER_GROUP, 3), dtype=np.float32)
    for g in range(GROUPS):
        for j in range(PER_GROUP):
            pos[g * PER_GROUP + j] = (g * 500.0, 0.0, j * 4.0)
    n = GROUPS * PER_GROUP
    return HeartbeatBatch([addr(i) for i in range(n)], pos, [UNSET] * n)


@pytest.mark.parametrize(
    ("subjects", "c_client"),
    [("workers", True), ("v3", True), ("native", True), ("native", False), ("workers", False)],
)
def test_stats_shows_every_island_of_a_split_status(
    tmp_path: Path, subjects: str, c_client: bool
) -> None:
    """Also: native heartbeat batches larger than max_payload go in several messages."""
    server = small_payload_server(tmp_path)

    async def body() -> None:
        buses: list[NatsPubSub] = []

        async def bus() -> NatsPubSub:
            b = await NatsPubSub.connect([server.url], subjects=subjects, c_client=c_client)
            buses.append(b)
            return b

        raw = await nats.connect(server.url)
        stats: StatsService | None = None
        core: ArchipelagoCore | None = None
        try:
            assert raw.max_payload == MAX_PAYLOAD  # from the server's INFO
            wire = "archipelago.islands" if subjects == "v3" else "engine.islands"
            seen: list[bytes] = []

            async def on_raw(msg: Any) -> None:
                seen.append(msg.data)

            await raw.subscribe(wire, cb=on_raw)
            await raw.flush()
            stats = await StatsService(realm_config(), await bus()).start()
            core = make_core(await bus())
            # native + C++ client: the C++ tick publishes the status (split in C++)
            assert core._cpp_tick == (subjects == "native" and c_client)
            connector = await bus()
            for b in buses:
                await b.ready()
            batch = heartbeats()
            connector.publish_heartbeats(batch)
            await connector.flush()
            deadline = time.monotonic() + 10
            while True:  # the core has every peer on its island
                core.sync_feed(settle=True)
                core.tick()
                if core.engine.island_count == GROUPS and core.engine.peer_count == len(batch):
                    break
                assert time.monotonic() < deadline, core.engine
                await asyncio.sleep(0.05)
            expected = {i.id: set(i.peers) for i in core.engine.islands()}
            assert sum(map(len, expected.values())) == len(batch)
            core.tick()  # one more status, with every island
            await buses[1].flush()
            while True:  # stats: every island with every member
                got = await get_json(f"{stats.url}/islands")
                shown = {i["id"]: {p["address"] for p in i["peers"]} for i in got["islands"]}
                if shown == expected:
                    break
                assert time.monotonic() < deadline, (len(shown), len(expected))
                await asyncio.sleep(0.05)
            # on the wire: parts under max_payload, each a valid reference message
            await raw.flush()
            split = [p for p in seen if parse_part(p) is not None]
            assert split, "the status should have needed parts"
            for p in seen:  # (the first ticks' statuses may be empty: no island yet)
                assert len(p) <= MAX_PAYLOAD
                islands = reference_decode(p)  # a valid message for a reference reader
                assert islands or parse_part(p) is None
            last = parse_part(split[-1])
            assert last is not None and last.count > 1
            for b in buses:
                b._sync_c()
                assert b.m_dropped.get(reason="max_payload") == 0
            assert buses[0].m_dropped.get(reason="islands_incomplete") == 0
        finally:
            if core is not None:
                core.close()
            if stats is not None:
                await stats.stop()
            for b in buses:
                await b.aclose()
            await raw.close()

    try:
        run(body)
    finally:
        server.stop()


def test_stats_never_shows_a_snapshot_with_a_missing_part(tmp_path: Path) -> None:
    server = small_payload_server(tmp_path)

    async def body() -> None:
        bus = await NatsPubSub.connect([server.url], subjects="workers")
        raw = await nats.connect(server.url)
        stats = await StatsService(realm_config(), bus).start()
        try:
            await bus.ready()
            # the peers' heartbeats, so stats lists them on their islands
            total = GROUPS * PER_GROUP
            hb = await NatsPubSub.connect([server.url], subjects="workers")
            try:
                hb.publish_heartbeats(heartbeats())
                await hb.flush()
            finally:
                await hb.aclose()

            def snapshot(first: int, n_islands: int) -> IslandStatus:
                return IslandStatus(
                    tuple(
                        IslandData(
                            f"I{first + k}",
                            tuple(addr(k * PER_GROUP + j) for j in range(PER_GROUP)),
                            100,
                            (k * 500.0, 0.0, 14.0),
                            14.0,
                        )
                        for k in range(n_islands)
                    )
                )

            async def shown() -> dict[str, int]:
                got = await get_json(f"{stats.url}/islands")
                return {i["id"]: len(i["peers"]) for i in got["islands"]}

            async def wait_for(expected: dict[str, int]) -> None:
                deadline = time.monotonic() + 10
                while (s := await shown()) != expected:
                    assert time.monotonic() < deadline, s
                    await asyncio.sleep(0.05)

            first = snapshot(1, GROUPS)
            for p in split_island_status(first.to_bytes(), MAX_PAYLOAD, 100):
                await raw.publish("engine.islands", p)
            await raw.flush()
            await wait_for({f"I{1 + k}": PER_GROUP for k in range(GROUPS)})
            assert total == GROUPS * PER_GROUP
            # the next snapshot loses one part: stats keeps showing the whole first one
            second = split_island_status(snapshot(1000, GROUPS).to_bytes(), MAX_PAYLOAD, 101)
            assert len(second) > 2
            for i, p in enumerate(second):
                if i != 1:
                    await raw.publish("engine.islands", p)
            await raw.flush()
            await bus.flush()
            await asyncio.sleep(0.3)
            assert await shown() == {f"I{1 + k}": PER_GROUP for k in range(GROUPS)}
            # a complete third one replaces it; the second is counted as given up
            third = snapshot(2000, GROUPS // 2)
            for p in split_island_status(third.to_bytes(), MAX_PAYLOAD, 102):
                await raw.publish("engine.islands", p)
            await raw.flush()
            await wait_for({f"I{2000 + k}": PER_GROUP for k in range(GROUPS // 2)})
            assert bus.m_dropped.get(reason="islands_incomplete") == 1
            # a malformed part is dropped as undecodable, nothing shown changes
            await raw.publish("engine.islands", part_header(103, 5, 2) + third.to_bytes()[:50])
            await raw.flush()
            await bus.flush()
            deadline = time.monotonic() + 5
            while bus.m_dropped.get(reason="decode") < 1:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            assert await shown() == {f"I{2000 + k}": PER_GROUP for k in range(GROUPS // 2)}
        finally:
            await stats.stop()
            await bus.aclose()
            await raw.close()

    try:
        run(body)
    finally:
        server.stop()
