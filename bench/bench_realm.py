"""Realm load benchmark: handshakes/s, heartbeat ingest, RSS per connection. Prints JSON.

    python bench/bench_realm.py          # 1,000 handshakes x 3; 5,000 clients at 1 Hz for 10 s
    python bench/bench_realm.py --quick  # small smoke run

The realm runs as a subprocess (``python -m dclcomms realm --port 0``) exactly as in
production: C++ connector + Python glue + bus + engine + stats. The load comes from
``--procs`` client processes (aiohttp, signing with ``dclcomms.auth.Identity`` in C++),
so the client is not the bottleneck; their CPU time is reported next to the server's.

* handshakes: all clients open a socket at the same instant and complete
  challenge -> signed auth chain -> welcome; rate = clients / (last welcome - start);
  median over ``--repeats`` (fresh identities each time).
* ingest: ``--ingest-clients`` sessions each send one heartbeat per second (random
  phase) for ``--ingest-seconds``; rate = accepted heartbeats counted by the realm
  (``dcl_connector_heartbeats_total`` delta) / window.
* RSS per connection: realm VmRSS with all ingest clients connected minus before, / clients.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import re
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

V3 = "decentraland.kernel.comms.v3."


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _hwm_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _metric(url: str, name: str) -> float:
    import urllib.request

    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    m = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


# --- client processes -------------------------------------------------------------------


async def _handshake(session: Any, ws_url: str, ident: Any, codec: Any) -> Any:
    ws = await session.ws_connect(ws_url, autoping=True)
    await ws.send_bytes(
        codec.encode(V3 + "ClientPacket", {"challengeRequest": {"address": ident.address}})
    )
    msg = await ws.receive(60)
    challenge = codec.decode(V3 + "ServerPacket", msg.data)["challengeResponse"]["challengeToSign"]
    chain = ident.sign_challenge(challenge)
    await ws.send_bytes(
        codec.encode(V3 + "ClientPacket", {"signedChallenge": {"authChainJson": chain}})
    )
    msg = await ws.receive(60)
    assert "welcome" in codec.decode(V3 + "ServerPacket", msg.data), msg
    return ws


def _worker(mode: str, url: str, seeds: list[int], go: Any, stop: Any, q: Any, secs: float) -> None:
    import aiohttp

    from dclcomms import codec
    from dclcomms.auth import Identity

    idents = [Identity.generate(s) for s in seeds]  # key generation outside the timing
    ws_url = url.replace("http://", "ws://") + "/archipelago/ws"

    async def main() -> None:
        conn = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=conn) as session:
            if mode == "handshake":
                q.put(("ready", 0))
                go.wait()
                r0 = resource.getrusage(resource.RUSAGE_SELF)
                t0 = time.time()
                socks = await asyncio.gather(
                    *(_handshake(session, ws_url, i, codec) for i in idents)
                )
                t1 = time.time()
                r1 = resource.getrusage(resource.RUSAGE_SELF)
                cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
                q.put(("done", (t0, t1, len(socks), cpu)))
                stop.wait()
                await asyncio.gather(*(s.close() for s in socks))
                return
            socks = []
            for k in range(0, len(idents), 200):  # connect in waves of 200
                socks += await asyncio.gather(
                    *(_handshake(session, ws_url, i, codec) for i in idents[k : k + 200])
                )
            q.put(("ready", len(socks)))
            await asyncio.get_running_loop().run_in_executor(None, go.wait)
            rng = random.Random(seeds[0])
            hb = [
                codec.encode(
                    V3 + "ClientPacket",
                    {
                        "heartbeat": {
                            "position": {
                                "x": rng.uniform(-2400, 2400),
                                "y": 0.0,
                                "z": rng.uniform(-2400, 2400),
                            }
                        }
                    },
                )
                for _ in socks
            ]
            r0 = resource.getrusage(resource.RUSAGE_SELF)
            start = time.monotonic()
            sent = 0

            async def beat(i: int) -> int:
                n = 0
                await asyncio.sleep(rng.random())  # random phase within the first second
                while time.monotonic() - start < secs:
                    await socks[i].send_bytes(hb[i])
                    n += 1
                    await asyncio.sleep(1.0)
                return n

            sent = sum(await asyncio.gather(*(beat(i) for i in range(len(socks)))))
            r1 = resource.getrusage(resource.RUSAGE_SELF)
            cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
            q.put(("done", (sent, cpu)))
            await asyncio.get_running_loop().run_in_executor(None, stop.wait)
            await asyncio.gather(*(s.close() for s in socks))

    asyncio.run(main())


def _run_clients(
    mode: str, url: str, seeds: list[int], procs: int, secs: float, between: Any = None
) -> tuple[list[Any], Any]:
    ctx = mp.get_context("spawn")
    go, stop, q = ctx.Event(), ctx.Event(), ctx.Queue()
    parts = [seeds[i::procs] for i in range(procs)]
    ps = [ctx.Process(target=_worker, args=(mode, url, p, go, stop, q, secs)) for p in parts]
    for p in ps:
        p.start()
    for _ in ps:
        kind, _v = q.get(timeout=600)
        assert kind == "ready"
    extra = between() if between is not None else None
    go.set()
    results = []
    for _ in ps:
        kind, v = q.get(timeout=600)
        assert kind == "done"
        results.append(v)
    stop.set()
    for p in ps:
        p.join(60)
    return results, extra


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--handshake-clients", type=int, default=1000)
    ap.add_argument("--ingest-clients", type=int, default=5000)
    ap.add_argument("--ingest-seconds", type=float, default=10.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--procs", type=int, default=3, help="client processes")
    ap.add_argument("--auth-threads", type=int, default=1, help="realm --auth-threads")
    ap.add_argument(
        "--quick", action="store_true", help="100 handshakes, 200 clients for 3 s, 1 repeat"
    )
    a = ap.parse_args(argv)
    if a.quick:
        a.handshake_clients, a.ingest_clients, a.ingest_seconds, a.repeats = 100, 200, 3.0, 1

    realm = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dclcomms",
            "realm",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--log-level",
            "WARNING",
            "--auth-threads",
            str(a.auth_threads),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert realm.stdout is not None
        url = realm.stdout.readline().split()[-1]
        pid = realm.pid
        rates, client_cpu, server_cpu = [], [], []
        for rep in range(a.repeats):
            seeds = [1_000_000 * (rep + 1) + i for i in range(a.handshake_clients)]
            c0 = _cpu_s(pid)
            res, _ = _run_clients("handshake", url, seeds, a.procs, 0)
            c1 = _cpu_s(pid)
            t0 = min(r[0] for r in res)
            t1 = max(r[1] for r in res)
            assert sum(r[2] for r in res) == a.handshake_clients
            rates.append(a.handshake_clients / (t1 - t0))
            client_cpu.append(sum(r[3] for r in res))
            server_cpu.append(c1 - c0)
            time.sleep(1.0)  # let the closes drain
        rss0 = _rss_kib(pid)
        seeds = [50_000_000 + i for i in range(a.ingest_clients)]
        window: dict[str, float] = {}

        def before_go() -> None:
            window["rss1"] = _rss_kib(pid)
            window["hb0"] = _metric(url, "dcl_connector_heartbeats_total")
            window["eng0"] = _metric(url, "dcl_archipelago_heartbeats_total")
            window["cpu0"] = _cpu_s(pid)
            window["t0"] = time.monotonic()

        res, _ = _run_clients("ingest", url, seeds, a.procs, a.ingest_seconds, before_go)
        time.sleep(0.5)
        t1 = time.monotonic()
        hb1 = _metric(url, "dcl_connector_heartbeats_total")
        eng1 = _metric(url, "dcl_archipelago_heartbeats_total")
        cpu1 = _cpu_s(pid)
        sent = sum(r[0] for r in res)
        elapsed = t1 - window["t0"]
        out = {
            "bench": "realm",
            "procs": a.procs,
            "auth_threads": a.auth_threads,
            "handshakes": {
                "clients": a.handshake_clients,
                "repeats": a.repeats,
                "per_s_median": round(statistics.median(rates), 1),
                "per_s_all": [round(r, 1) for r in rates],
                "server_cpu_s_median": round(statistics.median(server_cpu), 3),
                "client_cpu_s_median": round(statistics.median(client_cpu), 3),
            },
            "ingest": {
                "clients": a.ingest_clients,
                "seconds": a.ingest_seconds,
                "sent": sent,
                "accepted": int(hb1 - window["hb0"]),
                "engine_ingested": int(eng1 - window["eng0"]),
                "msgs_per_s": round((hb1 - window["hb0"]) / a.ingest_seconds, 1),
                "server_cpu_us_per_msg": round(
                    1e6 * (cpu1 - window["cpu0"]) / max(1.0, hb1 - window["hb0"]), 1
                ),
                "server_cpu_pct": round(100 * (cpu1 - window["cpu0"]) / elapsed, 1),
                "client_cpu_pct": round(100 * sum(r[1] for r in res) / a.ingest_seconds, 1),
            },
            "rss": {
                "idle_mib": round(rss0 / 1024, 1),
                "connected_mib": round(window["rss1"] / 1024, 1),
                "kib_per_connection": round((window["rss1"] - rss0) / a.ingest_clients, 2),
                "peak_mib": round(_hwm_kib(pid) / 1024, 1),
            },
        }
        print(json.dumps(out, indent=2))
    finally:
        realm.terminate()
        realm.wait(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
