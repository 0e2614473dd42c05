"""Mobility models: bounds, speeds, seeds, sessions, arrivals, ground-truth groups."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from dclcomms.errors import ConfigError
from dclcomms.sim import (
    GENESIS_CITY,
    RUN_SPEED_MPS,
    WALK_SPEED_MPS,
    Bounds,
    Commuters,
    Composite,
    CrowdEvent,
    MobilityModel,
    RandomWaypoint,
)

DT = 1.0


def _trace(model: MobilityModel, seed: int, steps: int, dt: float = DT) -> list[tuple]:
    rng = np.random.default_rng(seed)
    model.reset(rng)
    out = [(model.positions.copy(), model.active.copy(), model.groups.copy())]
    for k in range(1, steps + 1):
        model.step(k * dt, dt, rng)
        out.append((model.positions.copy(), model.active.copy(), model.groups.copy()))
    return out


def _models() -> dict[str, MobilityModel]:
    return {
        "waypoint": RandomWaypoint(500, run_fraction=0.5, pause_s=(0, 5)),
        "waypoint-parties": RandomWaypoint(500, group_size=5, session_s=60, offline_s=30),
        "crowd": CrowdEvent(400, arrival_rate=10, gather_s=30, duration_s=60, dwell_s=40),
        "commuters": Commuters(500, teleport_fraction=0.0, dwell_s=10),
    }


def _max_step_speed(trace: list[tuple], dt: float = DT) -> float:
    """Largest displacement per second of peers connected at both ends of a step."""
    best = 0.0
    for (p0, a0, _), (p1, a1, _) in itertools.pairwise(trace):
        both = a0 & a1
        if both.any():
            d = np.hypot(*(p1[both][:, [0, 2]] - p0[both][:, [0, 2]]).T)
            best = max(best, float(d.max()) / dt)
    return best


@pytest.mark.parametrize("name", sorted(_models()))
def test_positions_stay_in_genesis_city(name: str) -> None:
    seed = 11
    for pos, _, _ in _trace(_models()[name], seed, 120):
        assert pos[:, 0].min() >= GENESIS_CITY.x_min, f"seed={seed}"
        assert pos[:, 0].max() < GENESIS_CITY.x_max, f"seed={seed}"
        assert pos[:, 2].min() >= GENESIS_CITY.z_min, f"seed={seed}"
        assert pos[:, 2].max() < GENESIS_CITY.z_max, f"seed={seed}"
        assert (pos[:, 1] == 0).all()


def test_waypoint_respects_small_bounds_including_party_offsets() -> None:
    b = Bounds(0.0, 100.0, -50.0, 50.0)
    trace = _trace(RandomWaypoint(200, group_size=4, formation_radius=20.0, bounds=b), 3, 200)
    for pos, _, _ in trace:
        assert pos[:, 0].min() >= 0.0 and pos[:, 0].max() < 100.0
        assert pos[:, 2].min() >= -50.0 and pos[:, 2].max() < 50.0


@pytest.mark.parametrize("name", sorted(_models()))
def test_speeds_never_exceed_running(name: str) -> None:
    seed = 5
    top = _max_step_speed(_trace(_models()[name], seed, 100))
    assert top <= RUN_SPEED_MPS + 1e-6, f"seed={seed}: {top} m/s"
    assert top > 0.0, f"seed={seed}: nobody moved"


@pytest.mark.parametrize(("run_fraction", "speed"), [(0.0, WALK_SPEED_MPS), (1.0, RUN_SPEED_MPS)])
def test_walkers_walk_and_runners_run(run_fraction: float, speed: float) -> None:
    # Big world, no pauses: almost every anchor is mid-segment at every step.
    trace = _trace(RandomWaypoint(300, run_fraction=run_fraction, pause_s=(0, 0)), 2, 20)
    (p0, _, _), (p1, _, _) = trace[10], trace[11]
    d = np.hypot(*(p1[:, [0, 2]] - p0[:, [0, 2]]).T)
    assert d.max() == pytest.approx(speed * DT)
    assert np.median(d) == pytest.approx(speed * DT)


@pytest.mark.parametrize("name", sorted(_models()))
def test_same_seed_same_trace_and_no_global_state(name: str) -> None:
    a = _trace(_models()[name], 42, 60)
    np.random.seed(0)  # the models must not read the global generator
    b = _trace(_models()[name], 42, 60)
    c = _trace(_models()[name], 43, 60)
    for (pa, aa, ga), (pb, ab, gb) in zip(a, b, strict=True):
        np.testing.assert_array_equal(pa, pb)
        np.testing.assert_array_equal(aa, ab)
        np.testing.assert_array_equal(ga, gb)
    assert any(not np.array_equal(x[0], y[0]) for x, y in zip(a, c, strict=True))


def test_sessions_keep_the_stationary_online_fraction() -> None:
    seed = 9
    model = RandomWaypoint(20_000, session_s=30.0, offline_s=10.0)
    trace = _trace(model, seed, 120)
    fractions = [float(a.mean()) for _, a, _ in trace]
    assert all(abs(f - 0.75) < 0.02 for f in fractions), f"seed={seed}: {fractions[:5]}"
    # Peers do come and go: over 2 minutes most slots toggled at least once.
    toggled = np.zeros(model.n_peers, dtype=bool)
    for (_, a0, _), (_, a1, _) in itertools.pairwise(trace):
        toggled |= a0 != a1
    assert toggled.mean() > 0.9


def test_party_ground_truth_and_formation() -> None:
    model = RandomWaypoint(40, group_size=4, formation_radius=4.0)
    for pos, active, groups in _trace(model, 1, 30):
        assert (groups[active] == np.arange(40)[active] // 4).all()
        assert (groups[~active] == -1).all()
        for g in range(10):
            p = pos[g * 4 : g * 4 + 4][:, [0, 2]]
            assert np.hypot(*(p - p.mean(0)).T).max() <= 8.0
    solo = _trace(RandomWaypoint(10), 1, 3)
    assert all((g == -1).all() for _, _, g in solo)


def test_crowd_gathers_by_poisson_arrivals_then_disperses() -> None:
    seed = 4
    rate, gather = 5.0, 100.0
    model = CrowdEvent(
        5000,
        center=(100.0, -200.0),
        start_s=10.0,
        gather_s=gather,
        duration_s=200.0,
        arrival_rate=rate,
        crowd_radius=30.0,
        approach_m=(50.0, 100.0),
        exit_m=100.0,
        dwell_s=1e6,
    )
    trace = _trace(model, seed, 300)
    assert not trace[10][1].any(), "nobody before the start"
    arrived = int(model.phase.astype(bool).sum())  # slots ever used
    mean = rate * gather
    assert abs(arrived - mean) < 5 * math.sqrt(mean), f"seed={seed}: {arrived} arrivals"
    # Mid-event: the present crowd is group 0 and stands in the disc.
    pos, active, groups = trace[150]
    present = groups == 0
    assert present.sum() > 0.9 * arrived, f"seed={seed}"
    r = np.hypot(pos[present, 0] - 100.0, pos[present, 2] + 200.0)
    assert r.max() <= 30.0 + 1e-9
    assert (groups[~active] == -1).all()
    # The event ends at 210 s; at 8 m/s or less, 100 m takes at most 25 s: everyone gone.
    assert not trace[240][1].any(), f"seed={seed}"


def test_commuters_dwell_in_plazas_and_teleport() -> None:
    model = Commuters(300, dwell_s=5.0, teleport_fraction=1.0, plaza_radius=20.0)
    trace = _trace(model, 8, 40)
    for pos, _, groups in trace:
        assert (groups >= 0).all(), "teleporters never travel"
        d = np.hypot(*(pos[:, [0, 2]] - model.plazas[groups]).T)
        assert d.max() <= 20.0 + 1e-9
    # With teleports, a trip is one jump: some peers move farther than running allows.
    assert _max_step_speed(trace) > 100.0
    walkers = Commuters(300, dwell_s=5.0, teleport_fraction=0.0)
    tr = _trace(walkers, 8, 40)
    assert any((g == -1).any() for _, _, g in tr), "walkers travel between plazas"


def test_composite_concatenates_and_shifts_groups() -> None:
    a = RandomWaypoint(8, group_size=4)
    b = CrowdEvent(50, arrival_rate=50.0, gather_s=5.0, approach_m=(0.0, 0.0), crowd_radius=5.0)
    c = Composite([a, b])
    trace = _trace(c, 3, 10)
    pos, active, groups = trace[-1]
    assert pos.shape == (58, 3) and active.shape == (58,)
    assert set(groups[:8].tolist()) == {0, 1}
    assert set(groups[8:][groups[8:] >= 0].tolist()) == {2}
    assert c.n_groups == 3


@pytest.mark.parametrize(
    "make",
    [
        lambda: RandomWaypoint(-1),
        lambda: RandomWaypoint(10, group_size=0),
        lambda: RandomWaypoint(10, run_fraction=1.5),
        lambda: RandomWaypoint(10, pause_s=(5.0, 1.0)),
        lambda: RandomWaypoint(10, session_s=10.0),
        lambda: CrowdEvent(10, crowd_radius=0.0),
        lambda: CrowdEvent(10, approach_m=(10.0, 5.0)),
        lambda: Commuters(10, plazas=[(0.0, 0.0)]),
        lambda: Commuters(10, teleport_fraction=-0.1),
        lambda: Bounds(1.0, 0.0, 0.0, 1.0),
        lambda: Composite([]),
    ],
)
def test_invalid_parameters_raise_config_error(make: object) -> None:
    with pytest.raises(ConfigError) as info:
        make()  # type: ignore[operator]
    assert info.value.code == "invalid_parameter"
