"""Benchmark of the archipelago engine (prints JSON).

For each N and layout a fresh subprocess (so peak RSS is per configuration):

* ``cold``: all N peers new in one flush (update_many + flush timed apart);
* ``heartbeat``: every peer heartbeats each tick, 10 % of them moved by up to
  10 m (random direction); ``flush_ms`` is Engine.flush() (wall, including the
  IslandChange objects), ``flush_cpu_ms`` its CPU time (robust on a shared
  machine), ``engine_ms`` the C++ round alone, ``update_ms`` the update_many
  call for all N peers.

Layouts: ``uniform`` x, z in ±2400 m; ``clustered`` 90 % within 50 m of 20
hotspots, the rest uniform. Peer ids are 42-character addresses. Figures are
medians over the repeats; ``bytes_per_peer`` is the RSS growth caused by the
engine (ids and arrays built beforehand are excluded) divided by N.

    python bench/bench_engine.py                 # full run (manual: ~minutes)
    python bench/bench_engine.py --quick         # smoke: small N, 1 repeat
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

import numpy as np

HALF = 2400.0


def trimmed_rss() -> int:
    """RSS after returning freed heap pages to the OS (so transients do not count)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    return rss_bytes()


def rss_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def layout(rng: np.random.Generator, n: int, kind: str) -> np.ndarray:
    pos = np.zeros((n, 3), dtype=np.float64)
    pos[:, 0] = rng.uniform(-HALF, HALF, n)
    pos[:, 2] = rng.uniform(-HALF, HALF, n)
    if kind == "clustered":
        hot = rng.random(n) < 0.9
        k = int(hot.sum())
        centers = rng.uniform(-HALF, HALF, (20, 2))
        which = rng.integers(0, 20, k)
        r = 50.0 * np.sqrt(rng.random(k))
        a = rng.uniform(0, 2 * np.pi, k)
        pos[hot, 0] = centers[which, 0] + r * np.cos(a)
        pos[hot, 2] = centers[which, 1] + r * np.sin(a)
    return pos


def worker(n: int, kind: str, repeats: int, ticks: int, seed: int) -> dict[str, Any]:
    from dclcomms.archipelago import Engine

    rng = np.random.default_rng(seed)
    ids = [f"0x{i:040x}" for i in range(n)]
    pos = layout(rng, n, kind)
    out: dict[str, Any] = {"peers": n, "layout": kind, "seed": seed}

    cold: dict[str, list[float]] = {"update_ms": [], "flush_ms": [], "flush_cpu_ms": []}
    cold["engine_ms"] = []
    engine = None
    base_rss = 0
    for _ in range(repeats):
        engine = None
        base_rss = trimmed_rss()
        engine = Engine()
        t0 = time.perf_counter()
        engine.update_many(ids, pos)
        t1, c1 = time.perf_counter(), time.thread_time()
        changes = engine.flush()
        t2, c2 = time.perf_counter(), time.thread_time()
        cold["update_ms"].append((t1 - t0) * 1e3)
        cold["flush_ms"].append((t2 - t1) * 1e3)
        cold["flush_cpu_ms"].append((c2 - c1) * 1e3)
        cold["engine_ms"].append(engine.last_flush_stats()["elapsed_us"] / 1e3)
        assert len(changes) == n
        del changes
    assert engine is not None
    out["bytes_per_peer"] = round((trimmed_rss() - base_rss) / n, 1)
    out["cold"] = {k: round(statistics.median(v), 2) for k, v in cold.items()}
    out["islands"] = engine.island_count

    upd, fl, cpu, eng, changes_per_tick = [], [], [], [], []
    for _ in range(ticks):
        movers = rng.choice(n, max(1, n // 10), replace=False)
        d = 10.0 * rng.random(len(movers))
        a = rng.uniform(0, 2 * np.pi, len(movers))
        pos[movers, 0] += d * np.cos(a)
        pos[movers, 2] += d * np.sin(a)
        t0 = time.perf_counter()
        engine.update_many(ids, pos)
        t1, c1 = time.perf_counter(), time.thread_time()
        changes = engine.flush()
        t2, c2 = time.perf_counter(), time.thread_time()
        upd.append((t1 - t0) * 1e3)
        fl.append((t2 - t1) * 1e3)
        cpu.append((c2 - c1) * 1e3)
        eng.append(engine.last_flush_stats()["elapsed_us"] / 1e3)
        changes_per_tick.append(len(changes))
    stats = engine.last_flush_stats()
    engine.update_many(ids, pos)
    still = len(engine.flush())  # nobody moved: must be 0
    out["heartbeat"] = {
        "update_ms": round(statistics.median(upd), 2),
        "flush_ms": round(statistics.median(fl), 2),
        "flush_cpu_ms": round(statistics.median(cpu), 2),
        "engine_ms": round(statistics.median(eng), 2),
        "changes_per_flush": statistics.median(changes_per_tick),
        "changes_when_still": still,
        "last_flush_stats": stats,
    }
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small N, 1 repeat (smoke test)")
    p.add_argument("--sizes", default="1000,10000,100000,1000000")
    p.add_argument("--layouts", default="uniform,clustered")
    p.add_argument("--repeats", type=int, default=3, help="cold-start repetitions")
    p.add_argument("--ticks", type=int, default=7, help="heartbeat ticks")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--worker", nargs=2, metavar=("N", "LAYOUT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        n, kind = int(args.worker[0]), args.worker[1]
        print(json.dumps(worker(n, kind, args.repeats, args.ticks, args.seed)))
        return 0
    if args.quick:
        args.sizes, args.repeats, args.ticks = "1000,5000", 1, 1
    results = []
    for n in (int(s) for s in args.sizes.split(",")):
        for kind in args.layouts.split(","):
            cmd = [sys.executable, __file__, "--worker", str(n), kind]
            cmd += ["--repeats", str(args.repeats), "--ticks", str(args.ticks)]
            cmd += ["--seed", str(args.seed)]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
            results.append(json.loads(proc.stdout))
    print(json.dumps({"bench": "engine", "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
