"""The simulator end to end: reproducibility, replay equivalence, expiry, invariants."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest

from dclcomms.errors import ConfigError
from dclcomms.sim import (
    Bounds,
    Commuters,
    Composite,
    CrowdEvent,
    Hysteresis,
    RandomWaypoint,
    Simulation,
    SizeThreshold,
    Snapshot,
)
from tests.helpers.sim import ENGINES, Scripted
from tests.helpers.sim_oracle import OracleEngine, check_invariants

SMALL = Bounds(-300.0, 300.0, -300.0, 300.0)


def _world(n: int = 240) -> Composite:
    return Composite(
        [
            RandomWaypoint(n // 2, group_size=4, bounds=SMALL, session_s=40, offline_s=20),
            CrowdEvent(n // 4, arrival_rate=4.0, gather_s=20, duration_s=40, dwell_s=30),
            Commuters(
                n // 4,
                plazas=[(-200.0, -200.0), (200.0, 200.0), (0.0, 0.0)],
                dwell_s=15,
                bounds=SMALL,
            ),
        ]
    )


def _sim(make_engine: Callable[[], Any], seed: int, **kw: Any) -> Simulation:
    return Simulation(
        _world(),
        seed=seed,
        engine=make_engine(),
        max_island_size=12,
        policy=Hysteresis(up_at=8, down_at=5),
        silent_leave_fraction=0.25,
        expire_timeout_s=10.0,
        **kw,
    )


def _with_cap(make_engine: Callable[[], Any]) -> Callable[[], Any]:
    # Both engines take the Engine constructor's keyword arguments.
    def make() -> Any:
        probe = make_engine()
        return type(probe)(max_island_size=12)

    return make


@pytest.mark.parametrize("make_engine", ENGINES)
def test_same_seed_gives_identical_dataframes(make_engine: Callable[[], Any]) -> None:
    seed = 2024
    a = _sim(_with_cap(make_engine), seed).run(60, progress=False)
    b = _sim(_with_cap(make_engine), seed).run(60, progress=False)
    for name in ("flushes", "sizes", "transport"):
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name), obj=f"{name} seed={seed}")
    c = _sim(_with_cap(make_engine), seed + 1).run(60, progress=False)
    assert not a.flushes.equals(c.flushes), f"seed={seed}: another seed, same run"
    f = a.flushes
    assert len(f) == 30 and f["t_s"].iloc[-1] == 60.0
    # The world is lively: arrivals, moves, departures, silent expiries and splits.
    assert f["assigned"].sum() > 0 and f["moved"].sum() > 0 and f["left"].sum() > 0
    assert (f["peers"] > f["connected"]).any(), "silent leavers linger until expiry"


@pytest.mark.parametrize("make_engine", ENGINES)
def test_replaying_the_recorded_inputs_gives_the_same_islands(
    make_engine: Callable[[], Any],
) -> None:
    seed = 77
    sim = _sim(_with_cap(make_engine), seed, record=True)
    result = sim.run(50, progress=False)
    rec = sim.recording
    assert rec is not None and len(rec.partitions) == len(result) == 25
    fresh = _with_cap(make_engine)()
    counts: list[int] = []
    partitions: list[dict[str, str]] = []
    for op in rec.ops:
        if op[0] == "update":
            fresh.update_many(op[2], op[3], now_ms=op[1])
        elif op[0] == "disconnect":
            fresh.disconnect_many(op[2])
        elif op[0] == "expire":
            fresh.expire(op[1], op[2])
        else:
            fresh.flush()
            snap = Snapshot.of(fresh.snapshot())
            counts.append(len(snap.island_ids))
            ids = snap.island_ids[snap.island].tolist()
            partitions.append(dict(zip(snap.peer_ids.tolist(), ids, strict=True)))
    assert counts == result.flushes["islands"].tolist(), f"seed={seed}"
    for k, (mine, replayed) in enumerate(zip(rec.partitions, partitions, strict=True)):
        assert mine == replayed, f"seed={seed}: flush {k} differs"


@pytest.mark.parametrize("make_engine", ENGINES)
def test_islands_satisfy_the_invariants_during_a_run(make_engine: Callable[[], Any]) -> None:
    seed = 5
    sim = _sim(_with_cap(make_engine), seed)
    for _ in range(6):
        sim.run(8, progress=False)
        check_invariants(sim.snapshot(), 64.0, 80.0, 12)


@pytest.mark.parametrize("make_engine", ENGINES)
def test_silent_leavers_expire_after_the_timeout(make_engine: Callable[[], Any]) -> None:
    here = [(0.0, 0.0), (10.0, 0.0), (20.0, 0.0)]
    script: dict[float, list[tuple[float, float] | None]] = {
        0.0: here,
        5.0: [here[0], None, None],  # two peers vanish without a disconnect
    }
    sim = Simulation(
        Scripted(script),
        seed=0,
        engine=make_engine(),
        silent_leave_fraction=1.0,
        expire_timeout_s=6.0,
    )
    f = sim.run(16, progress=False).flushes
    # Last heartbeat of the silent two at t=4 s; expired once now - 4000 > 6000 ms.
    assert f["peers"].tolist() == [3, 3, 3, 3, 3, 1, 1, 1]
    assert f["connected"].tolist() == [3, 3, 1, 1, 1, 1, 1, 1]
    assert f["left"].tolist() == [0, 0, 0, 0, 0, 2, 0, 0]


def test_runs_accumulate_and_progress_bar_runs(capsys: pytest.CaptureFixture[str]) -> None:
    sim = Simulation(RandomWaypoint(50, bounds=SMALL), seed=3, engine=OracleEngine())
    sim.run(10, progress=True)
    assert "simulating" in capsys.readouterr().err
    r = sim.run(10, progress=False)
    assert r.flushes["t_s"].tolist() == [float(t) for t in range(2, 21, 2)]
    assert sim.t_s == 20.0
    t = r.timings
    assert list(t.columns) == ["flush", "mobility", "update", "flush_s", "metrics"]
    assert (t[["mobility", "update", "flush_s", "metrics"]] > 0).all().all()  # each stage timed


def test_heartbeat_and_flush_periods() -> None:
    sim = Simulation(
        RandomWaypoint(20, bounds=SMALL),
        seed=1,
        engine=OracleEngine(),
        heartbeat_s=0.5,
        flush_s=3.0,
    )
    f = sim.run(9, progress=False).flushes
    assert f["t_s"].tolist() == [3.0, 6.0, 9.0]
    assert f["churn"].dtype == np.float64


@pytest.mark.parametrize(
    "kw",
    [
        {"heartbeat_s": 0.0},
        {"flush_s": -1.0},
        {"heartbeat_s": 0.0004},
        {"expire_timeout_s": float("nan")},
        {"silent_leave_fraction": 2.0},
        {"policy": object()},
    ],
)
def test_invalid_simulation_parameters(kw: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as info:
        Simulation(RandomWaypoint(5), seed=0, engine=OracleEngine(), **kw)
    assert info.value.code == "invalid_parameter"


def test_default_engine_is_the_cpp_engine_with_the_given_parameters() -> None:
    sim = Simulation(
        RandomWaypoint(300, bounds=SMALL),
        seed=9,
        join_distance=30.0,
        leave_distance=40.0,
        max_island_size=7,
        id_prefix="S",
        policy=SizeThreshold(5),
    )
    sim.run(10, progress=False)
    snap = sim.snapshot()
    assert all(str(i).startswith("S") for i in snap.island_ids.tolist())
    assert (snap.max_peers == 7).all()
    check_invariants(snap, 30.0, 40.0, 7)


def test_snapshot_rows_map_back_to_simulation_slots() -> None:
    sim = Simulation(RandomWaypoint(1000), seed=0, engine=OracleEngine())
    perm = np.random.default_rng(1).permutation(1000)[:700]
    fresh = np.empty(700, dtype=object)
    fresh[:] = ["p" + str(i) for i in perm.tolist()]  # new string objects, like the engine's
    assert sim._sim_rows(fresh).tolist() == perm.tolist()
    assert sim._sim_rows(np.empty(0, dtype=object)).tolist() == []
    # Ids the simulation never made fall back to hashing: unknown rows are -1.
    odd = np.array(["p3", "x7", "p1000", "pp1", "p2"], dtype=object)
    assert sim._sim_rows(odd).tolist() == [3, -1, -1, -1, 2]
