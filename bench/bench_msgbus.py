"""/bus message bus benchmark: fan-out throughput and latency, one process vs over NATS. JSON.

    python bench/bench_msgbus.py            # 4 publishers -> 20 subscribers, 3 repeats
    python bench/bench_msgbus.py --quick    # small smoke run

Two deployments, each started as real ``dclcomms`` processes on free loopback ports:

* ``in_process``: one ``dclcomms realm``; publishers and subscribers on it;
* ``nats``: a private ``nats-server`` and two ``dclcomms connector --nats`` processes;
  publishers on the first, subscribers on the second (every message crosses NATS).

Every session authenticates with a real identity. Subscribers take the allow-listed
realm-wide topic ``bench``; each publisher sends ``--messages`` frames carrying its
send time: "saturated" rounds as fast as the socket takes them (the per-session frame
limit is raised for the run), "paced" rounds at ``--rate`` messages/s per publisher.
A round ends when every subscriber has every message. Figures: delivered
messages/s (subscribers x messages / round time), end-to-end latency p50/p99 (publisher
send -> subscriber receive, one clock), and the peak RSS of the realm processes. The
load generator is this Python process (aiohttp), so the figures are a lower bound.
Medians over ``--repeats`` rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import struct
import subprocess
import sys
import time
from typing import Any

import aiohttp

from bench_nats import start_nats  # this folder is on sys.path when run as a script
from dclcomms import codec
from dclcomms.auth import Identity

V3 = "decentraland.kernel.comms.v3."


def spawn(role: str, *extra: str) -> tuple[subprocess.Popen[str], str]:
    """A dclcomms process; returns it and its URL (from its first line)."""
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dclcomms",
            role,
            *["--host", "127.0.0.1", "--port", "0", "--log-level", "WARNING"],
            *["--bus-global-topics", "bench", "--bus-max-frames-per-s", "1000000"],
            *["--bus-queue", "100000", *extra],
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert p.stdout is not None
    line = p.stdout.readline()
    if "listening on" not in line:
        p.kill()
        raise RuntimeError(f"{role} did not start: {line!r}")
    return p, line.split()[-1].replace("http://", "ws://")


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_s(pids: list[int]) -> float:
    """User + system CPU seconds of the processes so far."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


