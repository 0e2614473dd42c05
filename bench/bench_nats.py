"""NATS bus benchmark: heartbeat ingest and flush latency through NATS vs in process. JSON.

    python bench/bench_nats.py            # 10,000 simulated peers, 5 repeats
    python bench/bench_nats.py --quick    # small smoke run
    python bench/bench_nats.py --client python          # the nats-py path (before libnats)
    python bench/bench_nats.py --tick python            # the core's tick in Python (before C++)
    python bench/bench_nats.py --deliver --subjects native   # to 10,000 real WebSocket sessions
    python bench/bench_nats.py --ingest --peers 20000   # core ingest from 2 load processes
    python bench/bench_nats.py --scale --peers 100000   # 1 Hz from 2 load processes, 2 s ticks

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
``--repeats`` (fresh peers each round); peak RSS of the process. ``ingest_cpu_ms``
is the whole process's CPU over the ingest (publisher, both clients, the core).

``--ingest``: the publishers are ``--load-procs`` separate processes (connector
buses with the C++ client), each publishing its share of ``--peers`` heartbeats
``--ingest-repeat`` times as fast as it can; heartbeats/s = all of them / (go ->
the engine applied the last); the CPU of the load processes, of this process (the
core) and of nats-server over that interval, so a saturated load generator shows;
their sum per heartbeat (``cpu_us_per_heartbeat``) and over the wall time (``cores_busy``:
the rate is about cores_busy / CPU per heartbeat, so a run that got little of the machine
shows); nats-server's ``/subsz`` match counters.

``--deliver``: tick start -> every ``island_changed`` delivered to real WebSocket
sessions. A connector (``ws.Server`` + the realm's connector glue on its own
``NatsPubSub``, the events pumped as the realm does) and the core (its own bus) run
in this process; ``--peers`` connector clients (``bench/ws_load.cpp --mode islands``,
one process on raw sockets, new identities each round) complete the handshake and send one heartbeat
each through the connector and NATS to the core; once the core has them all it ticks,
and the round ends when every client received its ``island_changed`` (exactly as many
as the core published; the load client counts them). ``--relay c`` relays the island
messages to the sessions in C++ (the default); ``--relay python`` through the Python
connector glue (the path before it); ``--relay c,python`` both, alternating rounds;
``--io-threads 1,2`` the connector's server with each number of I/O threads (its
sessions spread over that many shards), alternating rounds too. The
split, in ms from the tick start on one clock (CLOCK_MONOTONIC, across processes): the
core's tick returned, the connector's C++ client received the first and the last
island message, the server's I/O thread had handed the last to the sessions, the
first and the last client received theirs.

``--scale``: ``--peers`` peers heartbeating at 1 Hz from ``--load-procs`` processes
(joining over ``--ramp-s``) for ``--seconds`` while the core ticks every
``--flush-s``; reports tick durations and gaps (the flush held?), heartbeats sent
vs ingested, and ``island_changed`` published by the core vs received by the load
process of each peer (every one delivered?).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

import autogroup as autogroup_arg  # bench/autogroup.py: this folder is on sys.path as a script
from dclcomms import ws
from dclcomms.archipelago import Engine
from dclcomms.archipelago.core import ArchipelagoCore
from dclcomms.heartbeats import UNSET
from dclcomms.metrics import Registry
from dclcomms.nats.pubsub import NatsPubSub
from dclcomms.policy import FixedTransport, RealmPolicy, Transports, WsRoomTransport
from dclcomms.pubsub import (
    HeartbeatBatch,
    InProcessPubSub,
    IslandChanged,
    IslandMembers,
    IslandStatus,
    PubSub,
)
from dclcomms.realm.connector import Connector

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --nats-conf: a configuration file for the private nats-server (its settings, e.g.
# no_sublist_cache; the address and ports stay on the command line); --nats-gogc: the
# server's GOGC (Go's garbage-collector target; unset = Go's default, 100)
NATS_CONF: dict[str, str | None] = {"path": None, "gogc": None}
MONITOR: dict[int, str] = {}  # nats-server pid -> its monitoring URL


def subsz(pid: int) -> dict[str, Any]:
    """nats-server's /subsz: subscriptions and its subject-match counters (num_matches:
    full matches, i.e. messages its connection's own small cache missed; cache_hit_rate:
    of those, found in the account's subject cache)."""
    with urllib.request.urlopen(f"{MONITOR[pid]}/subsz", timeout=5) as r:
        return dict(json.loads(r.read()))


