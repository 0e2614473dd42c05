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


def test_parts_sharing_a_registry_label_their_series() -> None:
    """Two parts of one process (e.g. two NATS clients) register the same names with
    ``shared=True``: one metric, one series per part, each name typed once."""
    r = Registry()
    seen: list[str] = []
    for part, n in (("a", 1), ("b", 3)):
        c = r.counter("dcl_msgs_total", "messages", shared=True).labelled(client=part)
        c.inc(n)
        c.inc(2, reason="x")
        assert c.get() == n and c.get(reason="x") == 2
        r.gauge("dcl_up", "up", shared=True).bind(lambda n=n: n * 10, client=part)
    r.before_render(lambda: seen.append("hook"))
    lines = r.render().splitlines()
    assert seen == ["hook"]
    assert lines.count("# TYPE dcl_msgs_total counter") == 1
    assert lines.count("# TYPE dcl_up gauge") == 1
    assert 'dcl_msgs_total{client="a"} 1' in lines and 'dcl_msgs_total{client="b"} 3' in lines
    assert 'dcl_msgs_total{client="b",reason="x"} 2' in lines
    assert 'dcl_up{client="a"} 10' in lines and 'dcl_up{client="b"} 30' in lines
    # without shared=True a second registration is still an error, as is a kind mismatch
    with pytest.raises(ValueError, match="registered twice"):
        r.counter("dcl_msgs_total", "messages")
    with pytest.raises(ValueError, match="registered twice"):
        r.gauge("dcl_msgs_total", "messages", shared=True)
    with pytest.raises(ValueError, match=r"Gauge\.bind"):
        r.gauge("dcl_up", "up", fn=lambda: 1, shared=True)
    r.gauge("dcl_one", "one value", fn=lambda: 1)
    with pytest.raises(ValueError, match="registered twice"):
        r.gauge("dcl_one", "one value", shared=True)  # a single-valued gauge is one part's
