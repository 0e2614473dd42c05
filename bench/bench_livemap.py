"""Live map feed: server CPU per tick and bytes/s per page at 10k and 100k peers.

The realm's path, minus the sockets of the peers: the simulator's Genesis City world
(``dclcomms sim``'s ``mixed``: 70 % random-waypoint parties of 4, 30 % commuters, as in
bench_sim.py) moves the peers;
every simulated heartbeat (1 s) goes to the stats service as a heartbeat batch on an
in-process pub/sub, every flush (2 s) publishes ``island_changed`` per island (its
transport) and runs :class:`dclcomms.livemap.MapFeed`'s tick on the engine's islands
(what ``engine.islands`` schedules right after the core's tick), which hands the frames
to a real ``ws.Server`` with ``--pages`` live pages on /map/feed (aiohttp clients
reading on 127.0.0.1).

Per measured tick: the CPU seconds (``time.process_time``) of the feed's tick (the
delta, a key frame when one is due, the copy into the server) and the delta's bytes.
Reported: medians and maxima over ``--ticks`` ticks after ``--warmup``, bytes/s per
page (every byte the server sent to one page over the measured simulated seconds, key
frames included), the key frame's size and build time, and peak RSS.
Each size runs in its own process.

    python bench/bench_livemap.py            # 10k and 100k peers
    python bench/bench_livemap.py --quick    # 2k peers, few ticks (smoke test)

Prints one JSON document.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import sys
import time
from typing import Any

from bench_sim import run_sizes  # this folder is on sys.path when run as a script


async def _one(n: int, warmup: int, ticks: int, pages: int, seed: int) -> dict[str, Any]:
    import aiohttp
    import numpy as np

    from dclcomms import ws
    from dclcomms.heartbeats import UNSET
    from dclcomms.livemap import MapFeed
    from dclcomms.livemap.record import islands_of
    from dclcomms.pubsub import HeartbeatBatch, InProcessPubSub, IslandChanged
    from dclcomms.sim import Simulation, SizeThreshold
    from dclcomms.sim.cli import build_world
    from dclcomms.stats import Stats

    sim = Simulation(build_world("mixed", n), seed=seed, policy=SizeThreshold(20))
    clock = {"ms": 1_700_000_000_000}
    bus = InProcessPubSub()
    stats = Stats(bus, heartbeat_timeout_ms=10**9, clock_ms=lambda: clock["ms"])
    server = ws.Server(ws.ServerConfig(connector=False, rooms=False, map_feed=True))
    port = server.start()
    feed = MapFeed(stats, bus, server, clock_ms=lambda: clock["ms"])
    received = [0] * pages

    async def read(i: int, page: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in page:
            received[i] += len(msg.data)

    kind_names = {"livekit": "livekit:x", "ws-room": "ws-room:x", "p2p": "p2p:x"}
    cpu: list[float] = []
    delta_bytes: list[int] = []
    try:
        async with aiohttp.ClientSession() as http:
            conns = [await http.ws_connect(f"ws://127.0.0.1:{port}/map/feed") for _ in range(pages)]
            readers = [asyncio.create_task(read(i, c)) for i, c in enumerate(conns)]
            while server.stats()["feed"]["pages"] < pages:
                await asyncio.sleep(0.01)
            sent0 = 0
            for t in range(warmup + ticks):
                if t == warmup:
                    await asyncio.sleep(0.2)  # let the pages drain before counting
                    sent0 = server.stats()["feed"]["bytes_sent"]
                for _ in range(2):  # two heartbeats per flush, as the realm's defaults
                    sim.run(1.0, progress=False)
                    clock["ms"] += 1000
                    snap = sim.snapshot()
                    if snap.peer_ids.size:
                        bus.publish_heartbeats(
                            HeartbeatBatch(
                                snap.peer_ids.tolist(),
                                np.ascontiguousarray(snap.positions, dtype=np.float32),
                                [UNSET] * snap.peer_ids.size,
                            )
                        )
                for pid in set(stats.peers) - set(snap.peer_ids.tolist()):
                    bus.publish(f"peer.{pid}.disconnect", None)
                status = islands_of(snap)
                for iid, kind in sim.island_kinds.items():  # one island_changed per island
                    bus.publish(
                        "engine.peer.x.island_changed",
                        IslandChanged(iid, kind_names.get(kind, "fixed:x"), None, {}),
                    )
                c0 = time.process_time()
                feed.tick(status)
                c1 = time.process_time()
                if t >= warmup:
                    cpu.append(c1 - c0)
                    delta_bytes.append(feed.bytes_built)
                await asyncio.sleep(0.01)  # the pages read
            await asyncio.sleep(0.5)
            sent = server.stats()["feed"]["bytes_sent"] - sent0
            t0 = time.process_time()
            key = feed.snapshot()
            key_cpu = time.process_time() - t0
            for c in conns:
                await c.close()
            for r in readers:
                r.cancel()
    finally:
        server.stop()
    seconds = ticks * 2.0
    return {
        "peers": n,
        "online": len(stats.peers),
        "islands": len(status.islands),
        "pages": pages,
        "tick_cpu_ms_median": round(statistics.median(cpu) * 1000, 2),
        "tick_cpu_ms_max": round(max(cpu) * 1000, 2),
        "delta_bytes_median": int(statistics.median(delta_bytes)),
        "bytes_per_s_per_page": round(sent / pages / seconds),
        "key_frame_bytes": len(key),
        "key_frame_cpu_ms": round(key_cpu * 1000, 2),
        "ticks_timed": ticks,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--warmup", type=int, default=5, help="ticks before measuring")
    ap.add_argument("--ticks", type=int, default=15, help="measured ticks per size")
    ap.add_argument("--pages", type=int, default=2, help="map pages reading the feed")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="2k peers, 3 measured ticks")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.quick:
        a.sizes, a.warmup, a.ticks = [2_000], 2, 3
    if a.one is not None:
        doc = asyncio.run(_one(a.one, a.warmup, a.ticks, a.pages, a.seed))
        print(json.dumps(doc))
        return 0
    flags = ["--warmup", str(a.warmup), "--ticks", str(a.ticks), "--pages", str(a.pages)]
    return run_sizes("livemap", __file__, a.sizes, [*flags, "--seed", str(a.seed)], a.seed)


if __name__ == "__main__":
    sys.exit(main())
