"""The offline simulator: mobility → heartbeats → the C++ engine → metrics.

No sockets, no bus: a simulated clock drives a :class:`MobilityModel`, feeds
every connected peer's position to ``Engine.update_many`` at each heartbeat,
disconnects departed peers, and at each flush calls ``expire``, ``flush`` and
``snapshot`` and turns the arrays into per-flush metric rows. Everything per
peer is numpy; per-island Python work is limited to the policy calls for
islands that changed.
"""

from __future__ import annotations

import importlib
import math
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
from numpy.typing import NDArray

from dclcomms.errors import ConfigError
from dclcomms.sim.metrics import churn_per_peer_minute, group_split, size_percentiles
from dclcomms.sim.mobility import MobilityModel
from dclcomms.sim.policy import CostModel, SimIsland, SimPolicy


class EngineLike(Protocol):
    """The part of ``dclcomms.archipelago.Engine`` the simulator drives."""

    def update_many(
        self,
        peer_ids: Sequence[str],
        positions: NDArray[Any],
        preferred: Any = None,
        *,
        now_ms: int | None = None,
    ) -> Any: ...
    def disconnect_many(self, peer_ids: Sequence[str]) -> Any: ...
    def expire(self, now_ms: int, timeout_ms: int = 60_000) -> Any: ...
    def flush(self) -> Sequence[Any]: ...
    def snapshot(self) -> Any: ...


@dataclass(frozen=True)
class Snapshot:
    """The engine's ``snapshot()`` arrays under fixed names.

    ``island[i]`` is the row of peer ``i``'s island in the island table
    (``island_ids``, ``centers`` (k, 3), ``radii``, ``sizes``, ``max_peers``), or
    -1 for a pending peer (heard from since the last flush, not placed yet).
    """

    peer_ids: NDArray[Any]
    positions: NDArray[np.float32]
    island: NDArray[np.int64]
    island_ids: NDArray[Any]
    centers: NDArray[np.float64]
    radii: NDArray[np.float64]
    sizes: NDArray[np.int64]
    max_peers: NDArray[np.int64]

    @classmethod
    def of(cls, snap: Any) -> Snapshot:
        """Read an engine snapshot (attribute or mapping style)."""

        def get(*names: str) -> Any:
            for n in names:
                if isinstance(snap, Mapping) and n in snap:
                    return snap[n]
                if hasattr(snap, n):
                    return getattr(snap, n)
            raise ConfigError(
                f"engine snapshot has none of {names}: {type(snap).__name__}",
                code="invalid_parameter",
            )

        def strings(v: Any) -> NDArray[Any]:
            # Object arrays: a million-string list becomes one in ~10 ms, and
            # hashes faster than a fixed-width unicode array.
            return v if isinstance(v, np.ndarray) else np.array(v, dtype=object)

        return cls(
            peer_ids=strings(get("peer_ids")),
            positions=np.asarray(get("positions")),
            island=np.asarray(get("island_index", "island"), dtype=np.int64),
            island_ids=strings(get("island_ids")),
            centers=np.asarray(get("island_centers", "centers"), dtype=np.float64),
            radii=np.asarray(get("island_radii", "radii"), dtype=np.float64),
            sizes=np.asarray(get("island_sizes", "sizes"), dtype=np.int64),
            max_peers=np.asarray(get("island_max_peers", "max_peers"), dtype=np.int64),
        )

    def placed(self) -> Snapshot:
        """The same snapshot without pending peers."""
        m = self.island >= 0
        if m.all():
            return self
        return Snapshot(
            peer_ids=self.peer_ids[m],
            positions=self.positions[m],
            island=self.island[m],
            island_ids=self.island_ids,
            centers=self.centers,
            radii=self.radii,
            sizes=self.sizes,
            max_peers=self.max_peers,
        )


@dataclass
class Recording:
    """Every engine input of a run, in order, for replay (``record=True``).

    ``ops`` items: ``("update", now_ms, peer_ids, positions)``,
    ``("disconnect", now_ms, peer_ids)``, ``("expire", now_ms, timeout_ms)``,
    ``("flush", now_ms)``. ``partitions[k]`` maps peer id → island id after flush k.
    """

    ops: list[tuple[Any, ...]] = field(default_factory=list)
    partitions: list[dict[str, str]] = field(default_factory=list)


