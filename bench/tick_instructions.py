"""Instructions of the core's first tick of ``--peers`` new peers over NATS (native scheme).

A figure that repeats on a shared machine: one process (a private nats-server, a
connector bus publishing the heartbeats, the core's bus with the C++ client) runs under
``valgrind --tool=callgrind`` with collection only inside ``sys.call_tracing``, through
which the one measured ``core.tick()`` is called; the heartbeats are ingested and settled
before it. ``--tick python`` is the Python tick (the path before the C++ one), ``c`` the
C++ tick. Every thread counts while the tick runs (the C++ client's publisher included).

    python bench/tick_instructions.py --peers 10000            # both, JSON
    python bench/tick_instructions.py --peers 10000 --tick c
    python bench/tick_instructions.py --peers 100000 --steady  # a later tick: 1 % moved
    python bench/tick_instructions.py --transport ws-room      # a signed token per peer

``--steady``: the first tick runs uncollected, then 1 % of the peers move up to 30 m
(seeded) and the next tick is the one measured (a realm's usual tick: few changes, every
island's status).

The largest callees (inclusive) are listed from ``callgrind_annotate``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


async def one_tick(peers: int, mode: str, steady: bool, transport: str) -> None:
    """The measured process: ingest, settle, then one tick through sys.call_tracing."""
    import numpy as np

    import bench_nats as b  # this folder is on sys.path when run as a script
    from dclcomms.heartbeats import HeartbeatBatch
    from dclcomms.nats.pubsub import NatsPubSub

    b.TICK["mode"] = mode
    b.TICK["transport"] = transport
    proc, url = b.start_nats()
    try:
        pub = await NatsPubSub.connect([url], subjects="native")
        sub = await NatsPubSub.connect([url], subjects="native")
        core = b.make_core(sub)
        hb = b.batch(peers, 0, 1)
        pub.publish_heartbeats(hb)
        await pub.flush()
        while core.metrics.heartbeats.get() < peers:
            core.sync_feed(settle=True)
            await asyncio.sleep(0.01)
        if steady:
            core.tick()
            await sub.flush()
            rng = np.random.default_rng(2)
            moved = rng.choice(peers, peers // 100, replace=False)
            shift = rng.uniform(-30, 30, size=(len(moved), 3)).astype(np.float32)
            shift[:, 1] = 0
            part = hb.select(moved.tolist())
            pub.publish_heartbeats(
                HeartbeatBatch(part.addresses, part.positions + shift, part.desired_rooms)
            )
            await pub.flush()
            while core.metrics.heartbeats.get() < peers + len(moved):
                core.sync_feed(settle=True)
                await asyncio.sleep(0.01)
        report = sys.call_tracing(core.tick, ())  # the one call callgrind collects
        print(json.dumps({"island_changed": report.island_changed, "changes": report.changes}))
        await sub.flush()
        core.close()
        await pub.aclose()
        await sub.aclose()
    finally:
        proc.terminate()
        proc.wait(5)


def measure(peers: int, mode: str, top: int, steady: bool, transport: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        run = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={out}",
                "--toggle-collect=sys_call_tracing*",
                sys.executable,
                str(Path(__file__).resolve()),
                "--child",
                "--peers",
                str(peers),
                "--tick",
                mode,
                *(["--steady"] if steady else []),
                "--transport",
                transport,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        report = json.loads(run.stdout.strip().splitlines()[-1])
        total = re.search(r"Collected : (\d+)", run.stderr)
        assert total, "no callgrind totals"
        annotate = subprocess.run(
            ["callgrind_annotate", "--inclusive=yes", str(out)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    callees = []
    for line in annotate.splitlines():
        m = re.match(r"\s*([\d,]+) \(\s*[\d.]+%\)\s+\S*?:(dclcomms::\S+?)\(", line)
        if m and len(callees) < top:
            callees.append((m.group(2), int(m.group(1).replace(",", ""))))
    return {
        "peers": peers,
        "tick": mode,
        "steady": steady,
        "transport": transport,
        **report,
        "instructions": int(total.group(1)),
        "per_change": round(int(total.group(1)) / max(report["changes"], 1)),
        "largest_cpp_callees": callees,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--peers", type=int, default=10_000)
    ap.add_argument("--tick", choices=("python", "c", "both"), default="both")
    ap.add_argument("--top", type=int, default=8, help="C++ callees listed")
    ap.add_argument("--steady", action="store_true", help="measure a later tick (1 %% moved)")
    ap.add_argument(
        "--transport", choices=("fixed", "ws-room"), default="fixed", help="as bench_nats.py's"
    )
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        asyncio.run(one_tick(args.peers, args.tick, args.steady, args.transport))
        return
    modes = ("python", "c") if args.tick == "both" else (args.tick,)
    runs = [measure(args.peers, m, args.top, args.steady, args.transport) for m in modes]
    print(json.dumps(runs))


if __name__ == "__main__":
    main()
