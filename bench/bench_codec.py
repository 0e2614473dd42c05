#!/usr/bin/env python3
"""Codec benchmark: median ns/op over repeated runs, through the Python API.

Cases (each timed as ``--repeats`` runs of ``--iterations`` calls; the median
run is reported, with min and max):

* ``decode_client_heartbeat``: ``codec.decode`` of a ClientPacket heartbeat frame
  (the most frequent inbound frame).
* ``decode_heartbeat_fast``: the bare-Heartbeat fast path.
* ``encode_island_changed_100_fast`` / ``..._generic``: a ServerPacket
  island_changed frame with 100 peers, via the typed fast path and via the dict
  path; both produce the same bytes (checked before timing).
* ``decode_ws_peer_update``: ``codec.decode`` of an RFC-5 WsPacket peer_update
  carrying a 40-byte body.

Prints one JSON object; ``peak_rss_kib`` is the process's peak resident set.
Usage: ``python bench/bench_codec.py [--quick] [--repeats N] [--iterations N]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import resource
import statistics
import struct
import sys
import time
from collections.abc import Callable
from typing import Any

from dclcomms import __version__, codec

V3 = "decentraland.kernel.comms.v3."
WS = "decentraland.kernel.comms.rfc5.WsPacket"


def _f32(x: float) -> float:
    return float(struct.unpack("<f", struct.pack("<f", x))[0])


def _time(fn: Callable[[], object], iterations: int, repeats: int) -> dict[str, float]:
    fn()  # warm up
    runs = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        for _ in range(iterations):
            fn()
        runs.append((time.perf_counter_ns() - start) / iterations)
    return {
        "median_ns": round(statistics.median(runs), 1),
        "min_ns": round(min(runs), 1),
        "max_ns": round(max(runs), 1),
    }


def run(iterations: int, repeats: int, seed: int = 7) -> dict[str, Any]:
    rng = random.Random(seed)
    heartbeat = codec.encode(
        V3 + "ClientPacket", {"heartbeat": {"position": {"x": 16.5, "y": 0.0, "z": -32.25}}}
    )
    bare = codec.encode(V3 + "Heartbeat", {"position": {"x": 1.0, "y": 2.0, "z": 3.0}})
    peers = [
        (
            f"0x{rng.getrandbits(160):040x}",
            (_f32(rng.uniform(-150, 150)), 0.0, _f32(rng.uniform(-150, 150))),
        )
        for _ in range(100)
    ]
    island = "I42"
    conn = "livekit:wss://livekit.example.org?access_token=" + "x" * 300
    as_dict = {
        "islandChanged": {
            "islandId": island,
            "connStr": conn,
            "fromIslandId": "I7",
            "peers": {p: {"x": x, "y": y, "z": z} for p, (x, y, z) in peers},
        }
    }
    fast = codec.encode_island_changed(island, conn, "I7", peers, server_packet=True)
    if fast != codec.encode(V3 + "ServerPacket", as_dict):
        raise SystemExit("fast path and generic encoder disagree")
    update = codec.encode(
        WS, {"peerUpdateMessage": {"fromAlias": 7, "body": bytes(range(40)), "unreliable": True}}
    )
    cases: dict[str, Callable[[], object]] = {
        "decode_client_heartbeat": lambda: codec.decode(V3 + "ClientPacket", heartbeat),
        "decode_heartbeat_fast": lambda: codec.decode_heartbeat(bare),
        "encode_island_changed_100_fast": lambda: codec.encode_island_changed(
            island, conn, "I7", peers, server_packet=True
        ),
        "encode_island_changed_100_generic": lambda: codec.encode(V3 + "ServerPacket", as_dict),
        "decode_ws_peer_update": lambda: codec.decode(WS, update),
    }
    results = {name: _time(fn, iterations, repeats) for name, fn in cases.items()}
    return {
        "benchmark": "codec",
        "dclcomms": __version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "iterations": iterations,
        "repeats": repeats,
        "sizes_bytes": {
            "client_heartbeat": len(heartbeat),
            "island_changed_100": len(fast),
            "ws_peer_update": len(update),
        },
        "results": results,
        "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="tiny run (smoke test)")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--iterations", type=int, default=20_000)
    ns = parser.parse_args(argv)
    if ns.quick:
        ns.repeats, ns.iterations = 3, 50
    json.dump(run(ns.iterations, ns.repeats), sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
