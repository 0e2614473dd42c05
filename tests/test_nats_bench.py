"""Smoke test: bench/bench_nats.py still runs end to end (tiny sizes; figures not checked)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a bench smoke run: make test-fast skips it

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_nats.py"


def test_bench_nats_smoke() -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--subjects", "v3"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    data = json.loads(out.stdout)
    assert data["bench"] == "nats" and data["peers"] == 200
    assert data["nats"]["dropped"] == 0
    for part in ("nats", "in_process"):
        assert data[part]["heartbeats_per_s"] > 0 and data[part]["flush_latency_ms"] > 0
