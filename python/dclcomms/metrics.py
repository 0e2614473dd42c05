"""Prometheus text exposition (format 0.0.4) without a client library.

Counters, gauges and histograms with ``dcl_`` names and **no per-peer or
per-island labels** (unbounded cardinality); a label is allowed only when its
values form a small fixed set (e.g. a close reason code or a transport name).
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
LabelKey = tuple[tuple[str, str], ...]


def _fmt(v: float) -> str:
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if v == int(v) and abs(v) < 1e15:
        return str(int(v))
    return repr(float(v))


def _labels(key: LabelKey, extra: tuple[tuple[str, str], ...] = ()) -> str:
    items = key + extra
    if not items:
        return ""
    esc = (v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"') for _, v in items)
    return "{" + ",".join(f'{k}="{v}"' for (k, _), v in zip(items, esc, strict=True)) + "}"


@dataclass
class _Metric:
    name: str
    help: str
    kind: str

    def lines(self) -> Iterable[str]:
        raise NotImplementedError


@dataclass
class Counter(_Metric):
    values: dict[LabelKey, float] = field(default_factory=dict)

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        self.values[key] = self.values.get(key, 0.0) + amount

    def get(self, **labels: str) -> float:
        return self.values.get(tuple(sorted(labels.items())), 0.0)

    def labelled(self, **fixed: str) -> BoundCounter:
        """This counter with ``fixed`` labels added to every :meth:`inc` and :meth:`get`."""
        return BoundCounter(self, fixed)

    def lines(self) -> Iterable[str]:
        for key, v in sorted(self.values.items()) or [((), 0.0)]:
            yield f"{self.name}{_labels(key)} {_fmt(v)}"


@dataclass
class BoundCounter:
    """A :class:`Counter` seen by one of several parts sharing it (e.g. ``client="..."``)."""

    counter: Counter
    fixed: dict[str, str]

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        self.counter.inc(amount, **self.fixed, **labels)

    def get(self, **labels: str) -> float:
        return self.counter.get(**self.fixed, **labels)


@dataclass
class Gauge(_Metric):
    values: dict[LabelKey, float] = field(default_factory=dict)
    fn: Callable[[], float] | None = None
    fns: dict[LabelKey, Callable[[], float]] = field(default_factory=dict)

    def set(self, value: float, **labels: str) -> None:
        self.values[tuple(sorted(labels.items()))] = float(value)

    def bind(self, fn: Callable[[], float], **labels: str) -> None:
        """The series ``labels`` reads ``fn()`` at render time (replacing an earlier one)."""
        self.fns[tuple(sorted(labels.items()))] = fn

    def lines(self) -> Iterable[str]:
        if self.fn is not None:
            yield f"{self.name} {_fmt(self.fn())}"
            return
        values = dict(self.values)
        values.update((key, float(fn())) for key, fn in self.fns.items())
        for key, v in sorted(values.items()) or [((), 0.0)]:
            yield f"{self.name}{_labels(key)} {_fmt(v)}"


@dataclass
class Histogram(_Metric):
    buckets: tuple[float, ...] = ()
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    n: int = 0

    def __post_init__(self) -> None:
        self.buckets = tuple(sorted(self.buckets))
        self.counts = [0] * (len(self.buckets) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.n += 1

    def lines(self) -> Iterable[str]:
        acc = 0
        for le, c in zip((*self.buckets, math.inf), self.counts, strict=True):
            acc += c
            yield f"{self.name}_bucket{_labels((), (('le', _fmt(le)),))} {acc}"
        yield f"{self.name}_sum {_fmt(self.total)}"
        yield f"{self.name}_count {self.n}"


class Registry:
    """Named metrics rendered in registration order.

    One registry per process: every part running in it (connector, core, NATS
    clients, ...) registers here and ``/metrics`` renders it. A name is registered
    once; parts of which a process may run several (a NATS client per part) ask for
    ``shared=True`` and tell their series apart by a label.
    """

    def __init__(self) -> None:
        self._metrics: dict[str, _Metric] = {}
        self._collectors: list[Callable[[], Mapping[str, tuple[str, str, float]]]] = []
        self._before_render: list[Callable[[], None]] = []

    def _add(self, m: _Metric, shared: bool = False) -> _Metric:
        if not _NAME.match(m.name) or not m.name.startswith("dcl_"):
            raise ValueError(f"bad metric name {m.name!r}")
        old = self._metrics.get(m.name)
        if old is not None:
            if shared and type(old) is type(m) and getattr(old, "fn", None) is None:
                return old
            raise ValueError(f"metric {m.name} registered twice")
        self._metrics[m.name] = m
        return m

    def counter(self, name: str, help: str, *, shared: bool = False) -> Counter:
        """``shared``: return the counter of that name if one is registered already."""
        c = self._add(Counter(name, help, "counter"), shared)
        assert isinstance(c, Counter)
        return c

    def gauge(
        self,
        name: str,
        help: str,
        fn: Callable[[], float] | None = None,
        *,
        shared: bool = False,
    ) -> Gauge:
        """``fn``: the gauge's one value, read at render time; ``shared`` (without ``fn``):
        return the gauge of that name if one is registered already (see :meth:`Gauge.bind`)."""
        if shared and fn is not None:
            raise ValueError("a shared gauge binds its functions per label set (Gauge.bind)")
        g = self._add(Gauge(name, help, "gauge", fn=fn), shared)
        assert isinstance(g, Gauge)
        return g

    def histogram(self, name: str, help: str, buckets: Iterable[float]) -> Histogram:
        h = Histogram(name, help, "histogram", tuple(buckets))
        self._add(h)
        return h

    def collector(self, fn: Callable[[], Mapping[str, tuple[str, str, float]]]) -> None:
        """``fn()`` -> {name: (kind, help, value)} sampled at render time (e.g. C++ counters)."""
        self._collectors.append(fn)

    def before_render(self, fn: Callable[[], None]) -> None:
        """``fn()`` runs first at each render (e.g. to copy C++ counters into counters)."""
        self._before_render.append(fn)

    def names(self) -> list[str]:
        return list(self._metrics)

    def render(self) -> str:
        for hook in self._before_render:
            hook()
        out: list[str] = []
        for m in self._metrics.values():
            out.append(f"# HELP {m.name} {m.help}")
            out.append(f"# TYPE {m.name} {m.kind}")
            out.extend(m.lines())
        seen = set(self._metrics)
        for fn in self._collectors:
            for name, (kind, help_, value) in fn().items():
                if name in seen or not _NAME.match(name):
                    continue
                seen.add(name)
                out += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}", f"{name} {_fmt(value)}"]
        return "\n".join(out) + "\n"


CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

__all__ = ["CONTENT_TYPE", "BoundCounter", "Counter", "Gauge", "Histogram", "Registry"]
