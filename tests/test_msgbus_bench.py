"""Smoke test: bench/bench_msgbus.py still runs end to end (tiny sizes; figures not checked)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a bench smoke run: make test-fast skips it

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_msgbus.py"


def test_bench_msgbus_smoke() -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH), "--quick"],
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )
    data = json.loads(out.stdout)
    assert data["bench"] == "msgbus" and data["subscribers"] == 3
    for part in ("in_process", "nats"):
        for mode in ("saturated", "paced"):
            assert data[part][mode]["delivered_per_s"] > 0 and data[part][mode]["p99_ms"] > 0
