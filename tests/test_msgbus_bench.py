"""Smoke test: bench/bench_msgbus.py still runs end to end (tiny sizes; figures not checked)."""

from __future__ import annotations

import pytest

from tests.helpers.common import bench_json

pytestmark = pytest.mark.slow  # a bench smoke run: make test-fast skips it


def test_bench_msgbus_smoke() -> None:
    data = bench_json("bench_msgbus.py", "--quick", timeout=180)
    assert data["bench"] == "msgbus" and data["subscribers"] == 3
    for part in ("in_process", "nats"):
        for mode in ("saturated", "paced"):
            assert data[part][mode]["delivered_per_s"] > 0 and data[part][mode]["p99_ms"] > 0
