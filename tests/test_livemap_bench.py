"""Smoke test of bench/bench_livemap.py --quick (figures live in docs/performance.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_livemap.py"


@pytest.mark.slow
def test_bench_livemap_quick_prints_json() -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH), "--quick"], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    doc = json.loads(out.stdout)
    assert doc["bench"] == "livemap"
    (r,) = doc["runs"]
    assert r["peers"] == 2_000 and r["online"] > 0 and r["islands"] > 0
    assert r["tick_cpu_ms_median"] > 0 and r["bytes_per_s_per_page"] > 0
    assert r["key_frame_bytes"] > r["delta_bytes_median"] > 0