class Session:
    """One authenticated /bus session (the connector handshake with a real identity)."""

    def __init__(self, http: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.http = http
        self.ws = ws

    async def close(self) -> None:
        await self.ws.close()
        await self.http.close()


async def session(url: str, seed: int) -> Session:
    me = Identity.generate(seed=seed)
    http = aiohttp.ClientSession()
    ws = await http.ws_connect(url + "/bus")

    async def server_packet() -> dict[str, Any]:
        msg = await ws.receive(timeout=10)
        out: dict[str, Any] = codec.decode(V3 + "ServerPacket", msg.data)
        return out

    await ws.send_bytes(
        codec.encode(V3 + "ClientPacket", {"challengeRequest": {"address": me.address}})
    )
    challenge = (await server_packet())["challengeResponse"]["challengeToSign"]
    chain = me.sign_challenge(challenge)
    await ws.send_bytes(
        codec.encode(V3 + "ClientPacket", {"signedChallenge": {"authChainJson": chain}})
    )
    assert "welcome" in await server_packet()
    return Session(http, ws)


async def subscribe(s: Session, topic: str) -> None:
    await s.ws.send_str(json.dumps({"type": "subscribe", "topic": topic}))
    reply = json.loads((await s.ws.receive(timeout=10)).data)
    assert reply["type"] == "subscribed", reply


async def one_round(
    pub_url: str, sub_url: str, args: argparse.Namespace, r: int, rate: float
) -> dict[str, float]:
    base = 10_000 * (r + 1)
    pubs = [await session(pub_url, base + i) for i in range(args.publishers)]
    subs = [await session(sub_url, base + 1000 + i) for i in range(args.subscribers)]
    for s in subs:
        await subscribe(s, "bench")
    await asyncio.sleep(0.3)  # subscription interest reaches every connector
    total = args.publishers * args.messages
    latencies: list[float] = []

    async def drain(s: Session) -> None:
        got = 0
        while got < total:
            msg = await s.ws.receive(timeout=60)
            frame = json.loads(msg.data)
            if frame.get("type") != "message":
                continue
            (sent,) = struct.unpack("<d", base64.b64decode(frame["payload"])[:8])
            latencies.append(time.perf_counter() - sent)
            got += 1

    async def publish(p: Session) -> None:
        pad = b"x" * (args.payload - 8)
        start = time.perf_counter()
        for i in range(args.messages):
            if rate > 0:  # paced: message i leaves at start + i / rate
                await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
            payload = base64.b64encode(struct.pack("<d", time.perf_counter()) + pad).decode()
            await p.ws.send_str(f'{{"type":"publish","topic":"bench","payload":"{payload}"}}')

    t0 = time.perf_counter()
    receivers = [asyncio.create_task(drain(s)) for s in subs]
    await asyncio.gather(*(publish(p) for p in pubs))
    await asyncio.gather(*receivers)
    elapsed = time.perf_counter() - t0
    for c in (*pubs, *subs):
        await c.close()
    latencies.sort()
    return {
        "delivered_per_s": len(latencies) / elapsed,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
    }


async def measure(
    pub_url: str, sub_url: str, args: argparse.Namespace, pids: list[int]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, rate in (("saturated", 0.0), ("paced", args.rate)):
        cpu0, wall0, me0 = cpu_s(pids), time.perf_counter(), time.process_time()
        rounds = [
            await one_round(pub_url, sub_url, args, r + (100 if rate else 0), rate)
            for r in range(args.repeats)
        ]
        med = {k: statistics.median(x[k] for x in rounds) for k in rounds[0]}
        wall = time.perf_counter() - wall0
        out[name] = {
            "delivered_per_s": round(med["delivered_per_s"]),
            "p50_ms": round(med["p50_ms"], 2),
            "p99_ms": round(med["p99_ms"], 2),
            # share of one core, over the rounds (connecting included)
            "servers_cpu_pct": round(100 * (cpu_s(pids) - cpu0) / wall, 1),
            "load_generator_cpu_pct": round(100 * (time.process_time() - me0) / wall, 1),
        }
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {
        "bench": "msgbus",
        "publishers": args.publishers,
        "subscribers": args.subscribers,
        "messages_per_publisher": args.messages,
        "payload_bytes": args.payload,
        "repeats": args.repeats,
    }
    procs: list[subprocess.Popen[Any]] = []
    try:
        realm, url = spawn("realm")
        procs.append(realm)
        out["in_process"] = asyncio.run(measure(url, url, args, [realm.pid]))
        out["in_process"]["peak_rss_mib"] = round(rss_mib(realm.pid), 1)
        nats, nats_url = start_nats()
        procs.append(nats)
        a, url_a = spawn("connector", "--nats", nats_url)
        b, url_b = spawn("connector", "--nats", nats_url)
        procs += [a, b]
        out["nats"] = asyncio.run(measure(url_a, url_b, args, [a.pid, b.pid, nats.pid]))
        out["nats"]["peak_rss_mib"] = [round(rss_mib(a.pid), 1), round(rss_mib(b.pid), 1)]
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    out["load_average"] = round(os.getloadavg()[0], 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--publishers", type=int, default=4)
    ap.add_argument("--subscribers", type=int, default=20)
    ap.add_argument("--messages", type=int, default=500, help="per publisher and round")
    ap.add_argument("--payload", type=int, default=64, help="payload bytes (>= 8)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--rate", type=float, default=100.0, help="messages/s per publisher in the paced rounds"
    )
    ap.add_argument("--quick", action="store_true", help="2 -> 3 sessions, 20 messages, 1 round")
    args = ap.parse_args()
    if args.quick:
        args.publishers, args.subscribers, args.messages, args.repeats = 2, 3, 20, 1
    args.payload = max(args.payload, 8)
    print(json.dumps(run(args)))


if __name__ == "__main__":
    main()
