"""``engine.islands`` larger than the NATS server's ``max_payload``, in parts.

The core publishes every island's member list in one ``IslandStatusMessage`` each tick
(~44 bytes per peer: beyond nats-server's default 1 MiB ``max_payload`` from ~25,000
peers). :func:`split_island_status` cuts such a message into parts that each fit:

* every part is itself a valid ``decentraland.kernel.comms.v3.IslandStatusMessage``
  holding whole islands (field 1 ``data``, the original entries byte for byte, in order);
* every part starts with field 1000, ``dclcomms.nats.v1.IslandStatusPart{snapshot,
  index, count}`` (``proto/dclcomms/nats/v1/batches.proto``), which protobuf readers that
  do not know it (the reference services) skip as an unknown field.

A message that fits is sent as it is, without field 1000, exactly as before.
:class:`IslandStatusAssembler` (the receiving :class:`~dclcomms.nats.pubsub.NatsPubSub`)
joins the parts of one snapshot back into one message and hands it on only when every
part has arrived: a snapshot with a part missing, duplicated or inconsistent is dropped
whole (counted), so a reader never sees a partial island list as the realm's state.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PART_FIELD = 1000
# (1000 << 3) | 2 as a varint: the tag of field 1000, length-delimited
PART_TAG = bytes((0xC2, 0x3E))
# Tag + length + snapshot (uint64) + index + count (uint32 each), at most.
PART_HEADER_MAX = len(PART_TAG) + 1 + (1 + 10) + 2 * (1 + 5)
MAX_PARTS = 65_536


class IslandStatusTooLarge(ValueError):
    """One island's entry alone does not fit in a part (max_payload too small)."""

    code = "max_payload"


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _read_varint(data: bytes | memoryview, pos: int) -> tuple[int, int]:
    shift = n = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated or overlong varint")
        b = data[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        if b < 0x80:
            return n, pos
        shift += 7


def part_header(snapshot: int, index: int, count: int) -> bytes:
    """Field 1000 of one part: IslandStatusPart{snapshot, index, count}."""
    body = b"\x08" + _varint(snapshot)
    if index:
        body += b"\x10" + _varint(index)
    body += b"\x18" + _varint(count)
    return PART_TAG + _varint(len(body)) + body


def split_island_status(data: bytes, max_payload: int, snapshot: int) -> list[bytes]:
    """An encoded IslandStatusMessage as parts of at most ``max_payload`` bytes each.

    ``[data]`` when it fits. Otherwise whole islands are packed in order, each part
    headed by field 1000 (``snapshot``, its index, the number of parts); fields other
    than ``data`` (none are defined) are not carried. Raises
    :class:`IslandStatusTooLarge` when one island's entry cannot fit in a part.
    """
    if len(data) <= max_payload:
        return [data]
    budget = max_payload - PART_HEADER_MAX
    view = memoryview(data)
    groups: list[list[tuple[int, int]]] = []
    current: list[tuple[int, int]] = []
    size = 0
    pos, end = 0, len(data)
    while pos < end:
        start = pos
        tag, pos = _read_varint(view, pos)
        wire_type = tag & 7
        if wire_type == 2:
            length, pos = _read_varint(view, pos)
            pos += length
        elif wire_type == 0:
            _, pos = _read_varint(view, pos)
        elif wire_type == 1:
            pos += 8
        elif wire_type == 5:
            pos += 4
        else:
            raise ValueError(f"IslandStatusMessage: wire type {wire_type}")
        if pos > end:
            raise ValueError("IslandStatusMessage: truncated field")
        if tag != 0x0A:  # only `data` entries are carried
            continue
        n = pos - start
        if n > budget:
            raise IslandStatusTooLarge(
                f"an island's entry is {n} bytes; a part holds at most {budget} "
                f"(max_payload {max_payload})"
            )
        if size + n > budget:
            groups.append(current)
            current, size = [], 0
        current.append((start, pos))
        size += n
    if current or not groups:
        groups.append(current)
    count = len(groups)
    if count > MAX_PARTS:
        raise IslandStatusTooLarge(f"{count} parts (at most {MAX_PARTS})")
    return [
        part_header(snapshot, i, count) + b"".join(view[a:b] for a, b in g)
        for i, g in enumerate(groups)
    ]


@dataclass(frozen=True)
class Part:
    snapshot: int
    index: int
    count: int
    body: bytes  # the message without field 1000: the part's islands


def parse_part(data: bytes) -> Part | None:
    """The part header of a received message; None when it is a whole message (no
    field 1000 first). ValueError when field 1000 is malformed or inconsistent."""
    if not data.startswith(PART_TAG):
        return None
    length, pos = _read_varint(data, len(PART_TAG))
    end = pos + length
    if end > len(data):
        raise ValueError("IslandStatusPart: truncated")
    header = data[pos:end]  # its fields are read within it only
    snapshot = index = count = 0
    seen_snapshot = seen_count = False
    at = 0
    while at < len(header):
        tag, at = _read_varint(header, at)
        if tag & 7 != 0:
            raise ValueError(f"IslandStatusPart: field {tag >> 3} has wire type {tag & 7}")
        value, at = _read_varint(header, at)
        if tag >> 3 == 1:
            snapshot, seen_snapshot = value, True
        elif tag >> 3 == 2:
            index = value
        elif tag >> 3 == 3:
            count, seen_count = value, True
    if not (seen_snapshot and seen_count) or not 1 <= count <= MAX_PARTS or index >= count:
        raise ValueError(f"IslandStatusPart: index {index} of {count} parts")
    return Part(snapshot, index, count, data[end:])


@dataclass
class _Pending:
    count: int
    parts: dict[int, bytes] = field(default_factory=dict)
    size: int = 0  # bytes held


DEFAULT_MAX_PENDING_BYTES = 256 * 1024 * 1024


class IslandStatusAssembler:
    """Joins the parts of each snapshot; at most ``max_pending`` snapshots and
    ``max_pending_bytes`` of parts wait at once.

    :meth:`add` returns the bytes of a whole IslandStatusMessage when one is complete
    (a whole message is returned as it is), else None. Counters: ``incomplete``
    (snapshots given up: a newer one completed first, a whole message arrived, or too
    many snapshots or bytes waited: the oldest go first) and ``invalid`` (malformed part
    headers, a duplicate index, parts of one snapshot disagreeing on the count, one
    snapshot larger than ``max_pending_bytes`` on its own: the snapshot is dropped).
    """

    def __init__(
        self, max_pending: int = 4, max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES
    ) -> None:
        self.max_pending = max_pending
        self.max_pending_bytes = max_pending_bytes
        self._pending: dict[int, _Pending] = {}  # by snapshot, in arrival order
        self._bytes = 0
        self.incomplete = 0
        self.invalid = 0

    @property
    def pending_bytes(self) -> int:
        return self._bytes

    def _drop(self, snapshot: int) -> None:
        self._bytes -= self._pending.pop(snapshot).size

    def add(self, data: bytes) -> bytes | None:
        try:
            part = parse_part(data)
        except ValueError:
            self.invalid += 1
            raise
        if part is None:  # a whole message supersedes every unfinished snapshot
            self.incomplete += len(self._pending)
            self._pending.clear()
            self._bytes = 0
            return data
        p = self._pending.get(part.snapshot)
        if p is None:
            if len(self._pending) >= self.max_pending:
                self._drop(next(iter(self._pending)))
                self.incomplete += 1
            p = self._pending[part.snapshot] = _Pending(part.count)
        if p.count != part.count or part.index in p.parts:
            self._drop(part.snapshot)
            self.invalid += 1
            raise ValueError(
                f"IslandStatusPart: snapshot {part.snapshot} part {part.index} of "
                f"{part.count} (expected {p.count} parts, each once)"
            )
        n = len(part.body)
        if p.size + n > self.max_pending_bytes:
            self._drop(part.snapshot)
            self.invalid += 1
            raise ValueError(
                f"IslandStatusPart: snapshot {part.snapshot} exceeds {self.max_pending_bytes} "
                "bytes of parts"
            )
        while self._bytes + n > self.max_pending_bytes:  # older snapshots make room
            oldest = next(iter(self._pending))
            if oldest == part.snapshot:
                break
            self._drop(oldest)
            self.incomplete += 1
        p.parts[part.index] = part.body
        p.size += n
        self._bytes += n
        if len(p.parts) < p.count:
            return None
        # complete: snapshots begun before it will not complete any more (NATS keeps
        # one publisher's order), so they are given up
        for s in list(self._pending):
            self._drop(s)
            if s == part.snapshot:
                break
            self.incomplete += 1
        return b"".join(p.parts[i] for i in range(p.count))
