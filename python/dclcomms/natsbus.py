"""A :class:`~dclcomms.bus.Bus` over NATS (nats-py, asyncio).

::

    bus = await NatsBus.connect(["nats://10.0.0.1:4222", "nats://10.0.0.2:4222"])
    realm = Realm(config, bus=bus)       # connector glue, core and stats unchanged

Threading: everything runs on the event loop that called :meth:`NatsBus.connect`;
handlers run on that loop, as on the in-process bus.

Publishing never blocks the caller (the core's tick, the connector's pump):
:meth:`publish` validates the subject (:mod:`dclcomms.subjects`), encodes the
payload and appends it to an outbox; one drain task per loop iteration hands the
outbox to nats-py, whose flusher writes everything queued in one socket write.
A heartbeat batch thus becomes one NATS message per ``peer.<addr>.heartbeat``,
all flushed together. **Bound**: the outbox holds at most ``max_outbox_bytes``
(default 128 MiB: one tick's output must fit; the first tick of 10,000
new peers publishes about 52 MiB of ``island_changed``) and nats-py's pending
buffer ``pending_size`` (default 8 MiB);
while disconnected nats-py keeps publishing into that buffer and refuses beyond
it. Messages beyond either bound are dropped and counted
(``dcl_nats_dropped_total{reason}``) - heartbeats are periodic and the core
rebuilds its state from them, so dropping beats blocking the tick.

Receiving: one NATS subscription per wire pattern, shared by every local
subscription that needs it; each message is decoded once and delivered to the
local handlers whose internal pattern matches. Heartbeats are re-batched: all
heartbeats received in one loop iteration are delivered as one
:class:`~dclcomms.bus.HeartbeatBatch` (``received_ms`` = arrival time).

Reconnection is nats-py's: every URL is tried (randomized), forever, waiting
``reconnect_time_wait`` between rounds (plus jitter); subscriptions are restored
by nats-py after a reconnect. Bad tokens (publish) and undecodable or
badly-addressed messages (receive) are logged and counted
(``dcl_nats_subject_errors_total{code}``, ``dcl_nats_dropped_total{reason}``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dclcomms.bus import (
    HEARTBEATS,
    Bus,
    Handler,
    Heartbeat,
    HeartbeatBatch,
    HeartbeatHandler,
    Message,
    Subscription,
    decode_payload,
    subject_matches,
)
from dclcomms.errors import BusError, SubjectError
from dclcomms.metrics import Registry
from dclcomms.subjects import Scheme, scheme

log = logging.getLogger("dclcomms.natsbus")

DEFAULT_MAX_OUTBOX_BYTES = 128 * 1024 * 1024
DEFAULT_PENDING_SIZE = 8 * 1024 * 1024


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(eq=False)
class _Wire:
    """One NATS subscription and the local subscriptions fed by it."""

    pattern: str
    subs: list[Subscription] = field(default_factory=list)
    nats_sub: Any = None
    task: asyncio.Task[None] | None = None
    # heartbeats received this loop iteration: (internal subject, addr, heartbeat, ms)
    pending: list[tuple[str, str, Heartbeat, int]] = field(default_factory=list)


class NatsBus(Bus):
    """Publish/subscribe over NATS with the subject scheme ``subjects``."""

    def __init__(
        self,
        nc: Any,
        *,
        subjects: str | Scheme = "workers",
        registry: Registry | None = None,
        max_outbox_bytes: int = DEFAULT_MAX_OUTBOX_BYTES,
    ) -> None:
        self.nc = nc
        self.scheme = subjects if isinstance(subjects, Scheme) else scheme(subjects)
        self.max_outbox_bytes = max_outbox_bytes
        self._loop = asyncio.get_running_loop()
        self._outbox: list[tuple[str, bytes]] = []
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
        r = registry or Registry()
        self.m_published = r.counter("dcl_nats_published_total", "messages handed to nats-py")
        self.m_received = r.counter("dcl_nats_received_total", "messages received from NATS")
        self.m_dropped = r.counter(
            "dcl_nats_dropped_total",
            "messages dropped, by reason (outbox_full, nats_buffer, decode, closed)",
        )
        self.m_subject_errors = r.counter(
            "dcl_nats_subject_errors_total",
            "subjects refused (bad token or unknown subject), by code and direction",
        )
        self.m_reconnects = r.counter("dcl_nats_reconnects_total", "reconnections to NATS")
        r.gauge("dcl_nats_outbox_bytes", "bytes waiting for nats-py", fn=lambda: self._outbox_bytes)
        r.gauge(
            "dcl_nats_connected",
            "1 while connected to a NATS server",
            fn=lambda: 1.0 if getattr(self.nc, "is_connected", False) else 0.0,
        )

    # --- construction -------------------------------------------------------------

    @classmethod
    async def connect(
        cls,
        servers: Sequence[str],
        *,
        subjects: str | Scheme = "workers",
        name: str = "dclcomms",
        registry: Registry | None = None,
        reconnect_time_wait: float = 0.5,
        connect_timeout: float = 2.0,
        pending_size: int = DEFAULT_PENDING_SIZE,
        max_outbox_bytes: int = DEFAULT_MAX_OUTBOX_BYTES,
    ) -> NatsBus:
        """Connect to the first reachable of ``servers`` (``nats://host:port``).

        Raises :class:`~dclcomms.errors.BusError` (``nats_unavailable``) when none answers.
        """
        import nats
        from nats.errors import NoServersError

        sch = subjects if isinstance(subjects, Scheme) else scheme(subjects)
        if not servers:
            raise BusError("no NATS server URL given", code="nats_unavailable")
        holder: list[NatsBus] = []

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
            raise BusError(
                f"cannot connect to NATS {list(servers)}: {e or type(e).__name__}",
                code="nats_unavailable",
            ) from e
        # ... then unbounded: once connected, reconnect forever (options is read per attempt)
        nc.options["max_reconnect_attempts"] = -1
        bus = cls(nc, subjects=sch, registry=registry, max_outbox_bytes=max_outbox_bytes)
        holder.append(bus)
        return bus

    # --- publishing ---------------------------------------------------------------

    def _subject_error(self, e: SubjectError, subject: str, direction: str) -> None:
        self.m_subject_errors.inc(code=e.code, direction=direction)
        log.error(
            "refused NATS subject: %s",
            e,
            extra={"subject": subject, "code": e.code, "direction": direction},
        )

    def publish(self, subject: str, payload: bytes | Message) -> None:
        if self._closed:
            self.m_dropped.inc(reason="closed")
            return
        try:
            wire = self.scheme.to_wire(subject)
        except SubjectError as e:
            self._subject_error(e, subject, "publish")
            return
        if isinstance(payload, bytes | bytearray):
            data = bytes(payload)
            if self.scheme.json_discovery and subject == "engine.discovery":
                data = self.scheme.encode(subject, decode_payload(subject, data))
        else:
            data = self.scheme.encode(subject, payload)
        self._enqueue(wire, data)

    def publish_heartbeats(self, batch: HeartbeatBatch) -> None:
        """One NATS message per ``peer.<addr>.heartbeat``, all flushed together."""
        for addr, hb, _ in batch.items():
            self.publish(f"peer.{addr}.heartbeat", hb)

    def _enqueue(self, wire: str, data: bytes) -> None:
        if self._outbox_bytes + len(data) > self.max_outbox_bytes:
            self.m_dropped.inc(reason="outbox_full")
            return
        self._outbox.append((wire, data))
        self._outbox_bytes += len(data)
        if self._drain_task is None:
            self._drain_task = self._loop.create_task(self._drain(), name="natsbus-drain")

    async def _drain(self) -> None:
        from nats.errors import ConnectionClosedError, OutboundBufferLimitError

        try:
            while self._outbox:
                batch, self._outbox, self._outbox_bytes = self._outbox, [], 0
                for wire, data in batch:
                    try:
                        await self.nc.publish(wire, data)
                        self.published += 1
                        self.published_bytes += len(data)
                        self.m_published.inc()
                    except OutboundBufferLimitError:
                        self.m_dropped.inc(reason="nats_buffer")
                    except ConnectionClosedError:
                        self.m_dropped.inc(reason="closed")
        finally:
            self._drain_task = None

    async def flush(self, timeout: float = 5.0) -> None:
        """Wait until everything published so far reached the server (tests, shutdown)."""
        while self._drain_task is not None:
            await asyncio.shield(self._drain_task)
        for w in list(self._wires.values()):
            if w.task is not None:
                await w.task
        if self.nc.is_connected:
            await self.nc.flush(timeout=timeout)

    # --- subscribing --------------------------------------------------------------

    def subscribe(self, pattern: str, handler: Handler) -> Subscription:
        return self._add(Subscription(pattern, handler, self))

    def subscribe_heartbeats(self, handler: HeartbeatHandler) -> Subscription:
        return self._add(Subscription(HEARTBEATS, lambda _s, b: handler(b), self, batch=True))

    def _add(self, sub: Subscription) -> Subscription:
        if self._closed:
            raise BusError("the NATS bus is closed", code="bus_closed")
        for wp in self.scheme.wire_patterns(sub.pattern):  # SubjectError for bad patterns
            w = self._wires.get(wp)
            if w is None:
                w = self._wires[wp] = _Wire(wp)
                w.task = self._loop.create_task(self._nats_subscribe(w), name=f"natsbus-sub {wp}")
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
        try:
            subject = self.scheme.from_wire(wire_subject)
        except SubjectError as e:
            self._subject_error(e, wire_subject, "receive")
            return
        try:
            payload = self.scheme.decode(subject, data)
        except ValueError as e:
            self.m_dropped.inc(reason="decode")
            log.warning("undecodable NATS message: %s", e, extra={"subject": wire_subject})
            return
        if subject.startswith("peer.") and subject.endswith(".heartbeat"):
            if payload is None:
                return  # no position: ignored by every consumer
            assert isinstance(payload, Heartbeat)
            if not w.pending:
                self._loop.call_soon(self._deliver_heartbeats, w)
            w.pending.append((subject, subject.split(".")[1], payload, _now_ms()))
            return
        for sub in list(w.subs):
            if not sub.batch and subject_matches(sub.pattern, subject):
                self._call(sub, subject, payload)

    def _deliver_heartbeats(self, w: _Wire) -> None:
        pending, w.pending = w.pending, []
        if not pending:
            return
        for sub in list(w.subs):
            if sub.batch:
                mine = [p for p in pending if subject_matches(sub.pattern, p[0])]
                if mine:
                    batch = HeartbeatBatch(
                        [p[1] for p in mine],
                        np.asarray([p[2].position for p in mine], dtype=np.float32).reshape(-1, 3),
                        [p[2].desired_room for p in mine],
                        np.asarray([p[3] for p in mine], dtype=np.int64),
                    )
                    self._call(sub, HEARTBEATS, batch)
            else:
                for subject, _a, hb, _t in pending:
                    if subject_matches(sub.pattern, subject):
                        self._call(sub, subject, hb)

    def _call(self, sub: Subscription, subject: str, payload: Any) -> None:
        try:
            sub.handler(subject, payload)
        except Exception:
            self.handler_errors += 1
            log.exception("bus handler failed", extra={"subject": subject})

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
        with contextlib.suppress(Exception):
            await self.nc.close()


__all__ = ["DEFAULT_MAX_OUTBOX_BYTES", "DEFAULT_PENDING_SIZE", "NatsBus"]
