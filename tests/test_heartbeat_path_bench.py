"""bench/heartbeat_path.py keeps working: a small run prints its JSON figures.

No timing is asserted here (figures live in docs/performance.md)."""

from __future__ import annotations

import pytest

from tests.helpers.common import bench_json

pytestmark = pytest.mark.slow  # a bench smoke run: make test-fast skips it


def test_bench_heartbeat_path_small() -> None:
    r = bench_json("heartbeat_path.py", "--peers", "500", "--batch", "100", "--repeats", "2")
    assert (r["peers"], r["batch"], r["repeats"]) == (500, 100, 2)
    lo, hi = r["ingest_us_per_heartbeat_range"]
    assert 0 < lo <= r["ingest_us_per_heartbeat"] <= hi
    lo, hi = r["tick_ms_range"]
    assert 0 < lo <= r["tick_ms"] <= hi
    assert r["cold_tick_ms"] > 0
    # the cold tick places all 500 (island_changed each); the rounds move 1 % between clusters
    assert r["island_messages_sent"] >= 500
    assert r["peak_rss_mib"] > 0
