"""A brute-force clustering oracle with the Engine's Python interface, and its own checks.

The simulator must never ship its own engine; this O(n²) oracle exists only so the
simulator's plumbing (heartbeats, disconnects, expiry, snapshot reading, metrics)
can be tested against an independent implementation of the same rules, and so
that simulator runs on the C++ engine can be cross-checked for the invariants
I1–I4 of archipelago.md §2.6.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tests.helpers.sim_oracle import Change, OracleEngine, check_invariants

# -- the oracle's own checks (it must be right to be useful) ----------------


def _snap(engine: OracleEngine) -> Any:
    from dclcomms.sim import Snapshot

    return Snapshot.of(engine.snapshot())


def test_oracle_merges_splits_and_reports_changes() -> None:
    e = OracleEngine()
    e.update_many(["a", "b", "c"], np.array([[0, 0, 0], [60, 0, 0], [1000, 0, 0]]), now_ms=0)
    ch = e.flush()
    assert sorted((c.peer_id, c.island_id, c.from_island_id) for c in ch) == [
        ("a", "I1", None),
        ("b", "I1", None),
        ("c", "I2", None),
    ]
    e.update_many(["b"], np.array([[200.0, 0, 0]]), now_ms=1000)
    ch = e.flush()
    assert [(c.peer_id, c.island_id, c.from_island_id) for c in ch] == [("b", "I3", "I1")]
    e.disconnect_many(["c"])
    assert e.flush() == [Change("c", "left", "I2", None)]
    check_invariants(_snap(e), 64, 80, 100)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_oracle_invariants_on_random_clouds(seed: int) -> None:
    rng = np.random.default_rng(seed)
    e = OracleEngine(max_island_size=6)
    n = 80
    ids = [f"p{i}" for i in range(n)]
    pos = np.zeros((n, 3))
    pos[:, [0, 2]] = rng.uniform(0, 500, (n, 2))
    e.update_many(ids, pos, now_ms=0)
    e.flush()
    check_invariants(_snap(e), 64, 80, 6)
    pos[:, [0, 2]] += rng.uniform(-30, 30, (n, 2))
    e.update_many(ids, pos, now_ms=1000)
    e.flush()
    check_invariants(_snap(e), 64, 80, 6)
    assert e.flush() == [], f"seed={seed}: nothing moved, yet changes"
