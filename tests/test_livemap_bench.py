"""Smoke test of bench/bench_livemap.py --quick (figures live in docs/performance.md)."""

from __future__ import annotations

import pytest

from tests.helpers.common import bench_json


@pytest.mark.slow
def test_bench_livemap_quick_prints_json() -> None:
    doc = bench_json("bench_livemap.py", "--quick")
    assert doc["bench"] == "livemap"
    (r,) = doc["runs"]
    assert r["peers"] == 2_000 and r["online"] > 0 and r["islands"] > 0
    assert r["tick_cpu_ms_median"] > 0 and r["bytes_per_s_per_page"] > 0
    assert r["key_frame_bytes"] > r["delta_bytes_median"] > 0
