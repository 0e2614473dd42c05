"""bench/bench_codec.py keeps working: its --quick mode runs and prints the JSON shape."""

from __future__ import annotations

import pytest

from tests.helpers.common import bench_json

pytestmark = pytest.mark.slow  # a bench smoke run: make test-fast skips it


def test_bench_codec_quick() -> None:
    report = bench_json("bench_codec.py", "--quick")
    assert report["benchmark"] == "codec"
    assert set(report["results"]) == {
        "decode_client_heartbeat",
        "decode_heartbeat_fast",
        "encode_island_changed_100_fast",
        "encode_island_changed_100_generic",
        "decode_ws_peer_update",
    }
    for figures in report["results"].values():
        assert 0 < figures["min_ns"] <= figures["median_ns"] <= figures["max_ns"]
    assert report["sizes_bytes"]["client_heartbeat"] == 14
    assert report["peak_rss_kib"] > 0
