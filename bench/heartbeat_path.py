"""The heartbeat path in process: polled event -> realm -> connector -> pub/sub -> core -> engine.

What one heartbeat costs from the moment the C++ server hands a polled heartbeat batch to
Python until the engine has it (stats included), and what one steady tick costs (expire,
flush, policy, connection strings, island_changed to the connector glue, engine.islands).
No sockets: the realm's own pieces (``Realm._dispatch``, ``Connector``, ``InProcessPubSub``,
``ArchipelagoCore``, ``Stats``) are wired as ``Realm.start`` wires them, the server object
the connector sends to only counts what it is given, and the polled batches are built
the way ``_core.WsServer.poll`` returns them. The C++ side of the socket (decode, limits,
batching) is measured by ``bench_ws_instructions.py``.

Scenario: ``--peers`` peers in clusters of 50 (clusters 500 m apart, so islands of 50),
heartbeats in polled batches of ``--batch``. A round = every peer heartbeats once, 10 %
of them moved by up to 10 m and 1 % moved to another cluster (island changes); then one
tick. Seeded.

    python bench/heartbeat_path.py                   # wall: median of --repeats rounds
    python bench/heartbeat_path.py --callgrind       # + instructions per heartbeat / tick

Wall figures: median over ``--repeats`` rounds (after one warm-up round). Instruction
counts: ``valgrind --tool=callgrind`` runs of this script with 1 and 3 measured rounds;
the difference divided by 2 rounds (start-up and set-up cancel out), per heartbeat for
the ingest and per tick for the tick. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

CLUSTER = 50


class CountingServer:
    """What the connector glue sends to: counts the calls (the sockets are not measured)."""

    def __init__(self) -> None:
        self.sent = 0

    def send_island_changed(self, *args: object) -> None:
        self.sent += 1

    def send_join_island(self, *args: object) -> None:
        self.sent += 1

    def send_left_island(self, *args: object) -> None:
        self.sent += 1


class Path_:
    """The realm's pieces wired as ``Realm.start`` wires them."""

    def __init__(self, peers: int, batch: int, seed: int) -> None:
        from dclcomms.archipelago.core import core_from_config
        from dclcomms.config import RealmConfig
        from dclcomms.policy import build_transports, make_policy
        from dclcomms.realm.app import Realm
        from dclcomms.realm.connector import Connector
        from dclcomms.stats import stats_from_config

        cfg = RealmConfig(host="127.0.0.1", port=0)
        self.realm = Realm(cfg)
        pubsub, registry = self.realm.pubsub, self.realm.registry
        transports = build_transports(cfg, bound_port=1, ws_room_secret="bench")
        policy = make_policy(None, transports, cfg)
        self.core = core_from_config(cfg, pubsub, policy, registry=registry)
        self.stats = stats_from_config(cfg, pubsub, engine=self.core.engine)
        self.server = CountingServer()
        self.connector = Connector(self.server, pubsub, registry)
        self.rng = np.random.default_rng(seed)
        self.batch = batch
        self.addresses = [f"0x{i:040x}" for i in range(peers)]
        clusters = (peers + CLUSTER - 1) // CLUSTER
        side = int(np.ceil(np.sqrt(clusters)))
        self.centers = np.array(
            [((c % side) * 500.0, 0.0, (c // side) * 500.0) for c in range(clusters)]
        )
        home = np.arange(peers) // CLUSTER
        offsets = self.rng.uniform(-20.0, 20.0, (peers, 3))
        offsets[:, 1] = 0.0
        self.positions = (self.centers[home] + offsets).astype(np.float32)
        for a in self.addresses:
            self.connector.on_connected(a)

    def move(self) -> None:
        n = len(self.addresses)
        step = self.rng.uniform(-10.0, 10.0, (n // 10, 3)).astype(np.float32)
        step[:, 1] = 0.0
        who = self.rng.choice(n, n // 10, replace=False)
        self.positions[who] += step
        jumpers = self.rng.choice(n, max(n // 100, 1), replace=False)
        to = self.rng.integers(0, len(self.centers), len(jumpers))
        self.positions[jumpers] = self.centers[to].astype(np.float32)

    def polled(self) -> list[tuple[object, ...]]:
        """The round's heartbeats as ``_core.WsServer.poll`` returns them."""
        from dclcomms import _core
        from dclcomms.heartbeats import UNSET

        out = []
        for lo in range(0, len(self.addresses), self.batch):
            addrs = self.addresses[lo : lo + self.batch]
            n = len(addrs)
            pos = np.ascontiguousarray(self.positions[lo : lo + n])
            out.append((_core.WsEventKind.HEARTBEATS, list(addrs), pos, [UNSET] * n))
        return out

    def ingest(self, polled: list[tuple[object, ...]]) -> None:
        from dclcomms import ws

        dispatch, connector = self.realm._dispatch, self.connector
        for raw in polled:
            dispatch(ws._event(raw), connector)

    def tick(self) -> None:
        self.core.tick()


def measure(peers: int, batch: int, repeats: int, seed: int) -> dict[str, Any]:
    p = Path_(peers, batch, seed)
    t0 = time.perf_counter()
    p.ingest(p.polled())
    t1 = time.perf_counter()
    p.tick()
    cold_tick = time.perf_counter() - t1
    first_ingest = t1 - t0
    ingest, tick = [], []
    for r in range(repeats + 1):
        p.move()
        polled = p.polled()
        t0 = time.perf_counter()
        p.ingest(polled)
        t1 = time.perf_counter()
        p.tick()
        t2 = time.perf_counter()
        if r:  # the first round warms up
            ingest.append((t1 - t0) / peers)
            tick.append(t2 - t1)
    return {
        "peers": peers,
        "batch": batch,
        "repeats": repeats,
        "first_ingest_us_per_heartbeat": round(first_ingest / peers * 1e6, 3),
        "cold_tick_ms": round(cold_tick * 1e3, 2),
        "ingest_us_per_heartbeat": round(statistics.median(ingest) * 1e6, 3),
        "ingest_us_per_heartbeat_range": [round(min(ingest) * 1e6, 3), round(max(ingest) * 1e6, 3)],
        "tick_ms": round(statistics.median(tick) * 1e3, 3),
        "tick_ms_range": [round(min(tick) * 1e3, 3), round(max(tick) * 1e3, 3)],
        "island_messages_sent": p.server.sent,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def child(what: str, peers: int, batch: int, rounds: int, seed: int) -> None:
    """One callgrind run: set up, one warm round, then ``rounds`` rounds of ``what``."""
    p = Path_(peers, batch, seed)
    p.ingest(p.polled())
    p.tick()
    p.move()
    p.ingest(p.polled())
    p.tick()
    work = []
    for _ in range(3):  # the same set-up work whatever ``rounds`` is
        p.move()
        work.append(p.polled())
    for polled in work[:rounds]:
        if what == "ingest":
            p.ingest(polled)
        else:
            p.ingest(polled)  # the tick needs the round's heartbeats...
            p.tick()


def instructions(what: str, peers: int, batch: int, rounds: int, seed: int, tmp: Path) -> int:
    out = tmp / f"{what}-{rounds}.out"
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable]
    cmd += [__file__, "--child", what, "--peers", str(peers), "--batch", str(batch)]
    cmd += ["--rounds", str(rounds), "--seed", str(seed)]
    subprocess.run(cmd, check=True, capture_output=True)
    m = re.search(r"^(?:summary|totals): (\d+)", out.read_text(errors="replace"), re.MULTILINE)
    assert m, "no callgrind totals"
    return int(m.group(1))


def callgrind(peers: int, batch: int, seed: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        ingest = [instructions("ingest", peers, batch, r, seed, tmp) for r in (1, 3)]
        both = [instructions("tick", peers, batch, r, seed, tmp) for r in (1, 3)]
    per_round_ingest = (ingest[1] - ingest[0]) / 2
    per_round_both = (both[1] - both[0]) / 2
    return {
        "callgrind_peers": peers,
        "instructions_per_heartbeat": round(per_round_ingest / peers, 1),
        "instructions_per_tick": round(per_round_both - per_round_ingest),
    }


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--peers", type=int, default=10_000)
    p.add_argument("--batch", type=int, default=300, help="heartbeats per polled batch")
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--callgrind", action="store_true", help="also count instructions")
    p.add_argument("--callgrind-peers", type=int, default=2_000)
    p.add_argument("--child", choices=["ingest", "tick"], help=argparse.SUPPRESS)
    p.add_argument("--rounds", type=int, default=1, help=argparse.SUPPRESS)
    ns = p.parse_args(argv)
    if ns.child:
        child(ns.child, ns.peers, ns.batch, ns.rounds, ns.seed)
        return 0
    out = measure(ns.peers, ns.batch, ns.repeats, ns.seed)
    if ns.callgrind:
        out.update(callgrind(ns.callgrind_peers, ns.batch, ns.seed))
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
