"""Smoke test of bench/bench_sim.py --quick (figures live in docs/performance.md, not here)."""

from __future__ import annotations

import pytest

from tests.helpers.common import bench_json

pytestmark = pytest.mark.slow  # a bench smoke run: make test-fast skips it


def test_bench_sim_quick_prints_json() -> None:
    doc = bench_json("bench_sim.py", "--quick")
    assert doc["bench"] == "sim"
    assert [r["peers"] for r in doc["runs"]] == [2_000, 10_000]
    for r in doc["runs"]:
        assert r["s_per_flush_median"] > 0 and r["peak_rss_mb"] > 0
        assert 0 < r["connected"] <= r["peers"] and r["islands"] > 0
        assert set(r["breakdown_median_s"]) == {"mobility", "update", "flush_s", "metrics"}
