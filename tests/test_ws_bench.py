"""bench/bench_ws.py --quick keeps working (builds the C++ load client).

No timing is asserted here (figures live in docs/performance.md); the checks
are that every scenario ran with all clients served and nothing failed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.common import bench_json

pytestmark = pytest.mark.slow  # a bench smoke run: make test-fast skips it

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_ws.py"


def test_bench_ws_quick() -> None:
    report = bench_json("bench_ws.py", "--quick", timeout=900)
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


AB = BENCH.with_name("bench_ws_ab.py")


def test_bench_ws_ab_alternates_builds() -> None:
    """Two builds (here the installed one, at io_threads 1 and 2) run alternately: every run
    of each is recorded, all clients served, nothing lost."""
    report = bench_json(
        "bench_ws_ab.py", "--build", "one=", "--build", "two=:2",
        "--shapes", "2x5x1", "--reps", "2", "--duration", "1", timeout=900,
    )  # fmt: skip
    assert report["builds"] == {
        "one": {"dir": "", "io_threads": 1},
        "two": {"dir": "", "io_threads": 2},
    }
    shape = report["shapes"]["2x5_inflight1"]
    for label in ("one", "two"):
        assert len(shape[label]["runs"]) == 2
        for r in shape[label]["runs"]:
            assert r["failed"] == 0 and r["closed"] == 0 and r["lost"] == 0
            assert r["delivered_per_s"] > 0 and len(r["loadavg"]) == 3


@pytest.mark.parametrize(
    ("spec", "why"),
    [("nolabel", "expected LABEL=DIR[:IO]"), ("x=/nonexistent", "no installed dclcomms there")],
)
def test_bench_ws_ab_rejects_a_bad_build(spec: str, why: str) -> None:
    out = subprocess.run(
        [sys.executable, str(AB), "--build", spec], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2 and why in out.stderr
