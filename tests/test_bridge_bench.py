"""bench/bench_bridge.py --quick keeps working (builds the C++ load client).

No timing is asserted (figures live in docs/performance.md): every scenario ran, the
reader read what the room tapped, every injection arrived."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a bench smoke run: make test-fast skips it

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_bridge.py"


def test_bench_bridge_quick() -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH), "--quick"],
        capture_output=True,
        text=True,
        check=True,
        timeout=900,
    )
    scen = json.loads(out.stdout)["scenarios"]
    assert len(scen) == 5
    for name, s in scen.items():
        m = s["median"]
        if name.startswith("fan_in"):
            assert m["failed"] == 0 and m["closed"] == 0 and m["delivered_per_s"] > 0, name
            if name.endswith("_no_reader"):
                assert m["tapped_messages"] == 0, name  # nobody subscribed: no tap
            else:
                assert name.endswith("_reader"), name
                assert m["bridge_read_msgs_per_s"] > 0 and m["tapped_messages"] > 0, name
        else:
            assert m["injected"] == 100 and m["latency_ms_p99"] >= m["latency_ms_p50"] > 0
