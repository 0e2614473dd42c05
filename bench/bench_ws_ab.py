"""Room fan-out of two (or more) builds, alternating run by run in one sitting.

Wall-clock figures on a shared machine follow its load, which changes from minute to minute:
comparing two builds is fair only when their runs alternate. Each ``--build LABEL=DIR`` is a
directory holding an installed ``dclcomms`` (``pip install --target DIR .`` from a checkout of
that commit; ``LABEL=`` alone: the one installed here), optionally ``:IO`` for its
``io_threads``. Every shape runs ``--reps`` times per build, builds alternating, with
``bench_ws.rooms_run`` (the server in its own process, ``bench/ws_load.cpp`` as the load).
Prints one JSON document: per shape and build the median and every run, with the load average.

    python bench/bench_ws_ab.py --build before=/tmp/before --build after= --build after2=:2 \\
        --shapes 1x50x1,1x50x8,10x20x1,10x20x8 --reps 3 --duration 10 --autogroup-nice -20
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import autogroup as autogroup_arg  # bench/autogroup.py: this folder is on sys.path as a script
from bench_ws import ROOT, build_load, loadavg, median_of, rooms_run


def parse_build(spec: str) -> tuple[str, str, int]:
    """``LABEL=DIR[:IO]`` -> (label, dir or "", io_threads)."""
    label, sep, rest = spec.partition("=")
    if not sep or not label:
        raise argparse.ArgumentTypeError(f"expected LABEL=DIR[:IO], got {spec!r}")
    where, _, io = rest.partition(":")
    if where and not (Path(where) / "dclcomms").is_dir():
        raise argparse.ArgumentTypeError(f"{where}: no installed dclcomms there")
    return label, where, int(io) if io else 1


def parse_shapes(text: str) -> list[tuple[int, int, int]]:
    """``RxCxK,...`` (rooms x clients x in flight)."""
    out = []
    for part in text.split(","):
        r, c, k = (int(x) for x in part.split("x"))
        out.append((r, c, k))
    return out


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--build", type=parse_build, action="append", required=True)
    p.add_argument("--shapes", type=parse_shapes, default=parse_shapes("10x20x1"))
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--build-dir", type=Path, default=ROOT / "build" / "bench")
    autogroup_arg.add_argument(p)
    ns = p.parse_args(argv)
    autogroup = autogroup_arg.apply(ns.autogroup_nice, "bench_ws_ab")
    load = build_load(ns.build_dir)
    base_path = os.environ.get("PYTHONPATH", "")
    out: dict[str, Any] = {
        "reps": ns.reps,
        "duration_s": ns.duration,
        "builds": {label: {"dir": d, "io_threads": io} for label, d, io in ns.build},
        "autogroup": autogroup,
        "loadavg_start": loadavg(),
        "shapes": {},
    }
    for rooms, clients, inflight in ns.shapes:
        runs: dict[str, list[dict[str, Any]]] = {label: [] for label, _, _ in ns.build}
        for _ in range(ns.reps):
            for label, where, io in ns.build:
                # The server process (bench_ws.py --serve) imports dclcomms from here.
                path = os.pathsep.join(x for x in (where, base_path) if x)
                if path:
                    os.environ["PYTHONPATH"] = path
                else:
                    os.environ.pop("PYTHONPATH", None)
                runs[label].append(rooms_run(load, rooms, clients, inflight, ns.duration, io))
        out["shapes"][f"{rooms}x{clients}_inflight{inflight}"] = {
            label: {"median": median_of(r), "runs": r} for label, r in runs.items()
        }
    out["loadavg_end"] = loadavg()
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
