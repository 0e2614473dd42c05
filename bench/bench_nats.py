"""NATS bus benchmark: heartbeat ingest and flush latency through NATS vs in process. JSON.

    python bench/bench_nats.py            # 10,000 simulated peers, 5 repeats
    python bench/bench_nats.py --quick    # small smoke run

A private ``nats-server`` is started on a free loopback port (never 4222). A
"connector" :class:`NatsPubSub` publishes the heartbeats of ``--peers`` simulated
peers as one batch (one NATS message per ``peer.<addr>.heartbeat``); a "core"
bus feeds the realm's :class:`ArchipelagoCore` (fixed ``offline:offline``
transport). Both buses share one event loop (one Python process), as a
connector and a core would on one machine in two processes, minus the second
interpreter.

* ingest: heartbeats/s = peers / (publish start -> last heartbeat ingested by the engine);
* tick: the core's tick (expire, flush, policy, publishing ``island_changed`` to every
  peer and ``engine.islands``) - publishing is non-blocking, so this is the time the
  core's loop is busy;
* flush latency: tick start -> the connector bus received every ``island_changed``;
* connector relay: handing the last round's received ``island_changed`` to a
  ``ws.Server`` typed (member list through pybind11), wrapped (encoded bytes) or in
  one call (header fields plus the members' shared encoded entries, as the realm does).

The same rounds run on the in-process bus first, for comparison. Medians over
``--repeats`` (fresh peers each round); peak RSS of the process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import shutil
import socket
import statistics
import subprocess
import time
import urllib.request
from typing import Any

import numpy as np

from dclcomms import ws
from dclcomms.archipelago import Engine
from dclcomms.archipelago.core import ArchipelagoCore
from dclcomms.heartbeats import UNSET
from dclcomms.nats.pubsub import NatsPubSub
from dclcomms.policy import FixedTransport, RealmPolicy, Transports, WsRoomTransport
from dclcomms.pubsub import HeartbeatBatch, InProcessPubSub, IslandChanged, IslandMembers, PubSub


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_nats() -> tuple[subprocess.Popen[bytes], str]:
    port, http = _free_port(), _free_port()
    exe = shutil.which("nats-server") or "/usr/sbin/nats-server"
    p = subprocess.Popen(
        [exe, "-a", "127.0.0.1", "-p", str(port), "-m", str(http)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http}/healthz", timeout=1):
                break
        except OSError:
            if time.monotonic() > deadline:
                p.kill()
                raise
            time.sleep(0.05)
    return p, f"nats://127.0.0.1:{port}"


def batch(n: int, round_: int, seed: int) -> HeartbeatBatch:
    rng = np.random.default_rng(seed + round_)
    pos = rng.uniform(0, 3000, size=(n, 3)).astype(np.float32)
    pos[:, 1] = 0
    addrs = [f"0x{round_:08x}{i:032x}" for i in range(n)]
    return HeartbeatBatch(addrs, pos, [UNSET] * n)


def make_core(bus: PubSub) -> ArchipelagoCore:
    ws_room = WsRoomTransport("ws://127.0.0.1:1", "unused-secret")
    policy = RealmPolicy(Transports(ws_room, fixed=FixedTransport("offline:offline")))
    engine = Engine(join_distance=64.0, leave_distance=80.0, max_island_size=100)
    return ArchipelagoCore(engine, bus, policy, heartbeat_timeout_ms=3_600_000)


async def one_round(
    pub: PubSub,
    sub: PubSub,
    n: int,
    round_: int,
    seed: int,
    flush: Any,
    received: list[tuple[str, IslandChanged]] | None = None,
    batch_size: int = 1000,
) -> dict[str, float]:
    core = make_core(sub)
    got = {"changed": 0}

    def on_changed(subject: str, msg: IslandChanged) -> None:
        got["changed"] += 1
        if received is not None:
            received.append((subject.split(".")[2], msg))

    s = pub.subscribe("engine.peer.*.island_changed", on_changed)
    await flush()
    b = batch(n, round_, seed)
    c0 = time.process_time()
    t0 = time.perf_counter()
    for i in range(0, n, batch_size):  # a connector publishes a batch every few ms
        pub.publish_heartbeats(
            HeartbeatBatch(
                b.addresses[i : i + batch_size],
                b.positions[i : i + batch_size],
                b.desired_rooms[i : i + batch_size],
            )
        )
    while True:
        core.sync_feed()  # a core fed in C++ counts what its feed applied
        if core.metrics.heartbeats.get() >= n:
            break
        await asyncio.sleep(0.0005)
    ingest = time.perf_counter() - t0
    cpu = time.process_time() - c0
    bytes0 = getattr(sub, "published_bytes", 0)
    t1 = time.perf_counter()
    report = core.tick()
    tick = time.perf_counter() - t1
    deadline = time.monotonic() + 60
    while got["changed"] < report.island_changed:  # dropped messages would never arrive
        if time.monotonic() > deadline:
            raise TimeoutError(f"{got['changed']} of {report.island_changed} island_changed")
        await asyncio.sleep(0.0005)
    latency = time.perf_counter() - t1
    s.unsubscribe()
    core.close()
    tick_mib = (getattr(sub, "published_bytes", 0) - bytes0) / 2**20
    return {
        "ingest_s": ingest,
        "ingest_cpu_s": cpu,
        "tick_s": tick,
        "flush_latency_s": latency,
        "tick_mib": tick_mib,
    }


def relay(received: list[tuple[str, IslandChanged]], repeats: int) -> dict[str, float]:
    """Median ms for a connector to hand every received island_changed to its server:
    typed (member list converted through pybind11, re-encoded in C++), wrapped (the
    message encoded in Python, wrapped in a ServerPacket in C++) and one call (what the
    realm's connector does: header fields plus the members' shared encoded entries, the
    frame built by one C++ call). Nobody is connected, so this is the connector's own
    cost (the C++ lookup then drops each packet)."""
    times: dict[str, list[float]] = {"typed_ms": [], "wrapped_ms": [], "one_call_ms": []}
    with ws.Server(ws.ServerConfig(port=0, rooms=False)) as server:
        for _ in range(repeats):
            t = time.perf_counter()
            for a, m in received:
                server.send_island_changed(
                    a, m.island_id, m.conn_str, m.from_island_id, list(m.peers.items())
                )
            times["typed_ms"].append(time.perf_counter() - t)
            t = time.perf_counter()
            for a, m in received:
                server.send_island_changed_message(a, m.to_bytes())
            times["wrapped_ms"].append(time.perf_counter() - t)
            t = time.perf_counter()
            for a, m in received:
                p = m.peers
                entries = p.to_bytes() if isinstance(p, IslandMembers) else list(p.items())
                server.send_island_changed(a, m.island_id, m.conn_str, m.from_island_id, entries)
            times["one_call_ms"].append(time.perf_counter() - t)
    return {k: round(statistics.median(v) * 1000, 2) for k, v in times.items()}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    proc, url = start_nats()
    schemes = args.subjects.split(",")
    out: dict[str, Any] = {
        "bench": "nats",
        "peers": args.peers,
        "repeats": args.repeats,
        "batch": args.batch,
        "subjects": schemes,
        "client": args.client,
    }
    try:
        mem = InProcessPubSub()

        async def no_flush() -> None:
            return None

        # in process first: what the NATS rounds leave behind (nats-py buffers, the
        # decoded member maps) would otherwise slow the in-process rounds down
        out["in_process"] = await rounds(args, mem, mem, no_flush)
        for i, name in enumerate(schemes):
            res = await nats_rounds(args, url, name)
            out[f"nats_{name}"] = res
            if i == 0:
                out["nats"] = res
    finally:
        proc.terminate()
        proc.wait(5)
    out["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return out


async def rounds(
    args: argparse.Namespace,
    p: PubSub,
    s: PubSub,
    f: Any,
    received: list[tuple[str, IslandChanged]] | None = None,
) -> dict[str, Any]:
    results = []
    for r in range(args.repeats):
        if received is not None:
            received.clear()  # keep the last round's messages for the relay timing
        results.append(await one_round(p, s, args.peers, r, args.seed, f, received, args.batch))
    med = {k: statistics.median(r[k] for r in results) for k in results[0]}
    return {
        "heartbeats_per_s": round(args.peers / med["ingest_s"]),
        "ingest_ms": round(med["ingest_s"] * 1000, 2),
        # CPU of the whole process (publisher, NATS clients, core) over the ingest
        "ingest_cpu_ms": round(med["ingest_cpu_s"] * 1000, 2),
        "tick_ms": round(med["tick_s"] * 1000, 2),
        "flush_latency_ms": round(med["flush_latency_s"] * 1000, 2),
        "tick_published_mib": round(med["tick_mib"], 1),
    }


async def nats_rounds(args: argparse.Namespace, url: str, scheme: str) -> dict[str, Any]:
    c_client = args.client == "c"
    pub = await NatsPubSub.connect([url], subjects=scheme, c_client=c_client)
    sub = await NatsPubSub.connect([url], subjects=scheme, c_client=c_client)

    async def nats_flush() -> None:
        await pub.ready()
        await sub.ready()

    received: list[tuple[str, IslandChanged]] = []
    out = await rounds(args, pub, sub, nats_flush, received)
    out["connector_relay"] = {"messages": len(received), **relay(received, args.repeats)}
    out["nats_messages_published"] = pub.published + sub.published
    out["dropped"] = int(
        sum(
            v
            for bus in (pub, sub)
            for v in (
                bus.m_dropped.get(reason=r)
                for r in ("outbox_full", "nats_buffer", "decode", "closed")
            )
            if v
        )
    )
    await pub.aclose()
    await sub.aclose()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--peers", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument(
        "--subjects",
        default="native,workers,v3",
        help="comma-separated schemes, run in this order in one process (native, workers, v3)",
    )
    ap.add_argument(
        "--batch", type=int, default=1000, help="heartbeats per connector batch (publish call)"
    )
    ap.add_argument(
        "--client",
        choices=("c", "python"),
        default="c",
        help="c: heartbeats and the core's ingest through the C++ client (libnats, the "
        "default); python: everything through nats-py (the path before it)",
    )
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="200 peers, 2 repeats")
    args = ap.parse_args()
    if args.quick:
        args.peers, args.repeats = 200, 2
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
