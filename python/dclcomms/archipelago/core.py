"""The archipelago core: owns the clustering engine and publishes island updates.

One tick (archipelago.md 2.1, 2.4):

1. expire peers silent for ``heartbeat_timeout_ms`` (start of the tick);
2. ``engine.flush()``: at most one change per peer;
3. ask the policy **once per island whose membership changed** which transport it
   uses; mint connection strings only for peers that moved into an island, or for
   every member of an island whose transport changed (re-issued with
   ``from_island_id`` = the same island);
4. publish every ``engine.peer.<addr>.island_changed`` (peers = every member,
   recipient included, -> last position, from :meth:`Engine.islands`), **then** the
   ``engine.island.<id>.peer_left`` / ``peer_join`` notifications;
5. publish ``engine.islands``.

The next tick starts ``max(period - elapsed, 1 ms)`` after this one ends.
``engine.discovery`` is published every ``discovery_interval_ms``.

Everything runs on the realm's event loop; the engine releases the GIL inside
``flush``/``update_many`` but is only ever called from this thread.

On NATS with the native scheme and the C++ client (``NatsPubSub.publishes_ticks``) the
tick runs in C++ except for the policy (:meth:`ArchipelagoCore._tick_cpp`): expire, flush,
grouping per island, the built-in transports' connection strings
(:meth:`Transport.native_issuer <dclcomms.policy.Transport.native_issuer>`), encoding and
queueing steps 4-5 on the C++ client, with no Python per peer; the messages are those of
the Python tick (:meth:`ArchipelagoCore._tick_py`), which every other bus uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from dclcomms import _core
from dclcomms.archipelago import Engine
from dclcomms.clock import now_ms
from dclcomms.config import RealmConfig
from dclcomms.metrics import Registry
from dclcomms.policy import IslandView, RealmPolicy, Transport
from dclcomms.pubsub import (
    Discovery,
    HeartbeatBatch,
    IslandChanged,
    IslandData,
    IslandMembers,
    IslandPeer,
    IslandStatus,
    PubSub,
    Subscription,
)

log = logging.getLogger("dclcomms.archipelago.core")

FLUSH_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
ISLAND_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 50, 75, 100, 150, 200)


@dataclass(frozen=True)
class TickReport:
    """What one tick did (returned by :meth:`ArchipelagoCore.tick`, logged at DEBUG)."""

    changes: int
    left: int
    island_changed: int
    switches: int
    duration_s: float


class CoreMetrics:
    def __init__(self, registry: Registry) -> None:
        r = registry
        self.flush_seconds = r.histogram(
            "dcl_archipelago_flush_duration_seconds",
            "wall time of one tick (expire, flush, policy, minting, publishing)",
            FLUSH_BUCKETS,
        )
        self.island_sizes = r.histogram(
            "dcl_archipelago_island_size",
            "members per island, one observation per island per tick",
            ISLAND_SIZE_BUCKETS,
        )
        self.peers = r.gauge("dcl_archipelago_peers", "peers known to the engine")
        self.islands = r.gauge("dcl_archipelago_islands", "islands")
        self.ticks = r.counter("dcl_archipelago_ticks_total", "clustering ticks")
        self.tick_errors = r.counter(
            "dcl_archipelago_tick_errors_total", "ticks that raised (logged; the loop continues)"
        )
        self.heartbeats = r.counter(
            "dcl_archipelago_heartbeats_total", "position heartbeats ingested by the engine"
        )
        self.disconnects = r.counter(
            "dcl_archipelago_disconnects_total", "disconnects ingested by the engine"
        )
        self.changes = r.counter(
            "dcl_archipelago_island_changes_total", "engine changes by kind (changed, left)"
        )
        self.issued = r.counter(
            "dcl_archipelago_connection_strings_total", "connection strings minted, by transport"
        )
        self.switches = r.counter(
            "dcl_archipelago_transport_switches_total",
            "islands re-issued because the policy changed their transport",
        )
        self.rejected = r.counter(
            "dcl_archipelago_transport_rejections_total",
            "peers a transport refused (no island_changed sent; evicted, then backed off)",
        )
        self.backoff_dropped = r.counter(
            "dcl_archipelago_backoff_heartbeats_total",
            "heartbeats ignored because their peer is in its re-admission back-off",
        )
        self.rejected_positions = r.counter(
            "dcl_archipelago_heartbeats_rejected_total",
            "heartbeats not clustered: a non-finite coordinate (invalid) or one beyond "
            "world_bound_m (out_of_bounds); a connector drops them first, this catches others",
        )
        self.policy_errors = r.counter(
            "dcl_archipelago_policy_errors_total",
            "policy or transport exceptions (the island kept or got the default transport)",
        )


class ArchipelagoCore:
    """Engine + policy + pub/sub: fed through the pub/sub, driven by :meth:`run` or :meth:`tick`."""

    def __init__(
        self,
        engine: Engine,
        pubsub: PubSub,
        policy: RealmPolicy,
        *,
        flush_interval_s: float = 2.0,
        heartbeat_timeout_ms: int = 60_000,
        discovery_interval_ms: int = 10_000,
        commit_hash: str = "",
        registry: Registry | None = None,
        clock_ms: Callable[[], int] = now_ms,
        reject_backoff_ms: int = 30_000,
        world_bound_m: float = 0.0,
        cpp_tick: bool = True,
    ) -> None:
        """``world_bound_m``: heartbeats with a coordinate beyond it (in absolute value) are
        dropped and counted, like non-finite ones always are (0 = no bound; the realm's
        setting of that name, 4096 m by default, through :func:`core_from_config`).
        ``cpp_tick=False`` keeps the tick in Python on every bus (for comparison: the
        same messages, see :meth:`_tick_cpp`)."""
        self.engine = engine
        self.world_bound_m = float(world_bound_m)
        self.pubsub = pubsub
        self.policy = policy
        self.flush_interval_s = flush_interval_s
        self.heartbeat_timeout_ms = heartbeat_timeout_ms
        self.discovery_interval_ms = discovery_interval_ms
        self.commit_hash = commit_hash
        registry = registry or Registry()
        self.metrics = CoreMetrics(registry)
        self._clock = clock_ms
        # archipelago.md 2.6 rule 4: a peer its island's transport rejected is evicted
        # (its island hears peer_left) and not re-admitted before this deadline.
        self.reject_backoff_ms = reject_backoff_ms
        self._rejected_until: dict[str, int] = {}
        self._tick_rejected: list[str] = []
        registry.gauge(
            "dcl_archipelago_backoff_peers",
            "peers a transport rejected, waiting out their re-admission back-off",
            fn=lambda: len(self._rejected_until),
        )
        self.island_transport: dict[str, Transport] = {}
        self.last_tick_ms: int | None = None
        self.last_tick_s = 0.0  # wall time of the last tick
        self._last_discovery_ms: int | None = None
        # A NATS pub/sub with the C++ client feeds the engine itself (heartbeats,
        # connect, disconnect; no Python per message) when the core reads the wall
        # clock as the C++ side does; otherwise the core subscribes.
        self._feed: Any = None
        self._feed_seen: dict[str, int] = {}
        feed_engine = getattr(pubsub, "feed_engine", None)
        if feed_engine is not None and clock_ms is now_ms:
            self._feed = feed_engine(engine, world_bound_m=self.world_bound_m)
        # The native scheme with the C++ client: the tick's per-change work (grouping,
        # connection strings of the built-in transports, encoding, publishing) is C++;
        # the policy still runs in Python, once per touched island.
        compiled = getattr(engine, "_core", None)
        self._tick_engine: _core.ArchipelagoEngine | None = None
        if (
            cpp_tick
            and getattr(pubsub, "publishes_ticks", False)
            and isinstance(compiled, _core.ArchipelagoEngine)
        ):
            self._tick_engine = compiled
        self._subs: list[Subscription] = []
        if self._feed is None:
            self._subs = [
                pubsub.subscribe_heartbeats(self._on_heartbeats),
                pubsub.subscribe("peer.*.disconnect", self._on_disconnect),
                # A new session (archipelago.md 2.2: connect = reset): the peer re-enters
                # with its next heartbeat and gets a fresh island_changed on that session,
                # also when it moved to another connector.
                pubsub.subscribe("peer.*.connect", self._on_disconnect),
            ]

    @property
    def _cpp_tick(self) -> bool:
        """Ticks run in C++ (:meth:`_tick_cpp`): the native scheme with the C++ client."""
        return self._tick_engine is not None

    @property
    def fed_in_cpp(self) -> bool:
        """The engine is fed by the pub/sub's C++ client (not through Python handlers)."""
        return self._feed is not None

    def sync_feed(self, settle: bool = False) -> None:
        """Adds what the C++ feed ingested since the last call to the core's counters
        (every tick does; ``settle`` first waits until everything received is applied)."""
        feed = self._feed
        if feed is None:
            return
        if settle:
            feed.settle()
        st = feed.stats()
        m = self.metrics
        for key, counter, labels in (
            ("heartbeats", m.heartbeats, {}),
            ("resets", m.disconnects, {}),
            ("backoff_dropped", m.backoff_dropped, {}),
            ("invalid_position", m.rejected_positions, {"reason": "invalid"}),
            ("out_of_bounds", m.rejected_positions, {"reason": "out_of_bounds"}),
        ):
            value = int(st.get(key, 0))
            d = value - self._feed_seen.get(key, 0)
            self._feed_seen[key] = value
            if d > 0:
                counter.inc(d, **labels)

    def close(self) -> None:
        for s in self._subs:
            s.unsubscribe()
        self._subs.clear()
        if self._feed is not None:
            self.sync_feed()
            self._feed.close()
            self._feed = None

    # --- inputs -----------------------------------------------------------------

    def _on_heartbeats(self, batch: HeartbeatBatch) -> None:
        n = len(batch)
        if n == 0:
            return
        if self._rejected_until:
            batch = self._without_backed_off(batch)
            n = len(batch)
            if n == 0:
                return
        batch = self._in_world(batch)
        n = len(batch)
        if n == 0:
            return
        # The batch's columns as they are: the engine turns each desired room into its
        # PreferenceOp (in C++) and keeps the positions (Engine.islands() returns them).
        self.engine.update_many(
            batch.addresses, batch.positions, batch.desired_rooms, now_ms=self._clock()
        )
        self.metrics.heartbeats.inc(n)

    def _in_world(self, batch: HeartbeatBatch) -> HeartbeatBatch:
        """``batch`` minus heartbeats with a non-finite coordinate or one beyond the bound
        (connectors over NATS that are not ours may send them; ours drop them first)."""
        with np.errstate(invalid="ignore"):
            extent = np.abs(batch.positions).max(axis=1)  # NaN propagates
        bound = self.world_bound_m if self.world_bound_m > 0 else np.inf
        ok = extent <= bound  # False for NaN; inf only passes an infinite bound
        if bound == np.inf:
            ok &= np.isfinite(extent)
        if ok.all():
            return batch
        bad = extent[~ok]
        invalid = int(np.count_nonzero(~np.isfinite(bad)))
        if invalid:
            self.metrics.rejected_positions.inc(invalid, reason="invalid")
        if len(bad) - invalid:
            self.metrics.rejected_positions.inc(len(bad) - invalid, reason="out_of_bounds")
        return batch.select(np.flatnonzero(ok).tolist())

    def _without_backed_off(self, batch: HeartbeatBatch) -> HeartbeatBatch:
        """``batch`` minus the heartbeats of peers still in their back-off."""
        now = self._clock()
        blocked = self._rejected_until
        for a in [a for a, until in blocked.items() if until <= now]:
            del blocked[a]
        if not blocked:
            return batch
        keep = [i for i, a in enumerate(batch.addresses) if a not in blocked]
        if len(keep) == len(batch):
            return batch
        self.metrics.backoff_dropped.inc(len(batch) - len(keep))
        return batch.select(keep)

    def _on_disconnect(self, subject: str, _payload: object) -> None:
        addr = subject.split(".")[1]
        self.engine.disconnect(addr)
        self.metrics.disconnects.inc()

    # --- the tick -----------------------------------------------------------------

    def _transport_for(
        self,
        island_id: str,
        peers: tuple[str, ...],
        center: Any,
        radius: float,
        max_peers: int,
    ) -> Transport:
        current = self.island_transport.get(island_id)
        view = IslandView(
            id=island_id,
            peers=peers,
            center=(float(center[0]), float(center[1]), float(center[2])),
            radius=float(radius),
            max_peers=int(max_peers),
            transport=current.name if current is not None else None,
        )
        try:
            return self.policy.transport_for(view)
        except Exception:
            self.metrics.policy_errors.inc()
            log.exception("policy failed", extra={"island": island_id})
            return current if current is not None else self.policy.transports.default

    def _assign_transports(
        self,
        touched: dict[str, None],
        view: Callable[[str], tuple[tuple[str, ...], Any, float, int] | None],
        issue: Callable[[str, Transport, bool], None],
    ) -> int:
        """The policy once per touched island (``view``: its peers, center, radius and
        capacity, None when gone); ``issue(island, transport, switched)`` mints its
        strings. Returns how many islands switched transport."""
        switches = 0
        for island_id in touched:
            v = view(island_id)
            if v is None:
                continue
            transport = self._transport_for(island_id, *v)
            previous = self.island_transport.get(island_id)
            self.island_transport[island_id] = transport
            switched = previous is not None and previous is not transport
            switches += switched
            issue(island_id, transport, switched)
        return switches

    def _recheck(self) -> list[str]:
        """The policy's :meth:`~dclcomms.policy.RealmPolicy.islands_to_recheck` (once per
        tick, before the policy runs; an error counts and rechecks nothing)."""
        try:
            return list(self.policy.islands_to_recheck())
        except Exception:
            self.metrics.policy_errors.inc()
            log.exception("policy islands_to_recheck failed")
            return []

    def _forget_removed(self, exists: Callable[[str], bool]) -> None:
        for island_id in [i for i in self.island_transport if not exists(i)]:
            del self.island_transport[island_id]
            try:
                self.policy.island_removed(island_id)
            except Exception:
                self.metrics.policy_errors.inc()
                log.exception("policy island_removed failed", extra={"island": island_id})

    def _issue(self, transport: Transport, island_id: str, peers: list[str]) -> dict[str, str]:
        if not peers:
            return {}
        try:
            out = transport.issue(island_id, peers)
        except Exception:
            self.metrics.policy_errors.inc()
            log.exception("transport failed", extra={"island": island_id})
            return {}
        self.metrics.issued.inc(len(out), transport=transport.name)
        if len(out) < len(peers):
            self.metrics.rejected.inc(len(peers) - len(out))
            self._tick_rejected.extend(p for p in peers if p not in out)
        return out

    def tick(self) -> TickReport:
        # A tick after many arrivals builds tens of thousands of small objects (changes,
        # messages, tuples) and no cycles: pausing the cyclic GC while they are built
        # saves ~20 % of a 10,000-peer first tick (it collects after the tick instead).
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            return self._tick()
        finally:
            if was_enabled:
                gc.enable()

    def _tick(self) -> TickReport:
        t0 = time.perf_counter()
        now = self._clock()
        self.sync_feed()
        tick = self._tick_cpp if self._cpp_tick else self._tick_py
        n_changes, n_left, sent, switches, sizes = tick(now)
        if self._last_discovery_ms is None or now - self._last_discovery_ms >= (
            self.discovery_interval_ms
        ):
            self.publish_discovery(now)

        engine = self.engine
        if self._tick_rejected:  # evicted now: the next flush tells their islands (left)
            until = now + self.reject_backoff_ms
            for p in self._tick_rejected:
                engine.disconnect(p)
                self._rejected_until[p] = until
            self._tick_rejected.clear()
            if self._feed is not None:  # the C++ feed filters them from now on
                self._feed.set_backoff(self._rejected_until)
        elif self._feed is not None and self._rejected_until:
            blocked = self._rejected_until  # the C++ feed forgets expired ones itself
            for a in [a for a, t in blocked.items() if t <= now]:
                del blocked[a]

        m = self.metrics
        m.ticks.inc()
        m.peers.set(engine.peer_count)
        m.islands.set(len(sizes))
        for n in sizes:
            m.island_sizes.observe(n)
        self.last_tick_ms = now
        dt = time.perf_counter() - t0
        self.last_tick_s = dt
        m.flush_seconds.observe(dt)
        return TickReport(n_changes, n_left, sent, switches, dt)

    def _count_changes(self, n_left: int, n_changed: int) -> None:
        if n_left:
            self.metrics.changes.inc(n_left, kind="left")
        if n_changed:
            self.metrics.changes.inc(n_changed, kind="changed")

    def _tick_cpp(self, now: int) -> tuple[int, int, int, int, list[int]]:
        """Expire, flush, grouping, minting and publishing in C++ (native scheme); the
        policy in Python once per touched island. Same messages as :meth:`_tick_py`."""
        assert self._tick_engine is not None
        # copied by the tick with the islands that changed (no other id names an island)
        recheck = [i for i in self._recheck() if isinstance(i, str)]
        tick = _core.ArchipelagoTick(self._tick_engine, now, self.heartbeat_timeout_ms, recheck)
        n_changes, n_left, n_changed = tick.counts
        self._count_changes(n_left, n_changed)

        def issue(island_id: str, transport: Transport, switched: bool) -> None:
            spec = transport.native_issuer()
            if spec is None:  # a transport of its own: asked in Python
                targets = tick.targets(island_id, switched)
                tick.set_issued(island_id, switched, self._issue(transport, island_id, targets))
                return
            try:
                n = tick.issue(island_id, switched, *spec)
            except Exception:
                self.metrics.policy_errors.inc()
                log.exception("transport failed", extra={"island": island_id})
                return
            if n:
                self.metrics.issued.inc(n, transport=transport.name)

        touched = dict.fromkeys(tick.touched())
        switches = self._assign_transports(touched, tick.view, issue)
        exists = set(tick.island_ids())
        self._forget_removed(exists.__contains__)
        if switches:
            self.metrics.switches.inc(switches)
        sent = self.pubsub.publish_tick(tick)  # type: ignore[attr-defined]
        return n_changes, n_left, sent, switches, tick.sizes()

    def _tick_py(self, now: int) -> tuple[int, int, int, int, list[int]]:
        engine = self.engine
        engine.expire(now, self.heartbeat_timeout_ms)
        changes = engine.flush()
        islands = {i.id: i for i in engine.islands()}

        moved: dict[str, list[str]] = {}  # island -> peers that arrived, in change order
        touched: dict[str, None] = {}  # islands whose membership changed, ordered
        left: list[tuple[str, str]] = []  # (island, peer)
        joined: list[tuple[str, str]] = []
        moves: list[tuple[str, str, str | None]] = []  # (peer, island, from)
        n_left = 0
        for c in changes:
            if c.kind == "changed":
                moved.setdefault(c.island_id, []).append(c.peer_id)
                touched[c.island_id] = None
                moves.append((c.peer_id, c.island_id, c.from_island_id))
                if c.from_island_id is not None:
                    touched[c.from_island_id] = None
                    left.append((c.from_island_id, c.peer_id))
                joined.append((c.island_id, c.peer_id))
            else:
                n_left += 1
                gone_from = c.island_id if c.island_id is not None else c.from_island_id
                if gone_from is not None:
                    touched[gone_from] = None
                    left.append((gone_from, c.peer_id))
        self._count_changes(n_left, len(moves))
        for island_id in self._recheck():
            touched[island_id] = None

        # Policy once per changed island; strings only for arrivals or on a switch.
        conn: dict[str, str] = {}
        reissue: list[tuple[str, str]] = []  # (peer, island) kept members of switched islands

        def view(island_id: str) -> tuple[tuple[str, ...], Any, float, int] | None:
            i = islands.get(island_id)
            return None if i is None else (tuple(i.peers), i.center, i.radius, i.max_peers)

        def issue(island_id: str, transport: Transport, switched: bool) -> None:
            arrivals = moved.get(island_id, [])
            if switched:
                arrived = set(arrivals)
                stay = [p for p in islands[island_id].peers if p not in arrived]
                issued = self._issue(transport, island_id, arrivals + stay)
                reissue.extend((p, island_id) for p in stay if p in issued)
            else:
                issued = self._issue(transport, island_id, arrivals)
            for p, s in issued.items():
                conn[f"{island_id}\0{p}"] = s

        switches = self._assign_transports(touched, view, issue)
        self._forget_removed(islands.__contains__)
        if switches:
            self.metrics.switches.inc(switches)

        # island_changed first, then left/join.
        # One IslandMembers per island, shared by all its messages (a NATS pub/sub
        # encodes its member map once, not once per recipient).
        members_cache: dict[str, IslandMembers] = {}

        def members(island_id: str) -> IslandMembers:
            m = members_cache.get(island_id)
            if m is None:
                island = islands[island_id]  # members and their last positions, in order
                rows = island.positions.tolist()
                m = IslandMembers(
                    {p: (r[0], r[1], r[2]) for p, r in zip(island.peers, rows, strict=True)}
                )
                members_cache[island_id] = m
            return m

        # All of a tick's island_changed, then its peer_left and peer_join, each in one
        # call (a NATS pub/sub groups or encodes them without a subject per message).
        changed: list[tuple[str, IslandChanged]] = []
        for peer, island_id, from_id in moves:
            cs = conn.get(f"{island_id}\0{peer}")
            if cs is None or island_id not in islands:
                continue
            changed.append((peer, IslandChanged(island_id, cs, from_id, members(island_id))))
        for peer, island_id in reissue:
            cs = conn[f"{island_id}\0{peer}"]
            changed.append((peer, IslandChanged(island_id, cs, island_id, members(island_id))))
        sent = len(changed)
        pubsub = self.pubsub
        if changed:
            pubsub.publish_island_changed(changed)
        # somebody remains to be told
        lefts = [IslandPeer(i, p) for i, p in left if i in islands]
        if lefts:
            pubsub.publish_island_peers("peer_left", lefts)
        joins = [IslandPeer(i, p) for i, p in joined if i in islands]
        if joins:
            pubsub.publish_island_peers("peer_join", joins)

        status = IslandStatus(
            tuple(
                IslandData(
                    i.id,
                    tuple(i.peers),
                    int(i.max_peers),
                    (float(i.center[0]), 0.0, float(i.center[2])),
                    float(i.radius),
                )
                for i in islands.values()
            )
        )
        pubsub.publish("engine.islands", status)
        sizes = [len(i.peers) for i in islands.values()]
        return len(changes), n_left, sent, switches, sizes

    def publish_discovery(self, now: int | None = None) -> None:
        now = self._clock() if now is None else now
        self._last_discovery_ms = now
        self.pubsub.publish(
            "engine.discovery",
            Discovery("archipelago", now, self.commit_hash, int(self.engine.peer_count)),
        )

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Tick forever (or until ``stop`` is set), ``max(period - elapsed, 1 ms)`` apart."""
        period = self.flush_interval_s
        while stop is None or not stop.is_set():
            t0 = time.monotonic()
            try:
                report = self.tick()
                if report.changes:
                    log.debug("tick", extra={"tick": report.__dict__})
            except Exception:
                self.metrics.tick_errors.inc()
                log.exception("tick failed")
            delay = max(period - (time.monotonic() - t0), 0.001)
            if stop is None:
                await asyncio.sleep(delay)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)

    def overloaded(self) -> bool:
        """The last tick took longer than the flush period."""
        return self.last_tick_s > self.flush_interval_s

    def healthy(self, now_ms: int | None = None) -> bool:
        """A tick ran recently: within 3 flush periods (at least 1 s, for tiny periods)."""
        if self.last_tick_ms is None:
            return False
        now = self._clock() if now_ms is None else now_ms
        return now - self.last_tick_ms <= max(1_000, 3_000 * self.flush_interval_s)


def core_from_config(
    config: RealmConfig, pubsub: PubSub, policy: RealmPolicy, *, registry: Registry | None = None
) -> ArchipelagoCore:
    """The core a realm or ``dclcomms core`` runs: its engine and timings from ``config``."""
    engine = Engine(
        join_distance=config.join_distance,
        leave_distance=config.leave_distance,
        max_island_size=config.max_island_size,
        id_prefix=config.id_prefix,
    )
    return ArchipelagoCore(
        engine,
        pubsub,
        policy,
        flush_interval_s=config.flush_interval_s,
        heartbeat_timeout_ms=config.heartbeat_timeout_ms,
        discovery_interval_ms=config.discovery_interval_ms,
        commit_hash=config.commit_hash,
        registry=registry,
        world_bound_m=config.world_bound_m,
    )


__all__ = ["ArchipelagoCore", "TickReport", "core_from_config"]
