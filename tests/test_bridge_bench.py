"""bench/bench_bridge.py --quick keeps working (builds the C++ load client).

No timing is asserted (figures live in docs/performance.md): every scenario ran, the
reader read what the room tapped, every injection arrived."""

from __future__ import annotations

import pytest

from tests.helpers.common import bench_json

pytestmark = pytest.mark.slow  # a bench smoke run: make test-fast skips it


def test_bench_bridge_quick() -> None:
    scen = bench_json("bench_bridge.py", "--quick", timeout=900)["scenarios"]
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
