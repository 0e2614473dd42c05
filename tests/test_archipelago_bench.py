"""Smoke test of bench/bench_engine.py --quick: the benchmark keeps working.

No timing is asserted here (figures live in docs/performance.md); only the
JSON shape and the convergence counter ("nobody moved => no changes").
"""

from __future__ import annotations

import pytest

from tests.helpers.common import bench_json

pytestmark = pytest.mark.slow  # a bench smoke run: make test-fast skips it


def test_bench_engine_quick() -> None:
    data = bench_json("bench_engine.py", "--quick")
    assert data["bench"] == "engine"
    combos = {(r["peers"], r["layout"]) for r in data["results"]}
    assert combos == {
        (1000, "uniform"),
        (1000, "clustered"),
        (5000, "uniform"),
        (5000, "clustered"),
    }
    for r in data["results"]:
        assert r["islands"] > 0
        assert r["heartbeat"]["changes_when_still"] == 0
        for key in ("update_ms", "flush_ms", "flush_cpu_ms", "engine_ms"):
            # measured work: strictly positive (a zero would mean the timer measured nothing)
            assert r["cold"][key] > 0 and r["heartbeat"][key] > 0, (key, r)
        assert r["peak_rss_mb"] > 0 and r["bytes_per_peer"] > 0
