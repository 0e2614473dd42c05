"""nats-server's CPU per heartbeat for different shapes of the core's subscription. JSON.

    python bench/nats_subscription_shapes.py                        # stock server
    python bench/nats_subscription_shapes.py --nats-conf examples/nats-server.conf --nats-gogc 400

A private nats-server; ``--load-procs`` load processes of ``bench_nats.py`` (connectors
with the C++ client, ``workers`` scheme: one ``peer.<addr>.heartbeat`` message per
heartbeat) publish ``--peers`` heartbeats ``--repeat`` times per round while one reader
(nats-py, in this process) subscribes in one of these shapes:

* ``peer.*.*`` (what the core's C++ feed subscribes in the ``workers`` scheme),
* ``peer.*.heartbeat``, ``peer.*.connect`` and ``peer.*.disconnect`` (three subscriptions),
* ``peer.>``,
* ``peer.*.*`` in a queue group.

The figure is the server's CPU time (every thread's ``/proc/<pid>/task/*/schedstat``,
nanoseconds) from the burst until the reader got every message, per heartbeat; the shapes
alternate within each of ``--rounds`` rounds. The reader is slow (nats-py) but the server
buffers for it, so its speed changes the server's work little.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
from typing import Any

import nats

import bench_nats  # this folder is on sys.path when run as a script

SHAPES: dict[str, list[tuple[str, str]]] = {
    "peer.*.*": [("peer.*.*", "")],
    "peer.*.heartbeat|connect|disconnect": [
        ("peer.*.heartbeat", ""),
        ("peer.*.connect", ""),
        ("peer.*.disconnect", ""),
    ],
    "peer.>": [("peer.>", "")],
    "peer.*.* queue group": [("peer.*.*", "core")],
}


def server_cpu_ns(pid: int) -> int:
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except OSError:
            pass  # a thread that ended
    return total


async def run(args: argparse.Namespace) -> dict[str, Any]:
    proc, url = bench_nats.start_nats()
    out: dict[str, Any] = {
        "bench": "nats_subscription_shapes",
        "peers": args.peers,
        "repeat": args.repeat,
        "load_procs": args.load_procs,
        "nats_conf": args.nats_conf,
        "nats_gogc": args.nats_gogc,
    }
    try:
        procs = bench_nats.LoadProcs(
            args.load_procs,
            args.peers,
            {
                "url": url,
                "c_client": True,
                "subjects": "workers",
                "batch": 1000,
                "seed": 1,
                "repeat": args.repeat,
            },
        )
        total = args.peers * args.repeat
        per: dict[str, list[float]] = {k: [] for k in SHAPES}
        try:
            for r in range(args.rounds):
                for name, subs in SHAPES.items():
                    nc = await nats.connect(url, pending_size=1 << 30)
                    got = [0]

                    async def cb(_msg: Any, got: list[int] = got) -> None:
                        got[0] += 1

                    for subject, queue in subs:
                        await nc.subscribe(
                            subject,
                            queue=queue,
                            cb=cb,
                            pending_msgs_limit=10 * total,
                            pending_bytes_limit=1 << 30,
                        )
                    await nc.flush()
                    cpu0 = server_cpu_ns(proc.pid)
                    procs.send(f"burst {r}")
                    await procs.results()
                    while got[0] < total:
                        await asyncio.sleep(0.005)
                    per[name].append((server_cpu_ns(proc.pid) - cpu0) / total / 1000)
                    await nc.close()
        finally:
            procs.close()
        out["nats_server_us_per_heartbeat"] = {
            k: {"median": round(statistics.median(v), 3), "runs": [round(x, 3) for x in v]}
            for k, v in per.items()
        }
    finally:
        proc.terminate()
        proc.wait(5)
    out["load_average"] = os.getloadavg()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--peers", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=5, help="heartbeats per peer per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--load-procs", type=int, default=2)
    ap.add_argument("--nats-conf", default=None, help="as bench_nats.py --nats-conf")
    ap.add_argument("--nats-gogc", default=None, help="as bench_nats.py --nats-gogc")
    args = ap.parse_args()
    bench_nats.NATS_CONF["path"] = args.nats_conf
    bench_nats.NATS_CONF["gogc"] = args.nats_gogc
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
