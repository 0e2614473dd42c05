"""bench/bench_ws.py --quick keeps working (builds the C++ load client).

No timing is asserted here (figures live in docs/performance.md); the checks
are that every scenario ran with all clients served and nothing failed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a bench smoke run: make test-fast skips it

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_ws.py"


def test_bench_ws_quick() -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH), "--quick"],
        capture_output=True,
        text=True,
        check=True,
        timeout=900,
    )
    report = json.loads(out.stdout)
    scen = report["scenarios"]
    assert len(scen) == 7
    for name, s in scen.items():
        m = s["median"]
        assert m["failed"] == 0 and m["closed"] == 0, name
        if name.startswith("rooms_"):
            assert m["delivered_per_s"] > 0 and m["p99_us"] >= m["p50_us"] > 0, name
            assert m["server_closed_slow"] == 0 and m["lost"] == 0, name
        elif "handshakes" in name:
            assert m["welcomed"] == m["clients"] and m["handshakes_per_s"] > 0
        else:
            assert m["server_ingest_per_s"] > 0 and m["rss_per_connection_kib"] > 0
