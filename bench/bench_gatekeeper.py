"""Gatekeeper benchmark: ``POST /get-scene-adapter`` throughput and latency. Prints JSON.

    python bench/bench_gatekeeper.py           # 10,000 requests x 3 repeats, SQLite and PostgreSQL
    python bench/bench_gatekeeper.py --quick   # small smoke run

Each request is the full ADR-204 path of an explorer entering a scene: signed-fetch
verification (auth chain in the C++ core, timestamp window, replay cache), the
platform-ban, deny-list and scene-ban checks and a LiveKit token minted for the scene
room.

The gatekeeper runs as its own process exactly as in production (``python -m dclcomms
gatekeeper --host 127.0.0.1 --port P`` with LiveKit credentials, so it mints tokens;
no LiveKit server is needed for that) on SQLite (a fresh data directory) or on the
machine's PostgreSQL (127.0.0.1:5432, a fresh database created for the run and
dropped after). ``--bans`` platform bans of *other* addresses are stored first (through
the moderator route) so the ban checks run against non-empty tables.

The load comes from ``--procs`` separate client processes (HTTP/1.1 on asyncio
streams, requests serialised in advance, ``--concurrency`` requests in flight in
total). The HTTP front answers every request with ``Connection: close`` (websocketpp
serves one request per connection), so each request also opens a TCP connection, as an
explorer's one call per scene change does. Every request is signed before the clock
starts, by one of ``--identities`` wallets with strictly increasing timestamps per
wallet, so no two requests share a final signature (the replay cache would refuse the
second one: 401 ``replayed``) and all stay inside the 60 s window. Throughput =
answered requests / (last answer - first send); p50/p99 over every request's latency;
median over ``--repeats``. The gatekeeper's CPU time per request and peak RSS (VmHWM)
are reported beside, and the load processes' CPU time: the machine has 2 cores shared
by server and load.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from typing import Any

PATH = "/get-scene-adapter"
API_KEY = "bench-key"
API_SECRET = "bench-secret-0123456789abcdef0123456789abcdef"
AUTH_TOKEN = "bench-moderator-token"
PG_ADMIN = os.environ.get("DCLCOMMS_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def _proc_status(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    k = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[k]


# --- load processes -----------------------------------------------------------------


def _sign(seeds: list[int], count: int, scenes: int) -> list[dict[str, str]]:
    """``count`` pre-signed requests spread over the identities of ``seeds``."""
    from dclcomms.auth import Identity
    from dclcomms.client import SignedFetcher

    fetchers = [SignedFetcher(Identity.generate(s)) for s in seeds]
    out = []
    for i in range(count):
        f = fetchers[i % len(fetchers)]
        scene = i % scenes
        meta = {
            "realmName": "main",
            "sceneId": f"scene-{scene % 4}-{scene // 4}",
            "parcel": f"{scene % 4},{scene // 4}",
        }
        out.append(f.headers("POST", PATH, metadata=meta))
    return out


def _request_bytes(host: str, headers: dict[str, str]) -> bytes:
    lines = [f"POST {PATH} HTTP/1.1", f"Host: {host}", "Content-Length: 0"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _worker(url: str, seeds: list[int], count: int, inflight: int, go: Any, q: Any) -> None:
    """One load process: ``inflight`` keep-alive HTTP/1.1 connections, each sending its
    next pre-serialised request when the previous answer is read (asyncio streams: a
    few tens of us per request, so the load generator stays light)."""
    import asyncio
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80

    async def main() -> None:
        # Sign and serialise outside the timing (fresh timestamps: the window is 60 s).
        requests = [_request_bytes(f"{host}:{port}", h) for h in _sign(seeds, count, 16)]
        latencies: list[float] = []
        statuses: Counter[int] = Counter()
        conns = [await asyncio.open_connection(host, port) for _ in range(inflight)]
        q.put(("ready", 0))
        await asyncio.get_running_loop().run_in_executor(None, go.wait)
        it = iter(requests)
        first = time.time()
        r0 = resource.getrusage(resource.RUSAGE_SELF)

        async def loop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            for raw in it:
                t = time.perf_counter()
                try:
                    writer.write(raw)
                    head = await reader.readuntil(b"\r\n\r\n")
                    status = int(head[9:12])
                    m = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
                    if m:
                        await reader.readexactly(int(m.group(1)))
                    statuses[status] += 1
                    if re.search(rb"(?i)\r\nconnection: *close", head):
                        writer.close()
                        reader, writer = await asyncio.open_connection(host, port)
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    statuses[0] += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, port)
                latencies.append(time.perf_counter() - t)
            writer.close()

        await asyncio.gather(*(loop(r, w) for r, w in conns))
        last = time.time()
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
        q.put(("done", (first, last, latencies, dict(statuses), cpu)))

    asyncio.run(main())


def _run_load(
    url: str, requests: int, concurrency: int, procs: int, seed: int, identities: int
) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    go, q = ctx.Event(), ctx.Queue()
    seeds = [seed * 1_000_003 + i for i in range(identities)]
    ps = []
    for k in range(procs):
        n = requests // procs + (1 if k < requests % procs else 0)
        inflight = max(1, concurrency // procs)
        p = ctx.Process(target=_worker, args=(url, seeds[k::procs], n, inflight, go, q))
        p.start()
        ps.append(p)
    for _ in ps:
        kind, _v = q.get(timeout=600)
        assert kind == "ready"
    go.set()
    results = []
    for _ in ps:
        kind, v = q.get(timeout=600)
        assert kind == "done"
        results.append(v)
    for p in ps:
        p.join(60)
    first = min(r[0] for r in results)
    last = max(r[1] for r in results)
    lat = sorted(x for r in results for x in r[2])
    statuses: Counter[str] = Counter()
    for r in results:
        statuses.update({str(k): v for k, v in r[3].items()})
    ok = statuses.get("200", 0)
    return {
        "requests": len(lat),
        "ok": ok,
        "statuses": dict(sorted(statuses.items())),
        "seconds": round(last - first, 3),
        "req_per_s": round(ok / max(last - first, 1e-9), 1),
        "p50_ms": round(_percentile(lat, 0.50) * 1000, 3),
        "p99_ms": round(_percentile(lat, 0.99) * 1000, 3),
        "max_ms": round(lat[-1] * 1000, 3) if lat else 0.0,
        "client_cpu_s": round(sum(r[4] for r in results), 3),
    }


# --- the gatekeeper process -----------------------------------------------------------


class Gatekeeper:
    """``python -m dclcomms gatekeeper`` on a free port with a fresh database."""

    def __init__(self, database: str) -> None:
        self.database = database
        self.tmp = tempfile.mkdtemp(prefix="dclcomms-bench-gk-")
        self.pg_name: str | None = None
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""

    def __enter__(self) -> Gatekeeper:
        args = [
            sys.executable,
            "-m",
            "dclcomms",
            "gatekeeper",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--auth-token",
            AUTH_TOKEN,
            "--livekit-host",
            "wss://livekit.bench.invalid",
            "--livekit-api-key",
            API_KEY,
            "--livekit-api-secret",
            API_SECRET,
        ]
        if self.database == "postgresql":
            import psycopg

            self.pg_name = f"dclcomms_bench_{uuid.uuid4().hex[:12]}"
            with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3) as admin:
                admin.execute(f'CREATE DATABASE "{self.pg_name}"')
            args += ["--database", f"{PG_ADMIN.rsplit('/', 1)[0]}/{self.pg_name}"]
        else:
            args += ["--data-dir", self.tmp]
        env = dict(os.environ, LOG_LEVEL="WARNING")
        self.proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            m = re.search(r"listening on (http://\S+)", line)
            if m:
                self.url = m.group(1).rstrip("/")
                return self
        self.__exit__()
        raise RuntimeError("the gatekeeper did not start")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.pg_name is not None:
            import psycopg

            with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{self.pg_name}" WITH (FORCE)')
            self.pg_name = None
        shutil.rmtree(self.tmp, ignore_errors=True)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def ban_others(self, count: int, seed: int) -> int:
        """``count`` platform bans of other wallets (moderator bearer token)."""
        import urllib.request

        from dclcomms.auth import Identity

        done = 0
        for i in range(count):
            addr = Identity.generate(seed * 7_919 + i).address.lower()
            req = urllib.request.Request(
                f"{self.url}/users/{addr}/bans",
                data=json.dumps({"reason": "bench"}).encode(),
                headers={
                    "Authorization": f"Bearer {AUTH_TOKEN}",
                    "Content-Type": "application/json",
                },
                method="POST",
            )
            with urllib.request.urlopen(req, timeout=10) as r:
                done += r.status < 300
        return done


def check_answer(url: str, seed: int) -> dict[str, Any]:
    """One request by hand: a LiveKit string whose token verifies (the bench measures
    the real thing, not an error path)."""
    import urllib.request

    headers = _sign([seed], 1, 1)[0]
    req = urllib.request.Request(url + PATH, data=b"", headers=headers, method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        body = json.loads(r.read())
    adapter = str(body["adapter"])
    token = adapter.split("access_token=", 1)[1]
    from dclcomms.auth import jwt_decode

    claims = jwt_decode(token, API_SECRET)
    return {"adapter_prefix": adapter.split("?", 1)[0], "room": claims["video"]["room"]}


def bench_database(database: str, a: argparse.Namespace) -> dict[str, Any]:
    with Gatekeeper(database) as gk:
        banned = gk.ban_others(a.bans, a.seed) if a.bans else 0
        answer = check_answer(gk.url, a.seed + 99)
        # Warm-up (connections, caches, JIT-free Python paths).
        _run_load(gk.url, min(500, a.requests), a.concurrency, a.procs, a.seed + 50, a.identities)
        runs = []
        cpu0 = _cpu_s(gk.pid)
        for r in range(a.repeats):
            runs.append(
                _run_load(gk.url, a.requests, a.concurrency, a.procs, a.seed + r, a.identities)
            )
        cpu = _cpu_s(gk.pid) - cpu0
        hwm = _proc_status(gk.pid, "VmHWM")
    med = statistics.median(r["req_per_s"] for r in runs)
    answered = sum(r["ok"] for r in runs)
    return {
        "req_per_s_median": med,
        "p50_ms_median": statistics.median(r["p50_ms"] for r in runs),
        "p99_ms_median": statistics.median(r["p99_ms"] for r in runs),
        "server_cpu_us_per_request": round(cpu / max(answered, 1) * 1e6, 1),
        "server_peak_rss_mib": round(hwm / 1024, 1),
        "bans_stored": banned,
        "answer": answer,
        "runs": runs,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--requests", type=int, default=10_000, help="requests per repeat")
    ap.add_argument("--concurrency", type=int, default=32, help="requests in flight (total)")
    ap.add_argument("--procs", type=int, default=2, help="load processes")
    ap.add_argument("--identities", type=int, default=200, help="signing wallets")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--bans", type=int, default=200, help="platform bans of others stored first")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--databases", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql"
    )
    ap.add_argument("--quick", action="store_true", help="300 requests, 1 repeat, sqlite")
    a = ap.parse_args(argv)
    if a.quick:
        a.requests, a.repeats, a.bans, a.procs, a.concurrency = 300, 1, 5, 1, 8
        if "--databases" not in (argv if argv is not None else sys.argv[1:]):
            a.databases = "sqlite"
    databases = [d.strip() for d in a.databases.split(",") if d.strip()]
    for d in databases:
        if d not in ("sqlite", "postgresql"):
            ap.error(f"unknown database {d!r}")
    out: dict[str, Any] = {
        "bench": "gatekeeper",
        "route": PATH,
        "cpus": os.cpu_count(),
        "requests": a.requests,
        "concurrency": a.concurrency,
        "procs": a.procs,
        "repeats": a.repeats,
        "target": {"req_per_s": 2000, "p99_ms": 20},
        "databases": {},
    }
    for d in databases:
        out["databases"][d] = bench_database(d, a)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