class SimResult:
    """Per-flush metrics of a simulation, as pandas DataFrames (rows accumulate over runs).

    * ``flushes`` — one row per flush: ``flush``, ``t_s``, ``peers`` (in the engine),
      ``connected`` (by the mobility model), ``islands``, ``singletons``, ``largest``,
      ``mean_size``, ``p50_size``/``p90_size``/``p99_size`` (peer-weighted), ``full``
      (islands at capacity), ``assigned`` (first assignments), ``moved`` (island
      changes with a ``from``), ``left``, ``churn`` (moved per peer-minute),
      ``grouped``, ``split``, ``split_fraction``, ``policy_calls``,
      ``transport_switches``, ``reissued`` (peers re-issued a connection string by a
      transport switch), ``cost`` (this interval), ``cost_per_hour``.
    * ``sizes`` — long form: ``flush``, ``t_s``, ``size``, ``islands``.
    * ``transport`` — long form: ``flush``, ``t_s``, ``kind``, ``rooms``,
      ``participants``, ``cost``, ``peer_upstream_Bps`` (mean upload of a member of
      that kind, participant-weighted; :meth:`CostModel.peer_upstream_bytes_per_s`),
      ``max_peer_upstream_Bps`` (its largest island's), ``server_egress_Bps``
      (what the operator sends; zero for P2P).
    * ``timings`` — wall-clock seconds per flush (``mobility``, ``update``, ``flush``,
      ``metrics``); the only part that is not reproducible.
    """

    def __init__(self) -> None:
        self._flushes: list[dict[str, Any]] = []
        self._sizes: list[tuple[int, float, int, int]] = []
        self._transport: list[tuple[int, float, str, int, int, float, float, float, float]] = []
        self._timings: list[dict[str, float]] = []
        self._frames: dict[str, tuple[int, Any]] = {}

    def _frame(self, name: str, rows: list[Any], columns: list[str] | None = None) -> Any:
        # Built once per length: rows only ever get appended.
        hit = self._frames.get(name)
        if hit is None or hit[0] != len(rows):
            hit = (len(rows), pd.DataFrame(rows, columns=columns))
            self._frames[name] = hit
        return hit[1].copy()

    @property
    def flushes(self) -> Any:
        return self._frame("flushes", self._flushes)

    @property
    def sizes(self) -> Any:
        return self._frame("sizes", self._sizes, ["flush", "t_s", "size", "islands"])

    @property
    def transport(self) -> Any:
        cols = [
            "flush",
            "t_s",
            "kind",
            "rooms",
            "participants",
            "cost",
            "peer_upstream_Bps",
            "max_peer_upstream_Bps",
            "server_egress_Bps",
        ]
        return self._frame("transport", self._transport, cols)

    @property
    def timings(self) -> Any:
        return self._frame("timings", self._timings)

    @property
    def total_cost(self) -> float:
        return float(sum(r["cost"] for r in self._flushes))

    def __len__(self) -> int:
        return len(self._flushes)

    def __repr__(self) -> str:
        return f"SimResult({len(self)} flushes, total_cost={self.total_cost:.4f})"


class _Members:
    """Member ids per island row of one snapshot, grouped lazily (one argsort per flush)."""

    def __init__(self, snap: Snapshot) -> None:
        self._snap = snap
        self._order: NDArray[np.intp] | None = None
        self._starts: NDArray[np.int64] | None = None

    def of(self, row: int) -> Callable[[], tuple[str, ...]]:
        def members() -> tuple[str, ...]:
            if self._order is None or self._starts is None:
                self._order = np.argsort(self._snap.island, kind="stable")
                self._starts = np.concatenate([[0], np.cumsum(self._snap.sizes)])
            lo, hi = int(self._starts[row]), int(self._starts[row + 1])
            return tuple(self._snap.peer_ids[self._order[lo:hi]].tolist())

        return members


def _ms(seconds: float, name: str) -> int:
    """A positive period in whole milliseconds (the engine's clock unit)."""
    ms = seconds * 1000.0 if isinstance(seconds, int | float) else math.nan
    if not (math.isfinite(ms) and ms >= 1.0 and abs(ms - round(ms)) < 1e-6):
        raise ConfigError(
            f"{name} must be a positive whole number of ms, got {seconds!r}",
            code="invalid_parameter",
        )
    return round(ms)


