"""Smoke test: bench/bench_realm.py still runs end to end (tiny sizes; figures not checked)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a bench smoke run: make test-fast skips it

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_realm.py"


def test_bench_realm_smoke() -> None:
    out = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--handshake-clients",
            "10",
            "--ingest-clients",
            "10",
            "--ingest-seconds",
            "1",
            "--repeats",
            "1",
            "--procs",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=True,
    )
    data = json.loads(out.stdout)
    assert data["bench"] == "realm"
    assert data["handshakes"]["clients"] == 10 and data["handshakes"]["per_s_median"] > 0
    ingest = data["ingest"]
    assert ingest["sent"] >= 10 and ingest["accepted"] == ingest["sent"]  # nothing lost
    assert ingest["engine_ingested"] == ingest["accepted"]
    assert data["rss"]["connected_mib"] > 0
