"""Prometheus exposition: names, types, histogram buckets, collectors."""

from __future__ import annotations

import pytest

from dclcomms.metrics import Registry


def test_render_counters_gauges_histograms_and_collectors() -> None:
    r = Registry()
    c = r.counter("dcl_things_total", "things")
    c.inc()
    c.inc(2, kind="a")
    g = r.gauge("dcl_level", "level")
    g.set(1.5)
    r.gauge("dcl_live", "live", fn=lambda: 7)
    h = r.histogram("dcl_size", "sizes", [1, 10])
    for v in (1, 5, 50):
        h.observe(v)
    r.collector(lambda: {"dcl_ws_rooms_users": ("gauge", "users", 3), "bad name": ("gauge", "", 1)})
    text = r.render()
    assert text.endswith("\n")
    lines = text.splitlines()
    assert "# TYPE dcl_things_total counter" in lines
    assert "dcl_things_total 1" in lines and 'dcl_things_total{kind="a"} 2' in lines
    assert "dcl_level 1.5" in lines and "dcl_live 7" in lines
    assert 'dcl_size_bucket{le="1"} 1' in lines
    assert 'dcl_size_bucket{le="10"} 2' in lines
    assert 'dcl_size_bucket{le="+Inf"} 3' in lines
    assert "dcl_size_sum 56" in lines and "dcl_size_count 3" in lines
    assert "# TYPE dcl_ws_rooms_users gauge" in lines and "dcl_ws_rooms_users 3" in lines
    assert not any(line.startswith("bad name") for line in lines)


def test_names_are_checked() -> None:
    r = Registry()
    with pytest.raises(ValueError, match="bad metric name"):
        r.counter("things_total", "no dcl_ prefix")
    r.counter("dcl_x_total", "x")
    with pytest.raises(ValueError, match="registered twice"):
        r.gauge("dcl_x_total", "again")
