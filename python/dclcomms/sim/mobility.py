"""Vectorised mobility models for the offline simulator.

Every model owns a fixed number of peer *slots* and exposes three arrays that
the simulator reads after each step:

* ``positions`` — (n, 3) float64 metres, ``y`` is always 0 (the engine clusters
  on X/Z only);
* ``active`` — (n,) bool, the slot is connected (it heartbeats);
* ``groups`` — (n,) int64, the ground-truth group of the peer (a party walking
  together, the crowd of an event, the plaza a commuter stands in), ``-1`` when
  the peer belongs to no group right now or is inactive.

Models never use global random state: ``reset`` and ``step`` receive the
simulation's ``numpy.random.Generator``. All work is numpy array arithmetic, so a
step over a million slots costs tens of milliseconds.

World: Genesis City, parcels −150..150 of 16 m, i.e. x, z in [−2400, 2416).
Speeds: walking 4 m/s, running 8 m/s (the explorer's defaults, rounded).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from dclcomms.errors import ConfigError

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]
Bool = NDArray[np.bool_]

PARCEL_SIZE_M = 16.0
WALK_SPEED_MPS = 4.0
RUN_SPEED_MPS = 8.0


@dataclass(frozen=True)
class Bounds:
    """An axis-aligned X/Z rectangle, ``min`` inclusive, ``max`` exclusive (metres)."""

    x_min: float
    x_max: float
    z_min: float
    z_max: float

    def __post_init__(self) -> None:
        if not (self.x_min < self.x_max and self.z_min < self.z_max):
            raise ConfigError(f"empty bounds {self}", code="invalid_parameter")

    def clip(self, xz: F64) -> F64:
        """Clip an (n, 2) array into the rectangle (in place; returns it)."""
        np.clip(xz[:, 0], self.x_min, np.nextafter(self.x_max, -math.inf), out=xz[:, 0])
        np.clip(xz[:, 1], self.z_min, np.nextafter(self.z_max, -math.inf), out=xz[:, 1])
        return xz

    def sample(self, rng: np.random.Generator, n: int) -> F64:
        """``n`` uniform points, shape (n, 2)."""
        xz = np.empty((n, 2))
        xz[:, 0] = rng.uniform(self.x_min, self.x_max, n)
        xz[:, 1] = rng.uniform(self.z_min, self.z_max, n)
        return self.clip(xz)


GENESIS_CITY = Bounds(
    -150 * PARCEL_SIZE_M, 151 * PARCEL_SIZE_M, -150 * PARCEL_SIZE_M, 151 * PARCEL_SIZE_M
)


def parcel_center(px: float, pz: float) -> tuple[float, float]:
    """The X/Z centre of parcel (px, pz) in metres."""
    return ((px + 0.5) * PARCEL_SIZE_M, (pz + 0.5) * PARCEL_SIZE_M)


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message, code="invalid_parameter")


def _disc(rng: np.random.Generator, n: int, radius: float | F64) -> F64:
    """``n`` points uniform in a disc of ``radius`` around the origin, shape (n, 2)."""
    r = np.sqrt(rng.uniform(0.0, 1.0, n)) * radius
    a = rng.uniform(0.0, 2.0 * math.pi, n)
    return np.stack([r * np.cos(a), r * np.sin(a)], axis=1)


def _speeds(rng: np.random.Generator, n: int, run_fraction: float) -> F64:
    return np.where(rng.uniform(0.0, 1.0, n) < run_fraction, RUN_SPEED_MPS, WALK_SPEED_MPS)


def _advance(xz: F64, target: F64, speed: F64, dt: float) -> Bool:
    """Move ``xz`` towards ``target`` by at most ``speed * dt`` (in place).

    Returns the mask of rows that reached their target this step. Rows already at
    the target stay put and count as arrived.
    """
    d = target - xz
    dist = np.hypot(d[:, 0], d[:, 1])
    reach = speed * dt
    arrived: Bool = dist <= reach
    moving = ~arrived
    scale = reach[moving] / dist[moving]
    xz[moving] += d[moving] * scale[:, None]
    xz[arrived] = target[arrived]
    return arrived


class MobilityModel(ABC):
    """A population of peer slots moving over time (see the module docstring)."""

    n_peers: int
    positions: F64
    active: Bool
    groups: I64

    def __init__(self, n_peers: int) -> None:
        _check(n_peers >= 0, f"n_peers must be >= 0, got {n_peers}")
        self.n_peers = int(n_peers)
        self.positions = np.zeros((self.n_peers, 3))
        self.active = np.zeros(self.n_peers, dtype=np.bool_)
        self.groups = np.full(self.n_peers, -1, dtype=np.int64)

    @abstractmethod
    def reset(self, rng: np.random.Generator) -> None:
        """Initial state at simulated time 0."""

    @abstractmethod
    def step(self, t_s: float, dt_s: float, rng: np.random.Generator) -> None:
        """Advance from ``t_s - dt_s`` to ``t_s`` seconds."""

    @property
    def n_groups(self) -> int:
        """An upper bound on group ids + 1 (used to size per-group counters)."""
        return 0


class _Sessions:
    """Exponential on/off sessions per slot (memoryless, so stationary from t=0)."""

    def __init__(self, n: int, session_s: float | None, offline_s: float | None) -> None:
        _check(session_s is None or session_s > 0, "session_s must be > 0")
        _check(offline_s is None or offline_s > 0, "offline_s must be > 0")
        _check(
            (session_s is None) == (offline_s is None), "give both session_s and offline_s or none"
        )
        self.n = n
        self.session_s = session_s
        self.offline_s = offline_s
        self.toggle_at = np.full(n, math.inf)

    def reset(self, rng: np.random.Generator) -> Bool:
        if self.session_s is None or self.offline_s is None:
            return np.ones(self.n, dtype=np.bool_)
        p_on = self.session_s / (self.session_s + self.offline_s)
        active: Bool = rng.uniform(0.0, 1.0, self.n) < p_on
        mean = np.where(active, self.session_s, self.offline_s)
        self.toggle_at = rng.exponential(1.0, self.n) * mean
        return active

    def step(self, t_s: float, active: Bool, rng: np.random.Generator) -> Bool:
        """Flip the slots whose session ended; return the mask of slots that (re)joined."""
        if self.session_s is None or self.offline_s is None:
            return np.zeros(self.n, dtype=np.bool_)
        flip = np.flatnonzero(self.toggle_at <= t_s)
        if flip.size == 0:
            return np.zeros(self.n, dtype=np.bool_)
        active[flip] = ~active[flip]
        mean = np.where(active[flip], self.session_s, self.offline_s)
        self.toggle_at[flip] = t_s + rng.exponential(1.0, flip.size) * mean
        joined = np.zeros(self.n, dtype=np.bool_)
        joined[flip[active[flip]]] = True
        return joined


class RandomWaypoint(MobilityModel):
    """Random waypoint over a rectangle, optionally in parties that walk together.

    Each party (``group_size`` peers; 1 = everyone alone) has an anchor that picks
    a uniform target in ``bounds``, walks (or, with ``run_fraction``, runs) to it,
    pauses ``uniform(*pause_s)`` seconds and repeats. Members stand at fixed
    offsets within ``formation_radius`` of the anchor. With ``session_s`` and
    ``offline_s``, each slot alternates exponential online/offline periods; a
    returning peer reappears beside its party (Decentraland's "jump to friend").
    Ground truth: the party index for parties of two or more, else -1.
    """

    def __init__(
        self,
        n_peers: int,
        *,
        group_size: int = 1,
        bounds: Bounds = GENESIS_CITY,
        run_fraction: float = 0.3,
        pause_s: tuple[float, float] = (0.0, 30.0),
        formation_radius: float = 4.0,
        session_s: float | None = None,
        offline_s: float | None = None,
    ) -> None:
        super().__init__(n_peers)
        _check(group_size >= 1, f"group_size must be >= 1, got {group_size}")
        _check(0.0 <= run_fraction <= 1.0, "run_fraction must be in [0, 1]")
        _check(0.0 <= pause_s[0] <= pause_s[1], "pause_s must be (lo, hi) with 0 <= lo <= hi")
        _check(formation_radius >= 0, "formation_radius must be >= 0")
        self.group_size = int(group_size)
        self.bounds = bounds
        self.run_fraction = float(run_fraction)
        self.pause_s = (float(pause_s[0]), float(pause_s[1]))
        self.formation_radius = float(formation_radius)
        self._sessions = _Sessions(n_peers, session_s, offline_s)
        self._party = np.arange(self.n_peers, dtype=np.int64) // self.group_size
        n_parties = -(-self.n_peers // self.group_size)
        self._anchor = np.zeros((n_parties, 2))
        self._target = np.zeros((n_parties, 2))
        self._speed = np.zeros(n_parties)
        self._pause_left = np.zeros(n_parties)
        self._offset = np.zeros((self.n_peers, 2))

    @property
    def n_groups(self) -> int:
        return len(self._anchor) if self.group_size > 1 else 0

    def reset(self, rng: np.random.Generator) -> None:
        n_parties = len(self._anchor)
        self._anchor = self.bounds.sample(rng, n_parties)
        self._target = self.bounds.sample(rng, n_parties)
        self._speed = _speeds(rng, n_parties, self.run_fraction)
        self._pause_left = np.zeros(n_parties)
        self._offset = (
            _disc(rng, self.n_peers, self.formation_radius)
            if self.group_size > 1
            else np.zeros((self.n_peers, 2))
        )
        self.active = self._sessions.reset(rng)
        self._place()

    def step(self, t_s: float, dt_s: float, rng: np.random.Generator) -> None:
        paused = self._pause_left > 0
        self._pause_left[paused] = np.maximum(self._pause_left[paused] - dt_s, 0.0)
        walking = np.flatnonzero(~paused)
        if walking.size:
            xz = self._anchor[walking]
            arrived = _advance(xz, self._target[walking], self._speed[walking], dt_s)
            self._anchor[walking] = xz
            done = walking[arrived]
            if done.size:
                self._pause_left[done] = rng.uniform(*self.pause_s, done.size)
                self._target[done] = self.bounds.sample(rng, done.size)
                self._speed[done] = _speeds(rng, done.size, self.run_fraction)
        self._sessions.step(t_s, self.active, rng)
        self._place()

    def _place(self) -> None:
        xz = self._anchor[self._party] + self._offset
        self.bounds.clip(xz)
        self.positions[:, 0] = xz[:, 0]
        self.positions[:, 2] = xz[:, 1]
        if self.group_size > 1:
            self.groups = np.where(self.active, self._party, -1)
        else:
            self.groups = np.full(self.n_peers, -1, dtype=np.int64)


# Attendee phases of a CrowdEvent.
_UNUSED, _APPROACH, _PRESENT, _DEPART, _GONE = 0, 1, 2, 3, 4


class CrowdEvent(MobilityModel):
    """A hotspot event: a crowd gathers at a point, then disperses.

    Attendees arrive as a Poisson process of ``arrival_rate`` per second during
    ``[start_s, start_s + gather_s)`` (at most ``n_peers`` of them), connect at a
    uniform distance in ``approach_m`` from ``center`` and walk (or run) to a spot
    in the crowd disc of radius ``crowd_radius``. Present attendees shuffle to a
    new spot in the disc now and then (``wander_per_s``). Each leaves after an
    exponential dwell of mean ``dwell_s``, and at the latest at ``start_s +
    duration_s``: it walks ``exit_m`` away and disconnects on arrival.
    Ground truth: group 0 (the crowd) while present, else -1.
    """

    def __init__(
        self,
        n_peers: int,
        *,
        center: tuple[float, float] = (0.0, 0.0),
        start_s: float = 0.0,
        gather_s: float = 120.0,
        duration_s: float = 300.0,
        arrival_rate: float = 5.0,
        crowd_radius: float = 40.0,
        dwell_s: float = 600.0,
        approach_m: tuple[float, float] = (100.0, 300.0),
        exit_m: float = 200.0,
        run_fraction: float = 0.3,
        wander_per_s: float = 0.02,
        bounds: Bounds = GENESIS_CITY,
    ) -> None:
        super().__init__(n_peers)
        _check(arrival_rate >= 0, "arrival_rate must be >= 0")
        _check(gather_s >= 0 and duration_s >= 0 and start_s >= 0, "times must be >= 0")
        _check(crowd_radius > 0 and dwell_s > 0 and exit_m >= 0, "radii and dwell must be > 0")
        _check(0 <= approach_m[0] <= approach_m[1], "approach_m must be (lo, hi), 0 <= lo <= hi")
        _check(0.0 <= run_fraction <= 1.0, "run_fraction must be in [0, 1]")
        _check(wander_per_s >= 0, "wander_per_s must be >= 0")
        self.center = (float(center[0]), float(center[1]))
        self.start_s = float(start_s)
        self.gather_s = float(gather_s)
        self.duration_s = float(duration_s)
        self.arrival_rate = float(arrival_rate)
        self.crowd_radius = float(crowd_radius)
        self.dwell_s = float(dwell_s)
        self.approach_m = (float(approach_m[0]), float(approach_m[1]))
        self.exit_m = float(exit_m)
        self.run_fraction = float(run_fraction)
        self.wander_per_s = float(wander_per_s)
        self.bounds = bounds
        self.phase = np.full(self.n_peers, _UNUSED, dtype=np.int8)
        self._xz = np.zeros((self.n_peers, 2))
        self._target = np.zeros((self.n_peers, 2))
        self._speed = np.zeros(self.n_peers)
        self._leave_at = np.full(self.n_peers, math.inf)
        self._next_slot = 0

    @property
    def n_groups(self) -> int:
        return 1

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s

    def reset(self, rng: np.random.Generator) -> None:
        self.phase[:] = _UNUSED
        self._next_slot = 0
        self.active[:] = False
        self._sync()

    def _crowd_spot(self, rng: np.random.Generator, n: int) -> F64:
        spots: F64 = _disc(rng, n, self.crowd_radius) + np.asarray(self.center, dtype=np.float64)
        return spots

    def step(self, t_s: float, dt_s: float, rng: np.random.Generator) -> None:
        c = np.asarray(self.center)
        # Arrivals: Poisson count over the part of this step inside the gathering window.
        lo = max(t_s - dt_s, self.start_s)
        hi = min(t_s, self.start_s + self.gather_s)
        if hi > lo and self._next_slot < self.n_peers:
            k = min(int(rng.poisson(self.arrival_rate * (hi - lo))), self.n_peers - self._next_slot)
            if k:
                new = np.arange(self._next_slot, self._next_slot + k)
                self._next_slot += k
                dist = rng.uniform(*self.approach_m, k)
                ang = rng.uniform(0.0, 2.0 * math.pi, k)
                self._xz[new] = c + np.stack([dist * np.cos(ang), dist * np.sin(ang)], axis=1)
                self._target[new] = self._crowd_spot(rng, k)
                self._speed[new] = _speeds(rng, k, self.run_fraction)
                self._leave_at[new] = np.minimum(t_s + rng.exponential(self.dwell_s, k), self.end_s)
                self.phase[new] = _APPROACH
        # Departures of present (or still approaching) attendees.
        leaving = np.flatnonzero(
            ((self.phase == _PRESENT) | (self.phase == _APPROACH)) & (self._leave_at <= t_s)
        )
        if leaving.size:
            ang = rng.uniform(0.0, 2.0 * math.pi, leaving.size)
            away = np.stack([np.cos(ang), np.sin(ang)], axis=1) * self.exit_m
            self._target[leaving] = self._xz[leaving] + away
            self.phase[leaving] = _DEPART
        # Present attendees shuffle now and then.
        present = np.flatnonzero(self.phase == _PRESENT)
        if present.size and self.wander_per_s > 0:
            shuffle = present[rng.uniform(0.0, 1.0, present.size) < self.wander_per_s * dt_s]
            self._target[shuffle] = self._crowd_spot(rng, shuffle.size)
        moving = np.flatnonzero(
            (self.phase == _APPROACH) | (self.phase == _DEPART) | (self.phase == _PRESENT)
        )
        if moving.size:
            xz = self._xz[moving]
            arrived = _advance(xz, self._target[moving], self._speed[moving], dt_s)
            self._xz[moving] = xz
            done = moving[arrived]
            self.phase[done[self.phase[done] == _APPROACH]] = _PRESENT
            self.phase[done[self.phase[done] == _DEPART]] = _GONE
        self._sync()

    def _sync(self) -> None:
        xz = self.bounds.clip(self._xz.copy())
        self.positions[:, 0] = xz[:, 0]
        self.positions[:, 2] = xz[:, 1]
        self.active = (self.phase != _UNUSED) & (self.phase != _GONE)
        self.groups = np.where(self.phase == _PRESENT, 0, -1).astype(np.int64)


# Illustrative plazas (parcel coordinates): Genesis Plaza at 0,0 and four satellites.
DEFAULT_PLAZAS: tuple[tuple[float, float], ...] = tuple(
    parcel_center(px, pz) for px, pz in ((0, 0), (-40, -40), (40, -40), (-40, 40), (40, 40))
)


class Commuters(MobilityModel):
    """Peers dwelling at plazas and commuting between them.

    Each peer stands at a spot within ``plaza_radius`` of a plaza for an
    exponential dwell of mean ``dwell_s``, then heads for another plaza (chosen
    uniformly among the others): with probability ``teleport_fraction`` it
    teleports (as most explorer users travel), otherwise it walks or runs there
    in a straight line. Optional on/off sessions as in :class:`RandomWaypoint`;
    a returning peer reappears at a random plaza. Ground truth: the plaza index
    while dwelling, -1 while travelling or offline.
    """

    def __init__(
        self,
        n_peers: int,
        *,
        plazas: Sequence[tuple[float, float]] = DEFAULT_PLAZAS,
        plaza_radius: float = 30.0,
        dwell_s: float = 120.0,
        teleport_fraction: float = 0.5,
        run_fraction: float = 0.3,
        session_s: float | None = None,
        offline_s: float | None = None,
        bounds: Bounds = GENESIS_CITY,
    ) -> None:
        super().__init__(n_peers)
        _check(len(plazas) >= 2, "need at least two plazas")
        _check(plaza_radius > 0 and dwell_s > 0, "plaza_radius and dwell_s must be > 0")
        _check(0.0 <= teleport_fraction <= 1.0, "teleport_fraction must be in [0, 1]")
        _check(0.0 <= run_fraction <= 1.0, "run_fraction must be in [0, 1]")
        self.plazas = np.asarray(plazas, dtype=np.float64).reshape(-1, 2)
        self.plaza_radius = float(plaza_radius)
        self.dwell_s = float(dwell_s)
        self.teleport_fraction = float(teleport_fraction)
        self.run_fraction = float(run_fraction)
        self.bounds = bounds
        self._sessions = _Sessions(n_peers, session_s, offline_s)
        self.plaza = np.zeros(self.n_peers, dtype=np.int64)
        self.travelling = np.zeros(self.n_peers, dtype=np.bool_)
        self._xz = np.zeros((self.n_peers, 2))
        self._target = np.zeros((self.n_peers, 2))
        self._speed = np.zeros(self.n_peers)
        self._leave_at = np.zeros(self.n_peers)

    @property
    def n_groups(self) -> int:
        return len(self.plazas)

    def _spot(self, rng: np.random.Generator, plaza: I64) -> F64:
        return self.plazas[plaza] + _disc(rng, plaza.size, self.plaza_radius)

    def reset(self, rng: np.random.Generator) -> None:
        n = self.n_peers
        self.plaza = rng.integers(0, len(self.plazas), n)
        self._xz = self._spot(rng, self.plaza)
        self._target = self._xz.copy()
        self._speed = _speeds(rng, n, self.run_fraction)
        self._leave_at = rng.exponential(self.dwell_s, n)
        self.travelling[:] = False
        self.active = self._sessions.reset(rng)
        self._sync()

    def step(self, t_s: float, dt_s: float, rng: np.random.Generator) -> None:
        go = np.flatnonzero(~self.travelling & (self._leave_at <= t_s))
        if go.size:
            # Another plaza, uniformly: shift by 1..k-1 modulo k.
            shift = rng.integers(1, len(self.plazas), go.size)
            self.plaza[go] = (self.plaza[go] + shift) % len(self.plazas)
            self._target[go] = self._spot(rng, self.plaza[go])
            self._speed[go] = _speeds(rng, go.size, self.run_fraction)
            teleport = rng.uniform(0.0, 1.0, go.size) < self.teleport_fraction
            jump = go[teleport]
            self._xz[jump] = self._target[jump]
            self._leave_at[jump] = t_s + rng.exponential(self.dwell_s, jump.size)
            self.travelling[go[~teleport]] = True
        walking = np.flatnonzero(self.travelling)
        if walking.size:
            xz = self._xz[walking]
            arrived = _advance(xz, self._target[walking], self._speed[walking], dt_s)
            self._xz[walking] = xz
            done = walking[arrived]
            self.travelling[done] = False
            self._leave_at[done] = t_s + rng.exponential(self.dwell_s, done.size)
        joined = np.flatnonzero(self._sessions.step(t_s, self.active, rng))
        if joined.size:
            self.plaza[joined] = rng.integers(0, len(self.plazas), joined.size)
            self._xz[joined] = self._spot(rng, self.plaza[joined])
            self.travelling[joined] = False
            self._leave_at[joined] = t_s + rng.exponential(self.dwell_s, joined.size)
        self._sync()

    def _sync(self) -> None:
        xz = self.bounds.clip(self._xz.copy())
        self.positions[:, 0] = xz[:, 0]
        self.positions[:, 2] = xz[:, 1]
        self.groups = np.where(self.active & ~self.travelling, self.plaza, -1).astype(np.int64)


class Composite(MobilityModel):
    """Several models side by side: slots are concatenated in the given order.

    Group ids of each part are shifted past those of the parts before it, so
    ground-truth groups never collide.
    """

    def __init__(self, parts: Sequence[MobilityModel]) -> None:
        _check(len(parts) >= 1, "Composite needs at least one model")
        super().__init__(sum(p.n_peers for p in parts))
        self.parts = list(parts)

    @property
    def n_groups(self) -> int:
        return sum(p.n_groups for p in self.parts)

    def reset(self, rng: np.random.Generator) -> None:
        for p in self.parts:
            p.reset(rng)
        self._sync()

    def step(self, t_s: float, dt_s: float, rng: np.random.Generator) -> None:
        for p in self.parts:
            p.step(t_s, dt_s, rng)
        self._sync()

    def _sync(self) -> None:
        self.positions = np.concatenate([p.positions for p in self.parts])
        self.active = np.concatenate([p.active for p in self.parts])
        groups = []
        offset = 0
        for p in self.parts:
            groups.append(np.where(p.groups >= 0, p.groups + offset, -1))
            offset += p.n_groups
        self.groups = np.concatenate(groups).astype(np.int64)
