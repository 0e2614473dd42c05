"""bench/bench_soak.py keeps working: a few seconds of the soak with a handful of sessions.

No timing is asserted (figures live in docs/performance.md); the checks are that every
load session stayed up, every ``/status`` probe answered, the series has samples with
RSS and users, and the realm stopped when asked."""

from __future__ import annotations

import pytest

from tests.helpers.common import bench_json

pytestmark = pytest.mark.slow  # a bench smoke run: make test-fast skips it


def test_bench_soak_smoke() -> None:
    report = bench_json(
        "bench_soak.py", "--minutes", "0.1", "--sessions", "40", "--loaders", "2",
        "--sample-s", "2", timeout=600,
    )  # fmt: skip
    assert report["sessions"] == 40 and report["loaders"] == 2
    assert report["status_failures"] == 0
    assert report["peak_users"] == 40
    assert report["shutdown_s"] < 30
    assert report["status_p99_ms"] >= report["status_p50_ms"] > 0
    series = report["series"]
    assert series and all(s["rss_kib"] > 0 for s in series)
    for lo in report["loaders_output"]:
        assert lo["mode"] == "heartbeats" and lo["clients"] == 20
        assert lo["failed"] == 0 and lo["closed"] == 0 and lo["sent_per_s"] > 0
