"""Grid vs nanoflann KD-tree for the engine's neighbour query (prints JSON).

Compiles bench/bench_engine_index.cpp with the system compiler (-O2) into a
temporary directory and runs it for each size and layout. See the .cpp for
what is timed; docs/archipelago.md records why the engine uses a grid.

    python bench/bench_engine_index.py [--sizes 100000,1000000]  # 1M clustered: minutes
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

SRC = Path(__file__).with_name("bench_engine_index.cpp")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", default="100000")
    p.add_argument("--layouts", default="uniform,clustered")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        exe = Path(tmp) / "bench_engine_index"
        subprocess.run(["c++", "-O2", "-std=c++17", "-o", str(exe), str(SRC)], check=True)
        results = []
        for n in args.sizes.split(","):
            for layout in args.layouts.split(","):
                out = subprocess.run(
                    [str(exe), n, layout], capture_output=True, text=True, check=True
                )
                results.append(json.loads(out.stdout))
    print(json.dumps({"bench": "engine_index", "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
