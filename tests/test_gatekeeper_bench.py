"""Smoke test: bench/bench_gatekeeper.py still runs end to end (tiny sizes; figures not checked)."""

from __future__ import annotations

import pytest

from tests.helpers.common import bench_json

pytestmark = pytest.mark.slow  # a bench smoke run: make test-fast skips it


def test_bench_gatekeeper_smoke() -> None:
    data = bench_json("bench_gatekeeper.py", "--quick", timeout=240)
    assert data["bench"] == "gatekeeper" and data["route"] == "/get-scene-adapter"
    sqlite = data["databases"]["sqlite"]
    run = sqlite["runs"][0]
    assert run["requests"] == 300 and run["ok"] == 300, run  # every pre-signed request answered
    assert run["statuses"] == {"200": 300}
    assert sqlite["req_per_s_median"] > 0 and sqlite["p99_ms_median"] >= sqlite["p50_ms_median"]
    assert sqlite["answer"]["adapter_prefix"].startswith("livekit:wss://")
    assert sqlite["answer"]["room"] == "main:scene-0-0"
    assert sqlite["bans_stored"] == 5 and sqlite["server_peak_rss_mib"] > 0
    # The C++ load generator ran, on kept-alive connections (HTTP/1.1 keep-alive of the
    # server's plain HTTP: one connection per request in flight), and both sides' CPU
    # was measured.
    assert 1 <= run["connections_opened"] <= data["concurrency"]
    assert sqlite["server_cpu_us_per_request"] > 0 and run["client_cpu_s"] >= 0
    # Then the open-loop run at a fixed rate, every request answered.
    paced = sqlite["at_rate"]
    assert paced["rate"] == data["rate"] > 0
    assert paced["runs"][0]["statuses"] == {"200": 300}
    assert 0 < paced["p50_ms_median"] <= paced["p99_ms_median"]
