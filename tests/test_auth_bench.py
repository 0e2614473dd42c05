"""bench/bench_auth.py --quick keeps working and prints its JSON fields.

No timing is asserted here (figures live in docs/performance.md)."""

from __future__ import annotations

import pytest

from tests.helpers.common import bench_json

pytestmark = pytest.mark.slow  # a bench smoke run: make test-fast skips it


def test_bench_auth_quick() -> None:
    report = bench_json("bench_auth.py", "--quick")
    assert report["benchmark"] == "auth" and report["quick"] is True
    for key in (
        "bare_recovery_us_cpu",
        "chains_per_s_1thread_cpu",
        "chains_per_s_verify_many_all_cores_wall",
        "chain_cost_vs_two_recoveries",
        "livekit_token_mint_us_cpu",
        "jwt_decode_per_s_cpu",
        "peak_rss_mib",
    ):
        assert report[key] > 0, key
