"""A :class:`~dclcomms.pubsub.PubSub` over NATS (nats-py, asyncio).

::

    pubsub = await NatsPubSub.connect(["nats://10.0.0.1:4222", "nats://10.0.0.2:4222"])
    realm = Realm(config, pubsub=pubsub)     # connector glue, core and stats unchanged

Threading: everything runs on the event loop that called :meth:`NatsPubSub.connect`;
handlers run on that loop, as on the in-process pub/sub.

Publishing never blocks the caller (the core's tick, the connector's pump):
:meth:`publish` validates the subject (:mod:`dclcomms.nats.subjects`), encodes the
payload and appends it to an outbox; one drain task per loop iteration hands the
outbox to nats-py, whose flusher writes everything queued in one socket write.
A heartbeat batch thus becomes one NATS message per ``peer.<addr>.heartbeat``,
all flushed together (encoded in one call to the compiled codec). The per-peer
subjects of the hot paths (``peer.<addr>.heartbeat``,
``engine.peer.<addr>.island_changed``, ``engine.island.<id>.peer_join|peer_left``)
are mapped by a fast path that checks the token and splices it into the
scheme's wire form; every other subject, and every subject the fast path does
not accept, goes through the scheme (see :class:`_Subjects`).

**Bound**: the outbox holds at most ``max_outbox_bytes`` (default 128 MiB: one
tick's output must fit; the first tick of 10,000 new peers publishes about
52 MiB of ``island_changed``) and nats-py's pending buffer ``pending_size``
(default 8 MiB); while disconnected nats-py keeps publishing into that buffer
and refuses beyond it. Messages beyond either bound are dropped and counted
(``dcl_nats_dropped_total{reason}``) - heartbeats are periodic and the core
rebuilds its state from them, so dropping beats blocking the tick.

Receiving: one NATS subscription per wire pattern, shared by every local
subscription that needs it; each message is decoded once and delivered to the
local handlers whose internal pattern matches (``island_changed`` messages of
one island share one decoded :class:`~dclcomms.pubsub.IslandMembers`, see
:meth:`IslandChanged.from_bytes <dclcomms.pubsub.IslandChanged.from_bytes>`).
Heartbeats are re-batched: all heartbeats received in one loop iteration are
decoded together (compiled codec, straight into the position array) and
delivered as one :class:`~dclcomms.heartbeats.HeartbeatBatch`, the type the
connector published.

Reconnection is nats-py's: every URL is tried (randomized), forever, waiting
``reconnect_time_wait`` between rounds (plus jitter); subscriptions are restored
by nats-py after a reconnect. Bad tokens (publish) and undecodable or
badly-addressed messages (receive) are logged and counted
(``dcl_nats_subject_errors_total{code}``, ``dcl_nats_dropped_total{reason}``).

``engine.islands`` larger than the server's ``max_payload`` (from its INFO) is published
in parts and joined again on receipt (:mod:`dclcomms.nats.status_parts`): handlers get
only whole snapshots.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dclcomms import _core, codec
from dclcomms.errors import PubSubError, SubjectError
from dclcomms.heartbeats import UNSET, Unset
from dclcomms.metrics import BoundCounter, Registry
from dclcomms.nats.status_parts import IslandStatusAssembler, split_island_status
from dclcomms.nats.subjects import (
    ADDRESS_RE,
    ISLAND_RE,
    NATIVE_HEARTBEATS,
    NATIVE_ISLAND_PREFIX,
    NATIVE_ISLAND_SUFFIX,
    NATIVE_MEMBERS_SUFFIX,
    SCHEMES,
    Scheme,
    native_island_subject,
    scheme,
)
from dclcomms.pubsub import (
    HEARTBEATS,
    Handler,
    Heartbeat,
    HeartbeatBatch,
    HeartbeatHandler,
    IslandChanged,
    IslandMembers,
    IslandPeer,
    Message,
    PubSub,
    Subscription,
    batch_of_one,
    decode_payload,
    subject_matches,
)

log = logging.getLogger("dclcomms.nats.pubsub")

DEFAULT_MAX_OUTBOX_BYTES = 128 * 1024 * 1024
DEFAULT_PENDING_SIZE = 8 * 1024 * 1024

# Subject families of the hot paths (one message per peer per heartbeat, and per
# peer that changed island in a tick), with the scheme's check of their token
# and two sample tokens that pass it.
_ADDRESSES = ("0x" + "0123456789" * 4, "0x" + "fedcba9876" * 4)
_ISLANDS = ("I1", "zZ-9_")
_HOT_FAMILIES: tuple[tuple[str, re.Pattern[str], tuple[str, str]], ...] = (
    ("peer.{}.heartbeat", ADDRESS_RE, _ADDRESSES),
    ("engine.peer.{}.island_changed", ADDRESS_RE, _ADDRESSES),
    ("engine.island.{}.peer_join", ISLAND_RE, _ISLANDS),
    ("engine.island.{}.peer_left", ISLAND_RE, _ISLANDS),
)


class _Subjects:
    """The scheme's :meth:`~dclcomms.nats.subjects.Scheme.to_wire` / ``from_wire``, faster.

    For each family of :data:`_HOT_FAMILIES` the scheme is asked once, with two
    sample tokens, for the wire subject and back. When it puts the token
    verbatim between a fixed prefix and suffix both ways (both schemes do), a
    subject of that shape whose token passes the scheme's own check
    (:data:`~dclcomms.nats.subjects.ADDRESS_RE`, :data:`~dclcomms.nats.subjects.ISLAND_RE`)
    is mapped by splicing (one regular expression for all families, each
    direction); anything else (other subjects, bad tokens) goes through the
    scheme, which also raises the errors. Same results as the scheme
    (tests/test_nats_fast.py).
    """

    def __init__(self, scheme: Scheme) -> None:
        self.scheme = scheme
        # (internal prefix, internal suffix, wire prefix, wire suffix, token pattern)
        self.families: list[tuple[str, str, str, str, str]] = []
        for family, check, samples in _HOT_FAMILIES:
            ip, isuf = family.split("{}")
            try:
                wires = [scheme.to_wire(ip + t + isuf) for t in samples]
                back = [scheme.from_wire(w) for w in wires]
            except SubjectError:
                continue
            forms = {tuple(w.split(t)) for w, t in zip(wires, samples, strict=True)}
            form = forms.pop()
            if forms or len(form) != 2 or back != [ip + t + isuf for t in samples]:
                continue  # not a verbatim splice: always ask the scheme
            if check.groups:
                continue  # the token pattern must not number groups of its own
            self.families.append((ip, isuf, form[0], form[1], check.pattern))

        def alternation(outer: int) -> re.Pattern[str]:
            # family i's token is group i + 1; "(?!)" (no family) never matches
            return re.compile(
                "|".join(
                    f"{re.escape(f[outer])}({f[4]}){re.escape(f[outer + 1])}" for f in self.families
                )
                or "(?!)"
            )

        self._internal = alternation(0)
        self._wire = alternation(2)

    def to_wire(self, subject: str) -> str:
        m = self._internal.fullmatch(subject)
        if m is None or m.lastindex is None:
            return self.scheme.to_wire(subject)
        f = self.families[m.lastindex - 1]
        return f[2] + m.group(m.lastindex) + f[3]

    def from_wire(self, subject: str) -> str:
        m = self._wire.fullmatch(subject)
        if m is None or m.lastindex is None:
            return self.scheme.from_wire(subject)
        f = self.families[m.lastindex - 1]
        return f[0] + m.group(m.lastindex) + f[1]


_HB_BATCH = "dclcomms.nats.v1.HeartbeatBatch"
_ISLAND_CHANGES = "dclcomms.nats.v1.IslandChanges"
_ISLAND_CHANGED_RE = re.compile(r"engine\.peer\.(0x[0-9a-f]{40})\.island_changed")
_ADDRESSES_RE = re.compile(r"(?:0x[0-9a-f]{40})*")
_MEMBERSHIP = "dclcomms.nats.v1.IslandMembership"
_PEER_MOVE_RE = re.compile(r"engine\.island\.([A-Za-z0-9_-]{1,128})\.(peer_join|peer_left)")
_HEARTBEAT_RE = re.compile(r"peer\.(0x[0-9a-f]{40})\.heartbeat")
_SESSION_RE = re.compile(r"peer\.(0x[0-9a-f]{40})\.(?:connect|disconnect)")


def _raw(value: Any) -> bytes:
    """A decoded ``bytes`` field (the generic decoder gives base64 text, as in JSON)."""
    if isinstance(value, bytes):
        return value
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, TypeError) as e:
        raise ValueError(f"bad bytes field: {e}") from e


def _hex_addresses(raw: bytes) -> list[str]:
    """``0x`` addresses of n concatenated 20-byte addresses (hex, split: all in C)."""
    if not raw:
        return []
    return ("0x" + raw.hex(",", 20).replace(",", ",0x")).split(",")


def _raw_addresses(addresses: Sequence[str]) -> bytes:
    """n validated ``0x`` addresses as n×20 bytes ("0x" never occurs in hex digits)."""
    return bytes.fromhex("".join(addresses).replace("0x", ""))


def encode_heartbeat_batch(batch: HeartbeatBatch) -> bytes:
    """One ``dclcomms.nats.v1.HeartbeatBatch`` (the native scheme) of ``batch``."""
    msg: dict[str, Any] = {
        "addresses": _raw_addresses(batch.addresses),
        "positions": np.ascontiguousarray(batch.positions, dtype="<f4").tobytes(),
    }
    rooms = [{"index": i, "room": r} for i, r in enumerate(batch.desired_rooms) if r is not UNSET]
    if rooms:
        msg["desiredRooms"] = rooms
    return codec.encode(_HB_BATCH, msg)


def decode_heartbeat_batch(data: bytes) -> HeartbeatBatch:
    """The batch of a ``HeartbeatBatch`` message; ``ValueError`` when malformed."""
    m = codec.decode(_HB_BATCH, data)
    raw = _raw(m.get("addresses", b""))
    pos = _raw(m.get("positions", b""))
    n = len(raw) // 20
    if len(raw) != 20 * n or len(pos) != 12 * n:
        raise ValueError(f"HeartbeatBatch: {len(raw)} address bytes, {len(pos)} position bytes")
    rooms: list[str | Unset] = [UNSET] * n
    for r in m.get("desiredRooms", ()):
        i = int(r.get("index", 0))
        if i >= n:
            raise ValueError(f"HeartbeatBatch: desired room index {i} of {n}")
        rooms[i] = str(r.get("room", ""))
    positions = np.frombuffer(pos, dtype="<f4").astype(np.float32).reshape(n, 3)
    return HeartbeatBatch(_hex_addresses(raw), positions, rooms)


class _IslandGroup:
    """The island_changed of one island (one member map) published in one loop turn."""

    __slots__ = ("addrs", "conn_strs", "from_ids", "island_id", "members")

    def __init__(self, island_id: str, members: IslandMembers) -> None:
        self.island_id = island_id
        self.members = members
        self.addrs: list[str] = []
        self.conn_strs: list[str] = []
        self.from_ids: list[str] = []

    def encode(self) -> bytes:
        return codec.encode(
            _ISLAND_CHANGES,
            {
                "islandId": self.island_id,
                "peers": self.members.to_bytes(),
                "addresses": _raw_addresses(self.addrs),
                "connStrs": self.conn_strs,
                "fromIslandIds": self.from_ids,
            },
        )


class _MembershipGroup:
    """The peer_left then peer_join of one island published in one loop turn."""

    __slots__ = ("island_id", "joined", "left")

    def __init__(self, island_id: str) -> None:
        self.island_id = island_id
        self.left: list[str] = []
        self.joined: list[str] = []

    def encode(self) -> bytes:
        return codec.encode(
            _MEMBERSHIP,
            {
                "islandId": self.island_id,
                "left": _raw_addresses(self.left),
                "joined": _raw_addresses(self.joined),
            },
        )


def decode_island_membership(data: bytes) -> tuple[str, list[str], list[str]]:
    """``(island id, left, joined)`` of an ``IslandMembership``; ``ValueError`` when malformed."""
    m = codec.decode(_MEMBERSHIP, data)
    left = _raw(m.get("left", b""))
    joined = _raw(m.get("joined", b""))
    if len(left) % 20 or len(joined) % 20:
        raise ValueError(f"IslandMembership: {len(left)}/{len(joined)} address bytes")
    return str(m.get("islandId", "")), _hex_addresses(left), _hex_addresses(joined)


def decode_island_changes(data: bytes) -> list[tuple[str, IslandChanged]]:
    """``(address, IslandChanged)`` of an ``IslandChanges`` message, the member map
    decoded once and shared; ``ValueError`` when malformed."""
    # one typed C++ decode (the generic codec built a dict per message: ~10x slower)
    island_id, peers, raw, conn, froms = _core.nats_decode_island_changes(data)
    n = len(raw) // 20
    if len(raw) != 20 * n or len(conn) != n or len(froms) != n:
        raise ValueError(f"IslandChanges: {len(raw)} address bytes, {len(conn)} conn_strs")
    members = IslandMembers._adopt(_core.codec_decode_island_changed(peers)[3], peers)
    return [
        (a, IslandChanged(island_id, c, f or None, members))
        for a, c, f in zip(_hex_addresses(raw), conn, froms, strict=True)
    ]


class EngineFeed:
    """The engine fed in C++ from NATS (:meth:`NatsPubSub.feed_engine`).

    :meth:`stats` gives the feed's running totals (``heartbeats`` applied,
    ``resets`` (connect + disconnect), ``backoff_dropped``, ``no_position``,
    ``invalid_position``, ``engine_errors``, ...); :meth:`set_backoff` replaces the
    peers whose heartbeats are ignored until a Unix time in ms (the core's
    re-admission back-off).
    """

    def __init__(self, bus: NatsPubSub) -> None:
        self._bus = bus
        self._c = bus.c_client
        self._open = True
        self._base = bus._sync_c()  # the client's totals count earlier feeds too

    def stats(self) -> dict[str, Any]:
        """Totals since this feed started (``connected``: the client's connection)."""
        if not self._open:
            return {}
        st = self._bus._sync_c()
        base = self._base
        return {
            k: (v - base.get(k, 0) if isinstance(v, int) and not isinstance(v, bool) else v)
            for k, v in st.items()
        }

    def set_backoff(self, until_ms: dict[str, int]) -> None:
        if self._open:
            self._c.set_backoff(list(until_ms.items()))

    def settle(self) -> None:
        """Block until everything received so far is in the engine (tests, benches)."""
        if self._open:
            self._c.settle()

    def close(self) -> None:
        """Unsubscribe (what arrived is applied first); idempotent."""
        if self._open:
            self._open = False
            self._c.stop_feed()


class IslandRelay:
    """The C++ relay of island messages to a server's sessions (see
    :meth:`NatsPubSub.relay_islands`)."""

    def __init__(self, bus: NatsPubSub) -> None:
        self._bus = bus
        self._open = True

    def stats(self) -> dict[str, int]:
        """The C++ client's ``relayed`` messages and, on ``time.monotonic_ns()``'s clock,
        ``relay_tick_first_ns`` (the first island message after the last islands status)
        and ``relay_last_ns`` (the last one handed to the server); {} once closed."""
        if not self._open or self._bus._closed:
            return {}
        st = self._bus._sync_c()
        return {k: int(st[k]) for k in ("relayed", "relay_tick_first_ns", "relay_last_ns")}

    def close(self) -> None:
        """Unsubscribe (what the server already sent is handed over first); idempotent."""
        if self._open:
            self._open = False
            if not self._bus._closed:
                self._bus.c_client.stop_relay()


@dataclass(eq=False)
class _Wire:
    """One NATS subscription and the local subscriptions fed by it."""

    pattern: str
    subs: list[Subscription] = field(default_factory=list)
    nats_sub: Any = None
    task: asyncio.Task[None] | None = None
    # heartbeats received this loop iteration, not decoded yet:
    # (internal subject, wire subject, payload)
    pending: list[tuple[str, str, bytes]] = field(default_factory=list)


class NatsPubSub(PubSub):
    """Publish/subscribe over NATS with the subject scheme ``subjects``."""

    def __init__(
        self,
        nc: Any,
        *,
        subjects: str | Scheme = "native",
        registry: Registry | None = None,
        max_outbox_bytes: int = DEFAULT_MAX_OUTBOX_BYTES,
        c_client: Any = None,
    ) -> None:
        self.nc = nc
        # The hot subjects' C++ client (libnats; None: everything through nats-py).
        self.c_client = c_client
        self._c_seen: dict[str, int] = {}
        self.scheme = subjects if isinstance(subjects, Scheme) else scheme(subjects)
        self.max_outbox_bytes = max_outbox_bytes
        self._loop = asyncio.get_running_loop()
        self._outbox: list[tuple[str, bytes | _IslandGroup | _MembershipGroup]] = []
        self._moves: dict[str, _MembershipGroup] = {}
        # native scheme: this loop turn's island_changed, by (island, member map)
        self._groups: dict[tuple[str, int], _IslandGroup] = {}
        self._batched = self.scheme.batched
        self._subjects = _Subjects(self.scheme)
        # (wire prefix, wire suffix) of island_changed when the scheme splices the
        # address verbatim (both compatibility schemes do), else None
        self._island_changed_form: tuple[str, str] | None = next(
            (
                (f[2], f[3])
                for f in self._subjects.families
                if f[:2] == ("engine.peer.", ".island_changed")
            ),
            None,
        )
        if self._batched:
            self._island_changed_form = ("", "")
        self._outbox_bytes = 0
        self._drain_task: asyncio.Task[None] | None = None
        self._wires: dict[str, _Wire] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self._closing = False
        self.published = 0
        self.published_bytes = 0
        self.received = 0
        self.handler_errors = 0
        # engine.islands in parts (beyond max_payload): the last snapshot id sent, the
        # parts received and not yet joined
        self._status_snapshot = 0
        self._status_parts = IslandStatusAssembler()
        self._status_incomplete = 0
        # Every series carries client=<NATS connection name>: the parts of one process
        # (``dclcomms realm --nats``: connector and core) share its registry, each with
        # its own connections.
        options = getattr(nc, "options", None)
        name = options.get("name") if isinstance(options, dict) else None
        self.client_name = str(name or "dclcomms")
        client = {"client": self.client_name}
        r = registry or Registry()

        def counter(metric: str, help_: str) -> BoundCounter:
            return r.counter(metric, help_, shared=True).labelled(**client)

        def gauge(metric: str, help_: str, fn: Callable[[], float]) -> None:
            r.gauge(metric, help_, shared=True).bind(fn, **client)

        self.m_published = counter("dcl_nats_published_total", "messages handed to NATS")
        self.m_received = counter("dcl_nats_received_total", "messages received from NATS")
        self.m_dropped = counter(
            "dcl_nats_dropped_total",
            "messages dropped, by reason (outbox_full, nats_buffer, max_payload, decode, closed, "
            "slow_consumer, inbox_full; islands_incomplete: engine.islands snapshots whose "
            "parts did not all arrive)",
        )
        self.m_subject_errors = counter(
            "dcl_nats_subject_errors_total",
            "subjects refused (bad token or unknown subject), by code and direction",
        )
        self.m_reconnects = counter("dcl_nats_reconnects_total", "reconnections to NATS")
        for m in (self.m_published, self.m_received, self.m_reconnects):
            m.inc(0)  # this client's series from the start, at 0
        gauge("dcl_nats_outbox_bytes", "bytes waiting for nats-py", lambda: self._outbox_bytes)
        gauge(
            "dcl_nats_connected",
            "1 while connected to a NATS server (both connections, with the C++ client)",
            lambda: 1.0 if self.connected else 0.0,
        )
        self._c_last: dict[str, Any] = {}
        if c_client is not None:
            self.m_c_reconnects = counter(
                "dcl_nats_c_reconnects_total",
                "reconnections of the C++ client's connection (hot subjects)",
            )
            self.m_c_reconnects.inc(0)
            gauge(
                "dcl_nats_c_connected",
                "1 while the C++ client's connection (hot subjects) is up",
                lambda: 1.0 if self._c_last.get("connected") and not self._closed else 0.0,
            )
            gauge(
                "dcl_nats_c_outbox_bytes",
                "bytes queued for the C++ client's publisher thread",
                lambda: float(self._c_last.get("outbox_bytes", 0)),
            )
            # before each render: what the C++ client counted, into the counters above
            r.before_render(self._c_metrics)

    # --- construction -------------------------------------------------------------

    @classmethod
    async def connect(
        cls,
        servers: Sequence[str],
        *,
        subjects: str | Scheme = "native",
        name: str = "dclcomms",
        registry: Registry | None = None,
        reconnect_time_wait: float = 0.5,
        connect_timeout: float = 2.0,
        pending_size: int = DEFAULT_PENDING_SIZE,
        max_outbox_bytes: int = DEFAULT_MAX_OUTBOX_BYTES,
        c_client: bool = True,
    ) -> NatsPubSub:
        """Connect to the first reachable of ``servers`` (``nats://host:port``).

        With ``c_client`` (the default, for the three built-in schemes) a second
        connection, libnats' in C++, carries the hot subjects: heartbeats and session
        connect/disconnect out of a connector (:meth:`publish_heartbeats`), and into
        the engine (:meth:`feed_engine`). Raises :class:`~dclcomms.errors.PubSubError`
        (``nats_unavailable``) when none answers.
        """
        import nats
        from nats.errors import NoServersError

        sch = subjects if isinstance(subjects, Scheme) else scheme(subjects)
        if not servers:
            raise PubSubError("no NATS server URL given", code="nats_unavailable")
        holder: list[NatsPubSub] = []

        async def reconnected() -> None:
            if holder:
                holder[0].m_reconnects.inc()
            log.warning("NATS reconnected", extra={"server": str(nc.connected_url)})

        async def disconnected() -> None:
            if not (holder and holder[0]._closing):
                log.warning("NATS disconnected")

        async def error(e: Exception) -> None:
            log.warning("NATS error: %s", e)

        try:
            nc = await nats.connect(
                servers=list(servers),
                name=name,
                allow_reconnect=True,
                # bounded while connecting (nats-py would retry a dead list forever) ...
                max_reconnect_attempts=1,
                reconnect_time_wait=reconnect_time_wait,
                connect_timeout=connect_timeout,
                pending_size=pending_size,
                reconnected_cb=reconnected,
                disconnected_cb=disconnected,
                error_cb=error,
            )
        except (NoServersError, OSError, TimeoutError) as e:
            raise PubSubError(
                f"cannot connect to NATS {list(servers)}: {e or type(e).__name__}",
                code="nats_unavailable",
            ) from e
        # ... then unbounded: once connected, reconnect forever (options is read per attempt)
        nc.options["max_reconnect_attempts"] = -1
        c = None
        if c_client and sch.name in ("native", "workers", "v3") and SCHEMES.get(sch.name) is sch:
            try:
                c = await asyncio.to_thread(
                    _core.NatsClient,
                    list(servers),
                    sch.name,
                    name,
                    round(reconnect_time_wait * 1000),
                    round(connect_timeout * 1000),
                    pending_size,
                    max_outbox_bytes,
                )
            except PubSubError:
                await nc.close()
                raise
        bus = cls(
            nc, subjects=sch, registry=registry, max_outbox_bytes=max_outbox_bytes, c_client=c
        )
        holder.append(bus)
        return bus

    # --- publishing ---------------------------------------------------------------

    def _subject_error(
        self, e: SubjectError, subject: str, direction: str, *, counted: bool = False
    ) -> None:
        """Logs a refused subject and counts it (unless ``counted``: the C++ client did)."""
        if not counted:
            self.m_subject_errors.inc(code=e.code, direction=direction)
        log.error(
            "refused NATS subject: %s",
            e,
            extra={"subject": subject, "code": e.code, "direction": direction},
        )

    def _wire_subject(self, subject: str) -> str | None:
        """The wire subject of an internal one; None (logged, counted) if refused."""
        try:
            return self._subjects.to_wire(subject)
        except SubjectError as e:
            self._subject_error(e, subject, "publish")
            return None

    def _internal_subject(self, wire_subject: str) -> str | None:
        """The internal subject of a wire one; None (logged, counted) if refused."""
        try:
            return self._subjects.from_wire(wire_subject)
        except SubjectError as e:
            self._subject_error(e, wire_subject, "receive")
            return None

    def publish(self, subject: str, payload: bytes | Message) -> None:
        if self._closed:
            self.m_dropped.inc(reason="closed")
            return
        if self.c_client is not None and subject.startswith("peer."):
            m = _SESSION_RE.fullmatch(subject)
            if m is not None:
                # On the heartbeats' connection: a reset stays in order with them.
                self.c_client.publish(subject, b"")
                self._sync_c()
                return
            m = _HEARTBEAT_RE.fullmatch(subject)
            if m is not None:
                hb = payload if isinstance(payload, Heartbeat) else None
                if isinstance(payload, bytes | bytearray):
                    hb = Heartbeat.from_bytes(bytes(payload))
                if hb is not None:
                    self.publish_heartbeats(batch_of_one(m.group(1), hb))
                return
        if self._batched:
            m = _ISLAND_CHANGED_RE.fullmatch(subject)
            if m is not None:
                self._group(m.group(1), subject, payload)
                return
            m = _PEER_MOVE_RE.fullmatch(subject)
            if m is not None and self._move(m.group(1), m.group(2), subject, payload):
                return
            m = _HEARTBEAT_RE.fullmatch(subject)
            t = subject.split(".")
            if m is None and (
                (len(t) == 3 and t[0] == "peer" and t[2] == "heartbeat")
                or (len(t) == 4 and t[:2] == ["engine", "peer"] and t[3] == "island_changed")
            ):
                self._subject_error(
                    SubjectError(f"not a lowercase 0x address: {t[-2]!r}", code="bad_address"),
                    subject,
                    "publish",
                )
                return
            if m is not None:
                hb = payload if isinstance(payload, Heartbeat) else None
                if isinstance(payload, bytes | bytearray):
                    hb = Heartbeat.from_bytes(bytes(payload))
                if hb is not None:
                    self.publish_heartbeats(batch_of_one(m.group(1), hb))
                return
        wire = self._wire_subject(subject)
        if wire is None:
            return
        if isinstance(payload, bytes | bytearray):
            data = bytes(payload)
            if self.scheme.json_discovery and subject == "engine.discovery":
                data = self.scheme.encode(subject, decode_payload(subject, data))
        else:
            data = self.scheme.encode(subject, payload)
        if subject == "engine.islands":
            self._publish_status(wire, data)
            return
        self._enqueue(wire, data)

    def _publish_status(self, wire: str, data: bytes) -> None:
        """``engine.islands``: as it is when it fits the server's ``max_payload``, else
        in parts (:func:`~dclcomms.nats.status_parts.split_island_status`), all of them
        queued or none."""
        limit = int(getattr(self.nc, "max_payload", 0) or 0)
        if limit <= 0 or len(data) <= limit:
            self._enqueue(wire, data)
            return
        # ids only grow, also across restarts of the core (microseconds of the clock)
        self._status_snapshot = max(self._status_snapshot + 1, time.time_ns() // 1000)
        try:
            parts = split_island_status(data, limit, self._status_snapshot)
        except ValueError as e:
            self.m_dropped.inc(reason="max_payload")
            log.error(
                "engine.islands cannot be split under the server's max_payload: dropped",
                extra={"subject": wire, "bytes": len(data), "max_payload": limit, "error": str(e)},
            )
            return
        if self._outbox_bytes + sum(map(len, parts)) > self.max_outbox_bytes:
            self.m_dropped.inc(len(parts), reason="outbox_full")
            return
        for part in parts:
            self._enqueue(wire, part)

    def publish_heartbeats(self, batch: HeartbeatBatch) -> None:
        """One NATS message per ``peer.<addr>.heartbeat``, all flushed together.

        The whole batch is encoded in one call (the same bytes as
        :meth:`Heartbeat.to_bytes <dclcomms.pubsub.Heartbeat.to_bytes>` of each).
        """
        n = len(batch)
        if n == 0:
            return
        if self._closed:
            self.m_dropped.inc(n, reason="closed")
            return
        if self.c_client is not None:  # encoded and published in C++ (never blocks)
            # C++ checks every address (as valid_address does on receive), refuses and
            # counts a bad one (bad_address_publish: dcl_nats_subject_errors_total) and
            # returns how many it queued; only then are the refused ones found and logged
            queued = self.c_client.publish_heartbeats(
                list(batch.addresses), batch.positions, list(batch.desired_rooms)
            )
            if queued < n:
                self._valid_indices(batch.addresses, counted=True)  # log the refused ones
            self._sync_c()
            return
        if self._batched:
            addrs = batch.addresses
            if set(map(len, addrs)) != {42} or _ADDRESSES_RE.fullmatch("".join(addrs)) is None:
                batch = self._valid_only(batch)  # some bad address: drop (and count) those
                if not len(batch):
                    return
        if self._batched:  # one message for the whole batch
            self._enqueue_heartbeat_batch(batch)
            return
        payloads = _core.codec_encode_heartbeats(batch.positions, list(batch.desired_rooms))
        wire_subject, enqueue = self._wire_subject, self._enqueue
        for addr, data in zip(batch.addresses, payloads, strict=True):
            wire = wire_subject(f"peer.{addr}.heartbeat")
            if wire is not None:
                enqueue(wire, data)

    def _enqueue_heartbeat_batch(self, batch: HeartbeatBatch) -> None:
        """Native scheme: one HeartbeatBatch message, or halves of it (each again) while
        it is larger than the server's ``max_payload``."""
        data = encode_heartbeat_batch(batch)
        limit = int(getattr(self.nc, "max_payload", 0) or 0)
        n = len(batch)
        if 0 < limit < len(data) and n > 1:
            self._enqueue_heartbeat_batch(batch.select(list(range(n // 2))))
            self._enqueue_heartbeat_batch(batch.select(list(range(n // 2, n))))
            return
        self._enqueue(NATIVE_HEARTBEATS, data)

    def publish_island_changed(self, items: Sequence[tuple[str, IslandChanged]]) -> None:
        """A tick's ``island_changed``: the addresses checked together (one regular
        expression over all of them), then grouped per island (native) or each encoded
        on its wire subject; any bad address sends the whole call the slow way (each
        message checked, the bad ones refused and counted)."""
        peers = [p for p, _ in items]
        if (
            self._closed
            or self._island_changed_form is None
            or set(map(len, peers)) != {42}
            or _ADDRESSES_RE.fullmatch("".join(peers)) is None
            or not all(type(m) is IslandChanged for _, m in items)
        ):
            super().publish_island_changed(items)
            return
        if self._batched:
            group = self._group
            for peer, msg in items:
                group(peer, f"engine.peer.{peer}.island_changed", msg)
            return
        pre, suf = self._island_changed_form
        enqueue, encode = self._enqueue, self.scheme.encode
        for peer, msg in items:
            enqueue(pre + peer + suf, encode("engine.peer.x.island_changed", msg))

    def publish_island_peers(self, kind: str, items: Sequence[IslandPeer]) -> None:
        if self._closed or not self._batched or kind not in ("peer_join", "peer_left"):
            super().publish_island_peers(kind, items)
            return
        move, island_ok = self._move, ISLAND_RE.fullmatch
        for msg in items:  # checked one by one: an island id per message
            subject = f"engine.island.{msg.island_id}.{kind}"
            if island_ok(msg.island_id) is None or not move(msg.island_id, kind, subject, msg):
                self.publish(subject, msg)  # the scheme refuses it (logged, counted)

    @property
    def publishes_ticks(self) -> bool:
        """A core's tick can go out through :meth:`publish_tick` (the native scheme with
        the C++ client): its island changes grouped and encoded per island in C++."""
        return (
            self.c_client is not None
            and not self._closed
            and self._batched
            and SCHEMES.get(self.scheme.name) is self.scheme
        )

    def publish_tick(self, tick: Any) -> int:
        """A core's tick (a ``_core.ArchipelagoTick`` whose strings are issued): every
        ``island_changed`` (one ``IslandChanges`` per island), then the
        ``IslandMembership`` of each island, then ``engine.islands``, queued in that order
        on the C++ client (the bytes :meth:`publish_island_changed`,
        :meth:`publish_island_peers` and :meth:`publish` write for the same tick). Bad
        island ids and addresses are refused and counted as they are; beyond the
        outbox bound or the server's ``max_payload`` messages are dropped and counted;
        ``engine.islands`` beyond ``max_payload`` goes in parts (C++
        ``split_island_status``, the bytes of :func:`split_island_status`).
        Returns how many ``island_changed`` it carried."""
        out = tick.publish_native(self.c_client)
        for code in ("bad_island_id", "bad_subject", "bad_address"):
            if n := out[code]:
                self.m_subject_errors.inc(n, code=code, direction="publish")
                log.error(
                    "refused NATS subject: %d tick messages with a bad token",
                    n,
                    extra={"code": code, "direction": "publish"},
                )
        if not out["status_messages"]:
            log.error(
                "engine.islands dropped: no room in the outbox, or an island too large "
                "for the server's max_payload",
                extra={
                    "subject": "engine.islands",
                    "bytes": out["status_bytes"],
                    "max_payload": getattr(self.nc, "max_payload", None),
                },
            )
        self._sync_c()
        return int(out["island_changed"])

    def _move(self, island: str, kind: str, subject: str, payload: bytes | Message) -> bool:
        """Native scheme: a peer_join/peer_left into its island's group of this turn.
        False when it cannot be grouped (not a valid address: the scheme refuses it)."""
        if isinstance(payload, bytes | bytearray):
            try:
                payload = IslandPeer.from_bytes(bytes(payload))
            except ValueError as e:
                self.m_dropped.inc(reason="decode")
                log.warning("undecodable %s: %s", kind, e, extra={"subject": subject})
                return True
        if not isinstance(payload, IslandPeer) or payload.island_id != island:
            self.m_dropped.inc(reason="decode")
            log.warning("%s of another island: %r", kind, payload, extra={"subject": subject})
            return True
        peer = payload.peer_id
        if ADDRESS_RE.fullmatch(peer) is None:
            self._subject_error(
                SubjectError(f"not a lowercase 0x address: {peer!r}", code="bad_address"),
                subject,
                "publish",
            )
            return True
        g = self._moves.get(island)
        if g is None or (kind == "peer_left" and g.joined):  # keep lefts before joins
            g = _MembershipGroup(island)
            if not self._enqueue(NATIVE_ISLAND_PREFIX + island + NATIVE_MEMBERS_SUFFIX, g, 64):
                return True
            self._moves[island] = g
        if self._outbox_bytes + 20 > self.max_outbox_bytes:
            self.m_dropped.inc(reason="outbox_full")
            return True
        self._outbox_bytes += 20
        (g.joined if kind == "peer_join" else g.left).append(peer)
        return True

    def _valid_only(self, batch: HeartbeatBatch) -> HeartbeatBatch:
        return batch.select(self._valid_indices(batch.addresses))

    def _valid_indices(self, addresses: Sequence[Any], *, counted: bool = False) -> list[int]:
        """Indices of the valid addresses; each bad one refused as a subject error (logged,
        and counted unless ``counted``: the C++ client already did)."""
        keep = []
        for i, a in enumerate(addresses):
            if isinstance(a, str) and ADDRESS_RE.fullmatch(a) is not None:
                keep.append(i)
            else:
                self._subject_error(
                    SubjectError(f"not a lowercase 0x address: {a!r}", code="bad_address"),
                    f"peer.{a}.heartbeat",
                    "publish",
                    counted=counted,
                )
        return keep

    def _group(self, addr: str, subject: str, payload: bytes | Message) -> None:
        """Native scheme: add one island_changed to its island's group of this turn."""
        if isinstance(payload, bytes | bytearray):
            try:
                payload = IslandChanged.from_bytes(bytes(payload))
            except ValueError as e:
                self.m_dropped.inc(reason="decode")
                log.warning("undecodable island_changed: %s", e, extra={"subject": subject})
                return
        if not isinstance(payload, IslandChanged):
            self.m_dropped.inc(reason="decode")
            log.warning("not an IslandChanged: %r", type(payload), extra={"subject": subject})
            return
        members = payload.peers
        if not isinstance(members, IslandMembers):
            members = IslandMembers(members)
        key = (payload.island_id, id(members))
        g = self._groups.get(key)
        size = len(payload.conn_str) + len(payload.from_island_id or "") + 26
        if g is None:
            try:
                wire = native_island_subject(payload.island_id)
            except SubjectError as e:
                self._subject_error(e, subject, "publish")
                return
            g = _IslandGroup(payload.island_id, members)
            if not self._enqueue(wire, g, len(members.to_bytes()) + 64):
                return
            self._groups[key] = g
        if self._outbox_bytes + size > self.max_outbox_bytes:
            self.m_dropped.inc(reason="outbox_full")
            return
        self._outbox_bytes += size
        g.addrs.append(addr)
        g.conn_strs.append(payload.conn_str)
        g.from_ids.append(payload.from_island_id or "")

    def _enqueue(
        self, wire: str, data: bytes | _IslandGroup | _MembershipGroup, size: int = -1
    ) -> bool:
        if size < 0:
            size = len(data)  # type: ignore[arg-type]  # bytes when no size is given
        if self._outbox_bytes + size > self.max_outbox_bytes:
            self.m_dropped.inc(reason="outbox_full")
            return False
        self._outbox.append((wire, data))
        self._outbox_bytes += size
        if self._drain_task is None:
            self._drain_task = self._loop.create_task(self._drain(), name="nats-drain")
        return True

    async def _drain(self) -> None:
        from nats.errors import ConnectionClosedError, MaxPayloadError, OutboundBufferLimitError

        publish = self.nc.publish
        try:
            while self._outbox:
                batch, self._outbox, self._outbox_bytes = self._outbox, [], 0
                self._groups = {}
                self._moves = {}
                sent = sent_bytes = 0
                try:
                    for wire, item in batch:
                        data = item if isinstance(item, bytes) else item.encode()
                        try:
                            await publish(wire, data)
                            sent += 1
                            sent_bytes += len(data)
                        except OutboundBufferLimitError:
                            self.m_dropped.inc(reason="nats_buffer")
                        except ConnectionClosedError:
                            self.m_dropped.inc(reason="closed")
                        except MaxPayloadError:
                            # beyond the server's max_payload (1 MiB by default): e.g.
                            # engine.islands of a realm of ~25,000+ peers. Dropped,
                            # counted and logged; the rest of the outbox still goes.
                            self.m_dropped.inc(reason="max_payload")
                            log.error(
                                "NATS message larger than the server's max_payload dropped",
                                extra={
                                    "subject": wire,
                                    "bytes": len(data),
                                    "max_payload": getattr(self.nc, "max_payload", None),
                                },
                            )
                finally:
                    self.published += sent
                    self.published_bytes += sent_bytes
                    self.m_published.inc(sent)
        finally:
            self._drain_task = None

    async def flush(self, timeout: float = 5.0) -> None:
        """Wait until everything published so far reached the server (tests, shutdown)."""
        while self._drain_task is not None:
            await asyncio.shield(self._drain_task)
        for w in list(self._wires.values()):
            if w.task is not None:
                await w.task
        if self.c_client is not None and not self._closed:
            await asyncio.to_thread(self.c_client.flush, round(timeout * 1000))
            self._sync_c()
        if self.nc.is_connected:
            await self.nc.flush(timeout=timeout)

    # --- the C++ client (hot subjects) ------------------------------------------------

    @property
    def connected(self) -> bool:
        """Connected to NATS (nats-py's connection and, if any, the C++ client's)."""
        py = bool(getattr(self.nc, "is_connected", False))
        return py and (self.c_client is None or self._closed or bool(self.c_client.connected))

    def _sync_c(self) -> dict[str, Any]:
        """Adds what the C++ client counted since the last call to this bus's counters."""
        c = self.c_client
        if c is None:
            return {}
        st: dict[str, Any] = c.stats()
        seen = self._c_seen

        def delta(key: str) -> int:
            d = int(st[key]) - seen.get(key, 0)
            seen[key] = int(st[key])
            return d

        if d := delta("published"):
            self.published += d
            self.m_published.inc(d)
        if d := delta("published_bytes"):
            self.published_bytes += d
        if d := delta("received"):
            self.received += d
            self.m_received.inc(d)
        for reason in (
            "outbox_full",
            "nats_buffer",
            "closed",
            "decode",
            "slow_consumer",
            "max_payload",
        ):
            if d := delta(f"dropped_{reason}"):
                self.m_dropped.inc(d, reason=reason)
        if d := delta("dropped_inbox_full"):
            self.m_dropped.inc(d, reason="inbox_full")
        if d := delta("bad_address_receive"):
            self.m_subject_errors.inc(d, code="bad_address", direction="receive")
        if d := delta("bad_address_publish"):
            self.m_subject_errors.inc(d, code="bad_address", direction="publish")
        if d := delta("bad_island_receive"):
            self.m_subject_errors.inc(d, code="bad_island_id", direction="receive")
        if d := delta("bad_subject_receive"):
            self.m_subject_errors.inc(d, code="bad_subject", direction="receive")
        return st

    def _c_metrics(self) -> None:
        """Copies the C++ client's counts into this bus's metrics (at each render)."""
        if self._closed:
            return
        st = self._sync_c()
        if st:
            if d := int(st["reconnects"]) - int(self._c_last.get("reconnects", 0)):
                self.m_c_reconnects.inc(d)
            self._c_last = st

    def feed_engine(self, engine: Any, *, world_bound_m: float = 0.0) -> EngineFeed | None:
        """Feed ``engine`` (a :class:`dclcomms.archipelago.Engine`) from NATS in C++.

        The C++ client subscribes this scheme's heartbeat, ``peer.*.connect`` and
        ``peer.*.disconnect`` subjects and applies them to the engine on its own
        thread (heartbeats batched per run, connect/disconnect as
        ``engine.disconnect``, in the order received): no Python per message. None
        when this bus has no C++ client or the engine is not the compiled one; the
        caller then subscribes as on any pub/sub. Heartbeats with a non-finite
        coordinate or one beyond ``world_bound_m`` (> 0) are dropped and counted
        (``invalid_position``, ``out_of_bounds``), the rest of their batch applied.
        """
        core = getattr(engine, "_core", None)
        if self.c_client is None or self._closed or not isinstance(core, _core.ArchipelagoEngine):
            return None
        self.c_client.feed_engine(core, world_bound_m)
        return EngineFeed(self)

    def relay_islands(self, server: Any) -> IslandRelay | None:
        """Relay the core's island messages to ``server``'s connector sessions in C++.

        The C++ client subscribes this scheme's ``island_changed``, ``peer_join`` /
        ``peer_left`` (native: the per-island batches) and islands-status subjects,
        decodes them on libnats' delivery thread and hands them to the
        :class:`dclcomms.ws.Server`, whose I/O thread does the connector's bookkeeping
        (archipelago.md 1.5; :mod:`dclcomms.realm.connector`) and writes each
        recipient's ``ServerPacket``: no Python per message. None when this bus has no
        C++ client or ``server`` is not a :class:`dclcomms.ws.Server`; the caller then
        subscribes as on any pub/sub. Undecodable messages and refused subjects are
        dropped and counted as on the Python path.
        """
        core = getattr(server, "_core", None)
        if self.c_client is None or self._closed or not isinstance(core, _core.WsServer):
            return None
        self.c_client.relay_islands(core)
        return IslandRelay(self)

    # --- subscribing --------------------------------------------------------------

    def subscribe(self, pattern: str, handler: Handler) -> Subscription:
        return self._add(Subscription(pattern, handler, self))

    def subscribe_heartbeats(self, handler: HeartbeatHandler) -> Subscription:
        return self._add(Subscription(HEARTBEATS, lambda _s, b: handler(b), self, batch=True))

    def _add(self, sub: Subscription) -> Subscription:
        if self._closed:
            raise PubSubError("the NATS pub/sub is closed", code="bus_closed")
        for wp in self.scheme.wire_patterns(sub.pattern):  # SubjectError for bad patterns
            w = self._wires.get(wp)
            if w is None:
                w = self._wires[wp] = _Wire(wp)
                w.task = self._loop.create_task(self._nats_subscribe(w), name=f"nats-sub {wp}")
            w.subs.append(sub)
        return sub

    async def _nats_subscribe(self, w: _Wire) -> None:
        async def cb(msg: Any) -> None:
            self._on_msg(w, msg.subject, msg.data)

        w.nats_sub = await self.nc.subscribe(w.pattern, cb=cb)

    def _remove(self, sub: Subscription) -> None:
        for wp, w in list(self._wires.items()):
            if sub in w.subs:
                w.subs.remove(sub)
                if not w.subs:
                    del self._wires[wp]
                    t = self._loop.create_task(self._nats_unsubscribe(w))
                    self._tasks.add(t)  # keep a reference until done
                    t.add_done_callback(self._tasks.discard)

    async def _nats_unsubscribe(self, w: _Wire) -> None:
        if w.task is not None:
            with contextlib.suppress(Exception):
                await w.task
        if w.nats_sub is not None:
            with contextlib.suppress(Exception):
                await w.nats_sub.unsubscribe()

    async def ready(self) -> None:
        """Wait until every subscription made so far is registered with the server."""
        await self.flush()

    # --- receiving ----------------------------------------------------------------

    def _on_msg(self, w: _Wire, wire_subject: str, data: bytes) -> None:
        self.received += 1
        self.m_received.inc()
        if self._batched and wire_subject.startswith("dclcomms.v1."):
            self._on_batch(w, wire_subject, data)
            return
        subject = self._internal_subject(wire_subject)
        if subject is None:
            return
        if subject == "engine.islands":
            whole = self._join_status(wire_subject, data)
            if whole is None:
                return
            data = whole
        if subject.startswith("peer.") and subject.endswith(".heartbeat"):
            # decoded with the rest of this loop iteration's heartbeats
            if not w.pending:
                self._loop.call_soon(self._deliver_heartbeats, w)
            w.pending.append((subject, wire_subject, data))
            return
        try:
            payload = self.scheme.decode(subject, data)
        except ValueError as e:
            self._undecodable(e, wire_subject)
            return
        for sub in list(w.subs):
            if not sub.batch and subject_matches(sub.pattern, subject):
                self._call(sub, subject, payload)

    def _on_batch(self, w: _Wire, wire_subject: str, data: bytes) -> None:
        """Native scheme: a ``HeartbeatBatch`` or an island's ``IslandChanges``."""
        if wire_subject == NATIVE_HEARTBEATS:
            try:
                batch = decode_heartbeat_batch(data)
            except ValueError as e:
                self._undecodable(e, wire_subject)
                return
            self._deliver_batch(w, batch)
            return
        members = wire_subject.endswith(NATIVE_MEMBERS_SUFFIX)
        suffix = NATIVE_MEMBERS_SUFFIX if members else NATIVE_ISLAND_SUFFIX
        island = wire_subject[len(NATIVE_ISLAND_PREFIX) : -len(suffix)]
        if (
            not wire_subject.startswith(NATIVE_ISLAND_PREFIX)
            or not wire_subject.endswith(suffix)
            or ISLAND_RE.fullmatch(island) is None
        ):
            self._subject_error(
                SubjectError(f"no native subject {wire_subject!r}", code="bad_subject"),
                wire_subject,
                "receive",
            )
            return
        if members:
            self._on_membership(w, wire_subject, island, data)
            return
        try:
            changes = decode_island_changes(data)
        except ValueError as e:
            self._undecodable(e, wire_subject)
            return
        if changes and changes[0][1].island_id != island:
            self._undecodable(f"island {changes[0][1].island_id!r} on {island!r}", wire_subject)
            return
        subs = [s for s in w.subs if not s.batch]
        # (subscription, matches every address): the usual wildcard needs no match
        every = [(s, s.pattern == "engine.peer.*.island_changed") for s in subs]
        for addr, msg in changes:
            subject = f"engine.peer.{addr}.island_changed"
            for sub, all_ in every:
                if all_ or subject_matches(sub.pattern, subject):
                    self._call(sub, subject, msg)

    def _on_membership(self, w: _Wire, wire_subject: str, island: str, data: bytes) -> None:
        try:
            island_id, left, joined = decode_island_membership(data)
        except ValueError as e:
            self._undecodable(e, wire_subject)
            return
        if island_id != island:
            self._undecodable(f"island {island_id!r} on {island!r}", wire_subject)
            return
        subs = [s for s in w.subs if not s.batch]
        for kind, peers in (("peer_left", left), ("peer_join", joined)):
            if not peers:
                continue
            subject = f"engine.island.{island}.{kind}"
            mine = [s for s in subs if subject_matches(s.pattern, subject)]
            for peer in peers:
                msg = IslandPeer(island, peer)
                for sub in mine:
                    self._call(sub, subject, msg)

    def _deliver_batch(self, w: _Wire, batch: HeartbeatBatch) -> None:
        """A decoded heartbeat batch to batch subscriptions (filtered by pattern) and,
        one by one, to plain ones."""
        for sub in list(w.subs):
            if sub.batch and sub.pattern == HEARTBEATS:
                self._call(sub, HEARTBEATS, batch)
                continue
            subjects = [f"peer.{a}.heartbeat" for a in batch.addresses]
            mine = [i for i, s in enumerate(subjects) if subject_matches(sub.pattern, s)]
            if not mine:
                continue
            if sub.batch:
                self._call(sub, HEARTBEATS, batch.select(mine))
            else:
                pos = batch.positions.tolist()
                for i in mine:
                    p = pos[i]
                    hb = Heartbeat((p[0], p[1], p[2]), batch.desired_rooms[i])
                    self._call(sub, subjects[i], hb)

    def _join_status(self, wire_subject: str, data: bytes) -> bytes | None:
        """A whole ``engine.islands`` message, or None while its parts are incomplete
        (a malformed part is dropped as undecodable; a snapshot given up is counted as
        ``islands_incomplete``)."""
        parts = self._status_parts
        try:
            whole = parts.add(data)
        except ValueError as e:
            self._undecodable(e, wire_subject)
            whole = None
        if d := parts.incomplete - self._status_incomplete:
            self._status_incomplete = parts.incomplete
            self.m_dropped.inc(d, reason="islands_incomplete")
            log.warning(
                "engine.islands snapshot dropped: not every part arrived",
                extra={"subject": wire_subject, "snapshots": d},
            )
        return whole

    def _undecodable(self, error: object, wire_subject: str) -> None:
        self.m_dropped.inc(reason="decode")
        log.warning("undecodable NATS message: %s", error, extra={"subject": wire_subject})

    def _deliver_heartbeats(self, w: _Wire) -> None:
        pending, w.pending = w.pending, []
        if not pending:
            return
        positions, has_position, rooms, errors = _core.codec_decode_heartbeats(
            [p[2] for p in pending]
        )
        for i, message in errors:
            self._undecodable(message, pending[i][1])
        if not has_position.all():  # undecodable, or no position: ignored by every consumer
            keep = np.flatnonzero(has_position).tolist()
            pending = [pending[i] for i in keep]
            positions = positions[keep]
            rooms = [rooms[i] for i in keep]
            if not pending:
                return
        subjects = [p[0] for p in pending]
        for sub in list(w.subs):
            if sub.batch:
                if sub.pattern == HEARTBEATS:
                    mine = None  # all of them
                else:
                    mine = [i for i, s in enumerate(subjects) if subject_matches(sub.pattern, s)]
                    if not mine:
                        continue
                sel = pending if mine is None else [pending[i] for i in mine]
                batch = HeartbeatBatch(
                    [p[0].split(".")[1] for p in sel],  # peer.<addr>.heartbeat
                    positions if mine is None else positions[mine],
                    rooms if mine is None else [rooms[i] for i in mine],
                )
                self._call(sub, HEARTBEATS, batch)
            else:
                for subject, _w, data in pending:
                    if subject_matches(sub.pattern, subject):
                        hb = Heartbeat.from_bytes(data)  # exactly as decode_payload gives it
                        self._call(sub, subject, hb)

    def _call(self, sub: Subscription, subject: str, payload: Any) -> None:
        try:
            sub.handler(subject, payload)
        except Exception:
            self.handler_errors += 1
            log.exception("pub/sub handler failed", extra={"subject": subject})

    # --- shutdown -----------------------------------------------------------------

    def close(self) -> None:
        """Stop delivering to local handlers (the connection closes in :meth:`aclose`)."""
        for w in self._wires.values():
            w.subs.clear()
            w.pending.clear()

    async def aclose(self) -> None:
        """Flush what was published, then close the NATS connection. Idempotent."""
        if self._closed:
            return
        self._closing = True
        self.close()
        with contextlib.suppress(Exception):
            await self.flush(timeout=2.0)
        self._closed = True
        self._wires.clear()
        if self.c_client is not None:
            await asyncio.to_thread(self.c_client.close)
            self._sync_c()
        with contextlib.suppress(Exception):
            await self.nc.close()


__all__ = [
    "DEFAULT_MAX_OUTBOX_BYTES",
    "DEFAULT_PENDING_SIZE",
    "EngineFeed",
    "IslandRelay",
    "NatsPubSub",
    "decode_heartbeat_batch",
    "decode_island_changes",
    "decode_island_membership",
    "encode_heartbeat_batch",
]