def start_nats(conf: str | None = None) -> tuple[subprocess.Popen[bytes], str]:
    port, http = _free_port(), _free_port()
    exe = shutil.which("nats-server") or "/usr/sbin/nats-server"
    conf = conf or NATS_CONF["path"]
    env = dict(os.environ)
    env.pop("GOGC", None)
    if NATS_CONF["gogc"]:
        env["GOGC"] = NATS_CONF["gogc"]
    p = subprocess.Popen(
        [exe, *(["-c", conf] if conf else []), "-a", "127.0.0.1", "-p", str(port), "-m", str(http)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    MONITOR[p.pid] = f"http://127.0.0.1:{http}"
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


# The core's tick: "c" (C++ where the bus allows it: the native scheme with the C++
# client) or "python" (the Python tick on every bus, the path before it); --tick.
# --transport: fixed (offline:offline, one string for all) or ws-room (a signed token per
# peer, what a realm without LiveKit issues).
TICK = {"mode": "c", "transport": "fixed"}
AUTOGROUP: dict[str, str | None] = {"group": None}  # --autogroup-nice, as then read


def make_core(bus: PubSub) -> ArchipelagoCore:
    ws_room = WsRoomTransport("ws://127.0.0.1:1", "unused-secret")
    fixed = FixedTransport("offline:offline") if TICK["transport"] == "fixed" else None
    policy = RealmPolicy(Transports(ws_room, fixed=fixed))
    engine = Engine(join_distance=64.0, leave_distance=80.0, max_island_size=100)
    cpp = TICK["mode"] == "c"
    return ArchipelagoCore(engine, bus, policy, heartbeat_timeout_ms=3_600_000, cpp_tick=cpp)


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
        "tick": args.tick,
        "transport": args.transport,
        "autogroup": AUTOGROUP["group"],
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
    await nats_flush()  # what the C++ clients still send (the last tick's status) is counted
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


# --- load processes ------------------------------------------------------------------
#
# A load process is this script with --load-worker CONFIG (JSON): a connector's NatsPubSub
# (C++ client: batches are copied into C++ once, no Python per heartbeat) publishing the
# heartbeats of its share of the peers. It prints "ready", then obeys stdin lines:
#   burst <round>   publish every peer's heartbeat `repeat` times as fast as it can,
#                   flush, print {"cpu_s", "wall_s", "published"}
#   steady          heartbeat every peer once per second (in slices every 20 ms; peers
#                   join linearly over `ramp_s`) for `seconds`, count the island_changed
#                   of its own peers until "stop", print the counts
#   quit


def _env_of(pid: int) -> dict[str, str]:
    """A running process's environment (/proc; empty if unreadable)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            items = f.read().decode(errors="replace").split("\0")
    except OSError:
        return {}
    return dict(x.split("=", 1) for x in items if "=" in x)


def _peak_rss_mib(pid: int) -> float | None:
    """Peak RSS (VmHWM) of a running process in MiB (None if unreadable)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def _cpu_of(pid: int) -> float:
    """CPU seconds (user + system) of a process so far (/proc; 0 if unreadable)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return 0.0


async def load_worker(cfg: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    bus = await NatsPubSub.connect(
        [cfg["url"]], subjects=cfg["subjects"], name="load", c_client=cfg.get("c_client", True)
    )
    first, count, batch_size = cfg["first"], cfg["count"], cfg["batch"]
    rng = np.random.default_rng(cfg["seed"] + first)
    side = cfg.get("side", 3000.0)
    pos = rng.uniform(0, side, size=(count, 3)).astype(np.float32)
    pos[:, 1] = 0
    mine: set[str] = set()
    got = {"changed": 0}
    with_island: set[str] = set()

    def on_changed(subject: str, _msg: IslandChanged) -> None:
        a = subject.split(".")[2]
        if a in mine:
            got["changed"] += 1
            with_island.add(a)

    if cfg.get("listen"):
        bus.subscribe("engine.peer.*.island_changed", on_changed)
    await bus.ready()
    print("ready", flush=True)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = (await reader.readline()).decode().split()
        if not line or line[0] == "quit":
            break
        if line[0] == "burst":
            r = int(line[1])
            addrs = [f"0x{r:08x}{first + i:032x}" for i in range(count)]
            rooms = [UNSET] * count
            c0, t0 = time.process_time(), time.perf_counter()
            for _ in range(cfg.get("repeat", 1)):
                for i in range(0, count, batch_size):
                    bus.publish_heartbeats(
                        HeartbeatBatch(
                            addrs[i : i + batch_size],
                            pos[i : i + batch_size],
                            rooms[i : i + batch_size],
                        )
                    )
            await bus.flush(timeout=60)
            res = {
                "cpu_s": time.process_time() - c0,
                "wall_s": time.perf_counter() - t0,
                "published": bus.published,
            }
            print(json.dumps(res), flush=True)
        elif line[0] == "steady":
            addrs = [f"0x{0xFFFF:08x}{first + i:032x}" for i in range(count)]
            mine.update(addrs)
            rooms = [UNSET] * count
            seconds, ramp = cfg["seconds"], max(cfg.get("ramp_s", 0.0), 1e-9)
            slices = 50  # every 20 ms: each peer once a second
            c0, t0 = time.process_time(), time.monotonic()
            sent = 0
            k = 0
            while time.monotonic() - t0 < seconds:
                active = min(count, int(count * (time.monotonic() - t0) / ramp) + 1)
                lo, hi = (k % slices) * active // slices, (k % slices + 1) * active // slices
                if hi > lo:
                    bus.publish_heartbeats(HeartbeatBatch(addrs[lo:hi], pos[lo:hi], rooms[lo:hi]))
                    sent += hi - lo
                k += 1
                await asyncio.sleep(max(0.0, t0 + k * (1 / slices) - time.monotonic()))
            await bus.flush(timeout=30)
            cpu_publish = time.process_time() - c0
            await reader.readline()  # "stop": the core stopped, its last tick is out
            await asyncio.sleep(cfg.get("linger_s", 3.0))
            res = {
                "heartbeats_sent": sent,
                "cpu_s": time.process_time() - c0,
                "cpu_publish_s": cpu_publish,
                "island_changed_received": got["changed"],
                "peers_with_island": len(with_island),
                "peers": count,
                "dropped": int(
                    sum(bus.m_dropped.get(reason=x) for x in ("outbox_full", "nats_buffer"))
                ),
            }
            print(json.dumps(res), flush=True)
    await bus.aclose()


class LoadProcs:
    """K load processes sharing `peers` between them (see load_worker)."""

    def __init__(self, k: int, peers: int, cfg: dict[str, Any]) -> None:
        self.procs: list[subprocess.Popen[str]] = []
        share = [peers // k + (1 if i < peers % k else 0) for i in range(k)]
        first = 0
        for n in share:
            c = {**cfg, "first": first, "count": n}
            first += n
            self.procs.append(
                subprocess.Popen(
                    [sys.executable, __file__, "--load-worker", json.dumps(c)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
        for p in self.procs:
            assert p.stdout is not None
            if p.stdout.readline().strip() != "ready":
                raise RuntimeError("load process did not start")

    def send(self, line: str) -> None:
        for p in self.procs:
            assert p.stdin is not None
            p.stdin.write(line + "\n")
            p.stdin.flush()

    async def results(self) -> list[dict[str, Any]]:
        out = []
        for p in self.procs:
            assert p.stdout is not None
            out.append(json.loads(await asyncio.to_thread(p.stdout.readline)))
        return out

    def cpu_s(self) -> float:
        return sum(_cpu_of(p.pid) for p in self.procs)

    def close(self) -> None:
        for p in self.procs:
            with contextlib.suppress(Exception):
                self_send(p, "quit")
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


def self_send(p: subprocess.Popen[str], line: str) -> None:
    assert p.stdin is not None
    p.stdin.write(line + "\n")
    p.stdin.flush()


async def ingest_runs(args: argparse.Namespace, url: str, nats_pid: int) -> dict[str, Any]:
    """Core ingest from --load-procs separate processes: each publishes its share of
    --peers heartbeats --ingest-repeat times as fast as it can; rate = heartbeats /
    (go -> the engine applied the last one). Medians of --repeats; CPU of the load
    processes, of this (core) process and of nats-server over the same interval."""
    out: dict[str, Any] = {}
    for scheme in args.subjects.split(","):
        c_client = args.client == "c"
        bus = await NatsPubSub.connect([url], subjects=scheme, c_client=c_client)
        procs = LoadProcs(
            args.load_procs,
            args.peers,
            {
                "url": url,
                "c_client": c_client,
                "subjects": scheme,
                "batch": args.batch,
                "seed": args.seed,
                "repeat": args.ingest_repeat,
            },
        )
        runs = []
        matches0 = subsz(nats_pid)["num_matches"]
        try:
            total = args.peers * args.ingest_repeat
            for r in range(args.repeats):
                core = make_core(bus)
                await bus.ready()
                base = core.metrics.heartbeats.get()
                cpu_self, cpu_load, cpu_nats = time.process_time(), procs.cpu_s(), _cpu_of(nats_pid)
                t0 = time.perf_counter()
                procs.send(f"burst {r}")
                while True:
                    core.sync_feed()
                    if core.metrics.heartbeats.get() - base >= total:
                        break
                    await asyncio.sleep(0.0005)
                wall = time.perf_counter() - t0
                nats_cpu = _cpu_of(nats_pid) - cpu_nats
                res = await procs.results()
                run = {
                    "rate": total / wall,
                    "wall_s": wall,
                    "core_cpu_s": time.process_time() - cpu_self,
                    "load_cpu_s": procs.cpu_s() - cpu_load,
                    "load_busy_s": max(x["wall_s"] for x in res),
                    "nats_server_cpu_s": nats_cpu,
                }
                all_cpu = run["core_cpu_s"] + run["load_cpu_s"] + nats_cpu
                run["cpu_us_per_heartbeat"] = all_cpu / total * 1e6
                run["cores_busy"] = all_cpu / wall
                runs.append(run)
                core.close()
        finally:
            procs.close()
            bus._sync_c()
            dropped = int(
                sum(
                    bus.m_dropped.get(reason=x)
                    for x in ("outbox_full", "nats_buffer", "decode", "slow_consumer", "inbox_full")
                )
            )
            await bus.aclose()
        sz = subsz(nats_pid)
        med = {k: statistics.median(x[k] for x in runs) for k in runs[0]}
        out[scheme] = {
            "heartbeats": args.peers * args.ingest_repeat,
            "load_procs": args.load_procs,
            "heartbeats_per_s": round(med["rate"]),
            "runs_per_s": [round(x["rate"]) for x in runs],
            "wall_ms": round(med["wall_s"] * 1000, 1),
            "core_process_cpu_ms": round(med["core_cpu_s"] * 1000, 1),
            "load_processes_cpu_ms": round(med["load_cpu_s"] * 1000, 1),
            "load_publish_wall_ms": round(med["load_busy_s"] * 1000, 1),
            "nats_server_cpu_ms": round(med["nats_server_cpu_s"] * 1000, 1),
            # what bounds the rate: all three sides' CPU per heartbeat, and how many of
            # the machine's cores they kept busy (rate ~ cores_busy / CPU per heartbeat)
            "cpu_us_per_heartbeat": round(med["cpu_us_per_heartbeat"], 2),
            "cores_busy": round(med["cores_busy"], 2),
            "runs_cores_busy": [round(x["cores_busy"], 2) for x in runs],
            # full subject matches per heartbeat (1.0: every message missed the server's
            # per-connection cache) and the account cache's hit rate (cumulative)
            "nats_server_matches_per_heartbeat": round(
                (sz["num_matches"] - matches0) / (total * len(runs)), 3
            ),
            "nats_server_cache_hit_rate": sz["cache_hit_rate"],
            "nats_server_cache_entries": sz["num_cache"],
            "dropped": dropped,
        }
    return out


async def scale_run(args: argparse.Namespace, url: str, nats_pid: int) -> dict[str, Any]:
    """--peers peers heartbeating at 1 Hz from --load-procs processes (joining over
    --ramp-s), a core ticking every --flush-s for --seconds; every island_changed the
    core published must reach the load process of its peer."""
    scheme = args.subjects.split(",")[0]
    c_client = args.client == "c"
    bus = await NatsPubSub.connect([url], subjects=scheme, c_client=c_client)
    core = make_core(bus)
    core.flush_interval_s = args.flush_s
    ticks: list[tuple[float, float, int]] = []  # (start, duration, island_changed)
    tick = core.tick

    def recorded() -> Any:
        t = time.monotonic()
        rep = tick()
        ticks.append((t, rep.duration_s, rep.island_changed))
        return rep

    core.tick = recorded  # type: ignore[method-assign]
    # --islands-listener: a stats-like reader of engine.islands on its own connection
    # (parts joined by NatsPubSub): every snapshot it got must be whole
    listener: NatsPubSub | None = None
    statuses: list[IslandStatus] = []
    if args.islands_listener:
        listener = await NatsPubSub.connect([url], subjects=scheme, c_client=False)
        listener.subscribe("engine.islands", lambda _s, m: statuses.append(m))
        await listener.ready()
    procs = LoadProcs(
        args.load_procs,
        args.peers,
        {
            "url": url,
            "c_client": c_client,
            "subjects": scheme,
            "batch": args.batch,
            "seed": args.seed,
            "seconds": args.seconds,
            "ramp_s": args.ramp_s,
            "listen": True,
            "linger_s": 3.0,
            "side": args.side,
        },
    )
    try:
        await bus.ready()
        stop = asyncio.Event()
        cpu_self, cpu_load, cpu_nats = time.process_time(), procs.cpu_s(), _cpu_of(nats_pid)
        procs.send("steady")
        runner = asyncio.create_task(core.run(stop))
        await asyncio.sleep(args.seconds + 0.5)
        stop.set()
        await runner
        core_cpu = time.process_time() - cpu_self
        procs.send("stop")
        res = await procs.results()
        load_cpu, nats_cpu = procs.cpu_s() - cpu_load, _cpu_of(nats_pid) - cpu_nats
        core.sync_feed(settle=True)
        if listener is not None:
            await bus.flush()
            await asyncio.sleep(1.0)  # the last tick's status
    finally:
        procs.close()
    bus._sync_c()
    durations = [d for _, d, _ in ticks]
    starts = [t for t, _, _ in ticks]
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    published = sum(n for _, _, n in ticks)
    received = sum(x["island_changed_received"] for x in res)
    out = {
        "subjects": scheme,
        "peers": args.peers,
        "load_procs": args.load_procs,
        "seconds": args.seconds,
        "ramp_s": args.ramp_s,
        "flush_s": args.flush_s,
        "ticks": len(ticks),
        "tick_ms_p50": round(statistics.median(durations) * 1000, 1),
        "tick_ms_max": round(max(durations) * 1000, 1),
        "tick_gap_s_max": round(max(gaps), 3) if gaps else None,
        "ticks_over_flush": sum(1 for d in durations if d > args.flush_s),
        "heartbeats_sent": sum(x["heartbeats_sent"] for x in res),
        "heartbeats_ingested": int(core.metrics.heartbeats.get()),
        "engine_peers": int(core.engine.peer_count),
        "island_changed_published": published,
        "island_changed_received": received,
        "peers_with_island": sum(x["peers_with_island"] for x in res),
        "core_process_cpu_s": round(core_cpu, 2),
        "load_processes_cpu_s": round(load_cpu, 2),
        "nats_server_cpu_s": round(nats_cpu, 2),
        "dropped": {
            "core_bus": int(
                sum(
                    bus.m_dropped.get(reason=x)
                    for x in ("outbox_full", "nats_buffer", "decode", "slow_consumer", "inbox_full")
                )
            ),
            # beyond the server's max_payload and not splittable (engine.islands goes
            # in parts from ~25,000 peers at 1 MiB)
            "core_bus_max_payload": int(bus.m_dropped.get(reason="max_payload")),
            "load": sum(x["dropped"] for x in res),
        },
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    if listener is not None:
        last = statuses[-1] if statuses else IslandStatus(())
        engine_islands = {i.id: set(i.peers) for i in core.engine.islands()}
        out["islands_listener"] = {
            "nats_messages": listener.received,  # parts included
            "snapshots_whole": len(statuses),
            "snapshots_incomplete": int(listener.m_dropped.get(reason="islands_incomplete")),
            "last_islands": len(last.islands),
            "last_peers": sum(len(i.peers) for i in last.islands),
            "last_equals_engine": {i.id: set(i.peers) for i in last.islands} == engine_islands,
        }
        await listener.aclose()
    core.close()
    await bus.aclose()
    return out


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--load-worker":
        asyncio.run(load_worker(json.loads(sys.argv[2])))
        return
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
    ap.add_argument(
        "--tick",
        choices=("c", "python"),
        default="c",
        help="c: the core's tick in C++ where the bus allows it (native scheme, C++ client; "
        "the default); python: the Python tick everywhere (the path before it)",
    )
    ap.add_argument(
        "--transport",
        choices=("fixed", "ws-room"),
        default="fixed",
        help="the islands' transport: fixed (one string, the default) or ws-room (a signed "
        "token per peer)",
    )
    autogroup_arg.add_argument(ap)
    ap.add_argument(
        "--nats-conf",
        default=None,
        help="a nats-server configuration file for the private server (e.g. one with "
        "no_sublist_cache: true; docs/operations.md)",
    )
    ap.add_argument(
        "--nats-gogc",
        default=None,
        help="the private nats-server's GOGC (Go's garbage-collector target, e.g. 400; "
        "default: unset, Go's 100)",
    )
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="200 peers, 2 repeats")
    ap.add_argument(
        "--ingest",
        action="store_true",
        help="only the core's ingest from --load-procs separate load processes",
    )
    ap.add_argument(
        "--scale",
        action="store_true",
        help="the steady run: --peers at 1 Hz from --load-procs processes, a ticking core",
    )
    ap.add_argument("--load-procs", type=int, default=2)
    ap.add_argument(
        "--ingest-repeat", type=int, default=10, help="--ingest: heartbeats per peer per run"
    )
    ap.add_argument("--seconds", type=float, default=20.0, help="--scale: heartbeating time")
    ap.add_argument("--ramp-s", type=float, default=10.0, help="--scale: peers join over this")
    ap.add_argument("--flush-s", type=float, default=2.0, help="--scale: the core's flush")
    ap.add_argument(
        "--side", type=float, default=3000.0, help="--scale, --deliver: world square (m)"
    )
    ap.add_argument(
        "--deliver",
        action="store_true",
        help="tick start -> every island_changed delivered to --peers real WebSocket sessions",
    )
    ap.add_argument(
        "--relay",
        default="c",
        help="--deliver: c (the connector relay in C++), python (the connector glue in "
        "Python), or c,python (both, alternating rounds)",
    )
    ap.add_argument(
        "--io-threads",
        default="1",
        help="--deliver: the connector server's io_threads (its sessions spread over that "
        "many shards); comma-separated: one server each, alternating rounds (results "
        "under <scheme>_<relay>_io<n> for n > 1)",
    )
    ap.add_argument(
        "--islands-listener",
        action="store_true",
        help="--scale: also a stats-like engine.islands reader (in this process) checking "
        "that every snapshot it gets is whole",
    )
    args = ap.parse_args()
    TICK["mode"] = args.tick
    TICK["transport"] = args.transport
    NATS_CONF["path"] = args.nats_conf
    NATS_CONF["gogc"] = args.nats_gogc
    AUTOGROUP["group"] = autogroup_arg.apply(args.autogroup_nice, "bench_nats")
    if args.quick:
        args.peers, args.repeats = 200, 2
    if args.ingest or args.scale:
        print(json.dumps(asyncio.run(load_run(args))))
        return
    if args.deliver:
        print(json.dumps(asyncio.run(deliver_runs(args))))
        return
    print(json.dumps(asyncio.run(run(args))))


# --- --deliver: real WebSocket sessions ------------------------------------------------


def _pump(server: ws.Server, connector: Connector) -> None:
    """The realm's event pump (dclcomms.realm.app), connector events only."""
    while events := server.poll():
        for ev in events:
            if isinstance(ev, ws.Heartbeats):
                connector.on_heartbeats(ev)
            elif isinstance(ev, ws.PeerConnected):
                connector.on_connected(ev.address)
            elif isinstance(ev, ws.PeerDisconnected):
                connector.on_disconnected(ev.address)


async def deliver_round(
    args: argparse.Namespace,
    load: Path,
    server: ws.Server,
    connector: Connector,
    conn_bus: NatsPubSub,
    core_bus: NatsPubSub,
    round_: int,
    nats_pid: int,
) -> dict[str, Any]:
    n = args.peers
    core = make_core(core_bus)
    await core_bus.ready()
    p = subprocess.Popen(
        [
            str(load),
            "--mode",
            "islands",
            "--port",
            str(server.port),
            "--clients",
            str(n),
            "--seed",
            str(args.seed * 1000 + round_),
            "--side",
            str(args.side),
            "--duration",
            "60",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert p.stdout is not None
        ready = json.loads(await asyncio.to_thread(p.stdout.readline))
        assert ready.get("event") == "ready", ready
        deadline = time.monotonic() + 60
        while True:  # every heartbeat through the connector and NATS into the engine
            core.sync_feed()
            if core.metrics.heartbeats.get() >= n:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{core.metrics.heartbeats.get()} of {n} heartbeats")
            await asyncio.sleep(0.0005)
        relay = conn_bus.c_client.stats() if conn_bus.c_client is not None else {}
        split0 = server.stats()["server"]["flushes_split"]
        cpu0, nats_cpu0 = time.process_time(), _cpu_of(nats_pid)
        t0 = time.monotonic_ns()
        report = core.tick()
        t1 = time.monotonic_ns()
        res = json.loads(await asyncio.to_thread(p.stdout.readline))
        cpu, nats_cpu = time.process_time() - cpu0, _cpu_of(nats_pid) - nats_cpu0
        relay_after = conn_bus.c_client.stats() if conn_bus.c_client is not None else {}
        drained = server.relay_stats()["last_drain_ns"]
        split = server.stats()["server"]["flushes_split"] - split0
    finally:
        p.wait(30)
    core.close()
    while connector.sessions:  # the clients' closes reached the connector
        await asyncio.sleep(0.01)

    def ms(ns: int) -> float | None:
        return round((ns - t0) / 1e6, 2) if ns > t0 else None

    cpp = relay_after.get("relayed", 0) > relay.get("relayed", 0)
    return {
        "island_changed_published": report.island_changed,
        "island_changed_received": res["island_changed"],
        "sessions_with_island": res["with_island"],
        "join_island": res["join_island"],
        "left_island": res["left_island"],
        "timed_out": res["timed_out"],
        # flushes written by two threads (the server's big-flush split)
        "flushes_split": split,
        "received_mib": res["bytes"] / 2**20,
        # CPU from the tick start to the load client's report: this process (core,
        # connector, server threads), the load client (from its ready line), nats-server
        "process_cpu_ms": round(cpu * 1000, 1),
        "client_cpu_ms": round(res["client_cpu_s"] * 1000, 1),
        "nats_server_cpu_ms": round(nats_cpu * 1000, 1),
        "tick_start_ns": t0,  # CLOCK_MONOTONIC (e.g. perf record -k CLOCK_MONOTONIC --time)
        "tick_ms": ms(t1),
        "relay_first_receive_ms": ms(relay_after["relay_tick_first_ns"]) if cpp else None,
        "relay_last_receive_ms": ms(relay_after["relay_last_ns"]) if cpp else None,
        "server_handed_ms": ms(drained) if cpp else None,
        "first_delivered_ms": ms(res["first_changed_ns"]),
        "delivered_ms": ms(res["last_changed_ns"]),
    }


async def deliver_runs(args: argparse.Namespace) -> dict[str, Any]:
    from bench_ws import build_load  # bench/ is on sys.path (this script's folder)

    load = build_load(ROOT / "build" / "bench")
    proc, url = start_nats()
    loop = asyncio.get_running_loop()
    out: dict[str, Any] = {
        "bench": "nats",
        "mode": "deliver",
        "peers": args.peers,
        "repeats": args.repeats,
        "tick": args.tick,
        "transport": args.transport,
        "autogroup": AUTOGROUP["group"],
        "load_average_before": os.getloadavg(),
    }
    variants = [
        (relay, int(n), relay if int(n) == 1 else f"{relay}_io{n}")
        for relay in args.relay.split(",")
        for n in args.io_threads.split(",")
    ]
    out["io_threads"] = args.io_threads
    try:
        for scheme in args.subjects.split(","):
            buses, setups = [], {}
            for relay, io_threads, name in variants:
                conn_bus = await NatsPubSub.connect([url], subjects=scheme, name="connector")
                if relay == "python":  # the connector glue's Python path (before the C++ relay)
                    conn_bus.relay_islands = lambda _server: None  # type: ignore[method-assign]
                # every client is on 127.0.0.1 and they all connect at once
                cfg = ws.ServerConfig(
                    port=0,
                    rooms=False,
                    io_threads=io_threads,
                    max_unauthenticated_per_ip=args.peers + 64,
                )
                server = ws.Server(cfg)
                server.start()
                connector = Connector(server, conn_bus, Registry())
                assert connector.relayed_in_cpp == (relay == "c")
                loop.add_reader(server.fileno(), _pump, server, connector)
                buses.append(conn_bus)
                setups[name] = (server, connector, conn_bus)
            core_bus = await NatsPubSub.connect([url], subjects=scheme, name="core")
            buses.append(core_bus)
            for b in buses:
                await b.ready()
            names = [name for _, _, name in variants]
            rounds: dict[str, list[dict[str, Any]]] = {r: [] for r in names}
            try:
                for i in range(args.repeats):
                    for name in names:  # alternating: all see the same load
                        server, connector, conn_bus = setups[name]
                        rounds[name].append(
                            await deliver_round(
                                args,
                                load,
                                server,
                                connector,
                                conn_bus,
                                core_bus,
                                i * len(names) + names.index(name),
                                proc.pid,
                            )
                        )
            finally:
                for server, connector, _ in setups.values():
                    loop.remove_reader(server.fileno())
                    connector.close()
                    server.stop()
                for b in buses:
                    await b.aclose()
            for relay, rs in rounds.items():
                keys = [k for k in rs[0] if isinstance(rs[0][k], (int, float)) and k != "timed_out"]
                out[f"{scheme}_{relay}"] = {
                    "medians": {
                        k: round(statistics.median(r[k] for r in rs if r[k] is not None), 2)
                        for k in keys
                        if all(r[k] is not None for r in rs)
                    },
                    "rounds": rs,
                }
    finally:
        proc.terminate()
        proc.wait(5)
    out["load_average"] = os.getloadavg()
    out["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return out


async def load_run(args: argparse.Namespace) -> dict[str, Any]:
    proc, url = start_nats()
    out: dict[str, Any] = {
        "bench": "nats",
        "mode": "scale" if args.scale else "ingest",
        "client": args.client,
        "tick": args.tick,
        "transport": args.transport,
        "autogroup": AUTOGROUP["group"],
        "nats_conf": Path(args.nats_conf).read_text() if args.nats_conf else None,
        "nats_gogc": args.nats_gogc,
    }
    try:
        if args.scale:
            out["scale"] = await scale_run(args, url, proc.pid)
        else:
            out["repeats"] = args.repeats
            out["batch"] = args.batch
            out["ingest"] = await ingest_runs(args, url, proc.pid)
        out["nats_server_peak_rss_mib"] = _peak_rss_mib(proc.pid)
        out["nats_server_gogc"] = _env_of(proc.pid).get("GOGC")
    finally:
        proc.terminate()
        proc.wait(5)
    out["load_average"] = os.getloadavg()
    return out


if __name__ == "__main__":
    main()
