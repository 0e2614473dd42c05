"""Simulator throughput: wall seconds per simulated flush at 10k, 100k and 1M peers.

World: ``dclcomms sim``'s ``mixed`` (``dclcomms.sim.cli.build_world``): Genesis City,
70 % random-waypoint peers in parties of 4 with sessions (mean 30 min online, 10 min
offline) and 30 % commuters between five plazas,
default engine parameters (64/80 m, 100 per island), heartbeat 1 s, flush 2 s.
After ``--warmup`` flushes (the first one is the cold start: every peer new),
each of ``--flushes`` measured flushes is timed separately (two heartbeats with
mobility steps + update_many, expire + flush + snapshot + metrics); the median
and its breakdown are reported. Each size runs in its own process so that
``peak_rss_mb`` is that size's peak.

    python bench/bench_sim.py            # 10k, 100k, 1M
    python bench/bench_sim.py --quick    # 2k and 10k, fewer flushes (smoke test)

Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from typing import Any


def one(n: int, warmup: int, flushes: int, seed: int) -> dict[str, Any]:
    from dclcomms.sim import Simulation, SizeThreshold
    from dclcomms.sim.cli import build_world

    world = build_world("mixed", n)
    t0 = time.perf_counter()
    sim = Simulation(world, seed=seed, policy=SizeThreshold(20))
    setup_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    sim.run(2.0, progress=False)
    cold_s = time.perf_counter() - t0
    sim.run(2.0 * max(warmup - 1, 0), progress=False)
    walls = []
    for _ in range(flushes):
        t0 = time.perf_counter()
        sim.run(2.0, progress=False)
        walls.append(time.perf_counter() - t0)
    timings = sim.result.timings.tail(flushes)
    last = sim.result.flushes.iloc[-1]
    tail = sim.result.flushes.tail(flushes)
    return {
        "peers": n,
        "connected": int(last["connected"]),
        "islands": int(last["islands"]),
        "setup_s": round(setup_s, 3),
        "cold_flush_s": round(cold_s, 3),
        "s_per_flush_median": round(statistics.median(walls), 4),
        "s_per_flush_min": round(min(walls), 4),
        "breakdown_median_s": {
            k: round(float(timings[k].median()), 4)
            for k in ("mobility", "update", "flush_s", "metrics")
        },
        "moved_per_flush_median": float(tail["moved"].median()),
        "churn_median": round(float(tail["churn"].median()), 4),
        "flushes_timed": flushes,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--warmup", type=int, default=3, help="flushes before timing (>= 1)")
    ap.add_argument("--flushes", type=int, default=7, help="timed flushes per size")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="2k and 10k peers, 2 timed flushes")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.quick:
        a.sizes, a.warmup, a.flushes = [2_000, 10_000], 1, 2
    if a.one is not None:
        print(json.dumps(one(a.one, a.warmup, a.flushes, a.seed)))
        return 0
    flags = ["--warmup", str(a.warmup), "--flushes", str(a.flushes), "--seed", str(a.seed)]
    return run_sizes("sim", __file__, a.sizes, flags, a.seed)


def run_sizes(bench: str, script: str, sizes: list[int], flags: list[str], seed: int) -> int:
    """Runs ``script --one N *flags`` once per size, each in its own process (so that its
    ``peak_rss_mb`` is that size's), and prints the JSON document of the runs."""
    runs = []
    for n in sizes:
        cmd = [sys.executable, script, "--one", str(n), *flags]
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            sys.stderr.write(out.stderr)
            return out.returncode
        runs.append(json.loads(out.stdout))
    doc = {
        "bench": bench,
        "seed": seed,
        "machine": {"python": platform.python_version(), "cpu_count": _cpus()},
        "runs": runs,
    }
    print(json.dumps(doc, indent=2))
    return 0


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    sys.exit(main())
