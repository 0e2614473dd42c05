"""Smoke test: bench/bench_realm.py still runs end to end (tiny sizes; figures not checked)."""

from __future__ import annotations

import pytest

from tests.helpers.common import bench_json

pytestmark = pytest.mark.slow  # a bench smoke run: make test-fast skips it


def test_bench_realm_smoke() -> None:
    data = bench_json(
        "bench_realm.py", "--handshake-clients", "10", "--ingest-clients", "10",
        "--ingest-seconds", "1", "--repeats", "1", "--procs", "1", timeout=240,
    )  # fmt: skip
    assert data["bench"] == "realm"
    assert data["handshakes"]["clients"] == 10 and data["handshakes"]["per_s_median"] > 0
    ingest = data["ingest"]
    assert ingest["sent"] >= 10 and ingest["accepted"] == ingest["sent"]  # nothing lost
    assert ingest["engine_ingested"] == ingest["accepted"]
    assert data["rss"]["connected_mib"] > 0