class Simulation:
    """An in-process simulation of one realm's clustering over simulated time.

    ``Simulation(mobility, seed=1)`` builds a ``dclcomms.archipelago.Engine`` from
    the engine parameters; pass ``engine=`` to drive another object with the same
    interface (a fresh one). Time starts at 0; each heartbeat (every
    ``heartbeat_s``) steps the mobility model and sends every connected peer's
    position; each flush (every ``flush_s``) expires silent peers
    (``expire_timeout_s``), flushes and records metrics. Departing peers send a
    disconnect, except a ``silent_leave_fraction`` of them who just stop
    heartbeating (crashed clients) and are expired by the engine.

    Reproducible: the same arguments and ``seed`` give identical DataFrames.
    """

    def __init__(
        self,
        mobility: MobilityModel,
        *,
        seed: int,
        join_distance: float = 64.0,
        leave_distance: float = 80.0,
        max_island_size: int = 100,
        id_prefix: str = "I",
        policy: SimPolicy | None = None,
        cost_model: CostModel | None = None,
        heartbeat_s: float = 1.0,
        flush_s: float = 2.0,
        expire_timeout_s: float = 60.0,
        silent_leave_fraction: float = 0.0,
        record: bool = False,
        engine: EngineLike | None = None,
    ) -> None:
        self.heartbeat_ms = _ms(heartbeat_s, "heartbeat_s")
        self.flush_ms = _ms(flush_s, "flush_s")
        self.expire_timeout_ms = _ms(expire_timeout_s, "expire_timeout_s")
        if not 0.0 <= silent_leave_fraction <= 1.0:
            raise ConfigError("silent_leave_fraction must be in [0, 1]", code="invalid_parameter")
        if policy is not None and not callable(getattr(policy, "transport_for", None)):
            raise ConfigError(
                "policy must have a transport_for(island) method", code="invalid_parameter"
            )
        self.seed = int(seed)
        self.rng = np.random.default_rng(self.seed)
        self.mobility = mobility
        self.policy = policy
        self.cost_model = cost_model if cost_model is not None else CostModel()
        self.silent_leave_fraction = float(silent_leave_fraction)
        self.engine_params = {
            "join_distance": join_distance,
            "leave_distance": leave_distance,
            "max_island_size": max_island_size,
            "id_prefix": id_prefix,
        }
        if engine is None:
            archipelago = importlib.import_module("dclcomms.archipelago")
            engine = archipelago.Engine(
                join_distance=join_distance,
                leave_distance=leave_distance,
                max_island_size=max_island_size,
                id_prefix=id_prefix,
            )
        self.engine: EngineLike = engine
        self.recording: Recording | None = Recording() if record else None
        self.result = SimResult()
        self.now_ms = 0
        n = mobility.n_peers
        self.peer_ids: NDArray[np.object_] = np.array([f"p{i}" for i in range(n)], dtype=object)
        self._index = pd.Index(self.peer_ids)
        self._connected = np.zeros(n, dtype=np.bool_)
        self._hb_ids: list[str] = []
        self._hb_mask: NDArray[np.bool_] | None = None
        self._hb_idx: NDArray[np.intp] = np.zeros(0, dtype=np.intp)
        self._kind: dict[str, str] = {}
        self._flush_no = 0
        self._tick_timing = {"mobility": 0.0, "update": 0.0}
        mobility.reset(self.rng)

    # -- clock -------------------------------------------------------------

    def run(self, seconds: float, progress: bool = True) -> SimResult:
        """Advance the clock by ``seconds`` (whole heartbeat steps); return ``self.result``.

        Calls accumulate: a second ``run`` continues where the first stopped.
        """
        step = math.gcd(self.heartbeat_ms, self.flush_ms)
        end = self.now_ms + round(seconds * 1000)
        ticks = max((end - self.now_ms) // step, 0)
        bar: Any = None
        if progress:
            from tqdm.auto import tqdm  # type: ignore[import-untyped]

            bar = tqdm(total=ticks, unit="tick", desc="simulating")
        try:
            for _ in range(ticks):
                self.now_ms += step
                if self.now_ms % self.heartbeat_ms == 0:
                    self._heartbeat()
                if self.now_ms % self.flush_ms == 0:
                    self._flush()
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        return self.result

    @property
    def t_s(self) -> float:
        return self.now_ms / 1000.0

    @property
    def island_kinds(self) -> Mapping[str, str]:
        """Island id -> transport kind the policy chose at the last flush (empty without
        a policy)."""
        return self._kind

    def snapshot(self) -> Snapshot:
        """The engine's current snapshot (islands as of the last flush)."""
        return Snapshot.of(self.engine.snapshot())

    # -- heartbeats --------------------------------------------------------

    def _heartbeat(self) -> None:
        t0 = time.perf_counter()
        self.mobility.step(self.t_s, self.heartbeat_ms / 1000.0, self.rng)
        t1 = time.perf_counter()
        active = self.mobility.active
        gone = np.flatnonzero(self._connected & ~active)
        if gone.size:
            loud = gone
            if self.silent_leave_fraction > 0:
                loud = gone[self.rng.uniform(0.0, 1.0, gone.size) >= self.silent_leave_fraction]
            if loud.size:
                ids = self.peer_ids[loud].tolist()
                self.engine.disconnect_many(ids)
                if self.recording is not None:
                    self.recording.ops.append(("disconnect", self.now_ms, ids))
        if self._hb_mask is None or not np.array_equal(self._hb_mask, active):
            self._hb_mask = active.copy()
            self._hb_idx = np.flatnonzero(active)
            self._hb_ids = self.peer_ids[self._hb_idx].tolist()
        if self._hb_idx.size:
            pos = np.ascontiguousarray(self.mobility.positions[self._hb_idx])
            self.engine.update_many(self._hb_ids, pos, now_ms=self.now_ms)
            if self.recording is not None:
                self.recording.ops.append(("update", self.now_ms, list(self._hb_ids), pos.copy()))
        self._connected = active.copy()
        t2 = time.perf_counter()
        self._tick_timing["mobility"] += t1 - t0
        self._tick_timing["update"] += t2 - t1

    # -- flushes -----------------------------------------------------------

    def _flush(self) -> None:
        t0 = time.perf_counter()
        self.engine.expire(self.now_ms, self.expire_timeout_ms)
        changes = self.engine.flush()
        t1 = time.perf_counter()
        if self.recording is not None:
            self.recording.ops.append(("expire", self.now_ms, self.expire_timeout_ms))
            self.recording.ops.append(("flush", self.now_ms))
        # Right after a flush nobody is pending; placed() only guards the contract.
        snap = self.snapshot().placed()
        assigned = moved = left = 0
        touched: set[str] = set()
        for c in changes:
            if c.kind == "left":  # island_id: the island left
                left += 1
                if c.island_id:
                    touched.add(c.island_id)
                continue
            touched.add(c.island_id)
            if c.from_island_id:
                moved += 1
                touched.add(c.from_island_id)
            else:
                assigned += 1
        self._record_metrics(snap, assigned, moved, left, touched)
        if self.recording is not None:
            self.recording.partitions.append(
                dict(
                    zip(snap.peer_ids.tolist(), snap.island_ids[snap.island].tolist(), strict=True)
                )
            )
        t2 = time.perf_counter()
        self.result._timings.append(
            {
                "flush": self._flush_no,
                "mobility": self._tick_timing["mobility"],
                "update": self._tick_timing["update"],
                "flush_s": t1 - t0,
                "metrics": t2 - t1,
            }
        )
        self._tick_timing = {"mobility": 0.0, "update": 0.0}
        self._flush_no += 1

    def _sim_rows(self, peer_ids: NDArray[Any]) -> NDArray[np.intp]:
        """Row of each snapshot peer in the simulation's arrays.

        Our ids are ``p<row>``: parsing them in one C pass is ~10x faster than
        hashing a million fresh strings. The parse is verified against the ids
        (one vectorised comparison); anything unexpected falls back to hashing.
        """
        n = peer_ids.size
        if n == 0:
            return np.zeros(0, dtype=np.intp)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # malformed text: caught below
                rows = np.fromstring(  # text mode (sep) is not the deprecated binary mode
                    " ".join(peer_ids.tolist()).replace("p", ""), dtype=np.int64, sep=" "
                )
        except ValueError:
            rows = np.zeros(0, dtype=np.int64)
        total = self.peer_ids.size
        if (
            rows.size == n
            and rows.min() >= 0
            and rows.max() < total
            and (self.peer_ids[rows] == peer_ids).all()
        ):
            return rows.astype(np.intp)
        hashed: NDArray[np.intp] = self._index.get_indexer(peer_ids)
        return hashed

    def _record_metrics(
        self, snap: Snapshot, assigned: int, moved: int, left: int, touched: Iterable[str]
    ) -> None:
        minutes = self.flush_ms / 60_000.0
        t_s = self.t_s
        sizes = snap.sizes
        n_isl = int(sizes.size)
        peers = int(snap.peer_ids.size)
        idx = self._sim_rows(snap.peer_ids)
        if np.any(idx < 0):
            raise ConfigError(
                "engine snapshot holds peers the simulation never sent", code="invalid_parameter"
            )
        grouped, split, _ = group_split(self.mobility.groups[idx], snap.island, n_isl)
        p50, p90, p99 = size_percentiles(sizes)
        # Transport kinds: ask the policy for new and changed islands only.
        kinds: list[str] = []
        policy_calls = switches = reissued = 0
        if self.policy is not None:
            touched_set = set(touched)
            new_kind: dict[str, str] = {}
            ids = snap.island_ids.tolist()
            members = _Members(snap)
            for row, iid in enumerate(ids):
                old = self._kind.get(iid)
                if old is None or iid in touched_set:
                    island = SimIsland(
                        id=iid,
                        size=int(sizes[row]),
                        center=(float(snap.centers[row, 0]), float(snap.centers[row, -1])),
                        radius=float(snap.radii[row]),
                        max_peers=int(snap.max_peers[row]),
                        kind=old,
                        members=members.of(row),
                    )
                    k = self.cost_model.check_kind(self.policy.transport_for(island))
                    policy_calls += 1
                    if old is not None and k != old:
                        switches += 1
                        reissued += int(sizes[row])
                else:
                    k = old
                new_kind[iid] = k
                kinds.append(k)
            removed = getattr(self.policy, "island_removed", None)
            if callable(removed):
                for iid in self._kind.keys() - new_kind.keys():
                    removed(iid)
            self._kind = new_kind
        cost = 0.0
        if kinds:
            kind_arr = np.asarray(kinds)
            for kind in sorted(set(kinds)):
                m = kind_arr == kind
                rooms = int(m.sum())
                participants = int(sizes[m].sum())
                c = self.cost_model.cost(kind, participants, rooms, minutes)
                cost += c
                up = self.cost_model.peer_upstream_bytes_per_s(kind, sizes[m])
                egress = float(self.cost_model.server_egress_bytes_per_s(kind, sizes[m]).sum())
                self.result._transport.append(
                    (
                        self._flush_no,
                        t_s,
                        kind,
                        rooms,
                        participants,
                        c,
                        float((up * sizes[m]).sum() / participants) if participants else 0.0,
                        float(up.max()),
                        egress,
                    )
                )
        counts = np.bincount(sizes) if n_isl else np.zeros(1, dtype=np.int64)
        for size in np.flatnonzero(counts):
            self.result._sizes.append((self._flush_no, t_s, int(size), int(counts[size])))
        self.result._flushes.append(
            {
                "flush": self._flush_no,
                "t_s": t_s,
                "peers": peers,
                "connected": int(self._connected.sum()),
                "islands": n_isl,
                "singletons": int(np.count_nonzero(sizes == 1)),
                "largest": int(sizes.max()) if n_isl else 0,
                "mean_size": float(peers / n_isl) if n_isl else 0.0,
                "p50_size": p50,
                "p90_size": p90,
                "p99_size": p99,
                "full": int(np.count_nonzero(sizes >= snap.max_peers)) if n_isl else 0,
                "assigned": assigned,
                "moved": moved,
                "left": left,
                "churn": churn_per_peer_minute(moved, peers, self.flush_ms / 1000.0),
                "grouped": grouped,
                "split": split,
                "split_fraction": split / grouped if grouped else 0.0,
                "policy_calls": policy_calls,
                "transport_switches": switches,
                "reissued": reissued,
                "cost": cost,
                "cost_per_hour": cost / minutes * 60.0,
            }
        )
