"""Smoke test: bench/bench_p2p.py still runs end to end (2 peers, 1 s; figures not checked)."""

from __future__ import annotations

import pytest

from tests.helpers.common import bench_json

pytestmark = pytest.mark.slow  # a bench smoke run: make test-fast skips it


def test_bench_p2p_smoke() -> None:
    data = bench_json("bench_p2p.py", "--quick", timeout=240)
    assert data["bench"] == "p2p" and data["hz"] == 10.0
    rows = {r["transport"]: r for r in data["results"]}
    assert set(rows) == {"p2p", "ws-room"}
    for transport, row in rows.items():
        assert row["transports_seen"] == [transport] and row["peers"] == 2
        assert row["delivered"] > 0.5 and row["latency_p99_ms"] > 0
        assert row["upload_Bps_median"] > 0 and row["ready_s_max"] > 0
    assert rows["p2p"]["dtls_Bps_median"] > rows["p2p"]["upload_Bps_median"]
    # two peers: nobody relays, one copy of each unreliable packet
    assert rows["p2p"]["unreliable_copies_per_delivery"] == 1.0
    assert rows["p2p"]["unreliable_fallback"] == 0
    assert rows["ws-room"]["unreliable_copies_per_delivery"] is None
