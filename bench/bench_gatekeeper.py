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

The load is bench/http_load.cpp (C++, one thread, epoll; compiled by this script with
the system compiler into build/bench/ on first use), replaying requests signed and
serialised in advance (``--procs`` signing processes), twice: closed loop with
``--concurrency`` requests in flight (the maximum throughput; latency there is mostly
queueing, concurrency / throughput), then open loop at ``--rate`` requests/s (2,000: the
target; each request's latency counts from when it was due, on up to
``--rate-connections`` connections), which answers "p99 at 2,000 req/s". A connection is reused
while the server keeps it open (HTTP/1.1 keep-alive) and reopened when an answer says
``Connection: close``; a reopened request's latency includes its TCP connect.
``--connection-close`` makes every request say ``Connection: close``, as a client
without keep-alive: one TCP connection per request. Every request is signed before the
clock starts, by one of ``--identities`` wallets with strictly increasing timestamps per
wallet, so no two requests share a final signature (the replay cache would refuse the
second one: 401 ``replayed``) and all stay inside the 60 s window. Throughput = 2xx
answers / (last answer - first send); p50/p99 over every request's latency; median over
``--repeats``. Beside: the gatekeeper's CPU time per request (all threads, and its
Python thread alone: the one that cannot use the second core), its peak RSS (VmHWM) and
the load generator's CPU time per request: the machine has 2 cores shared by server and
load.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import multiprocessing as mp
import os
import re
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import autogroup as autogroup_arg  # bench/autogroup.py: this folder is on sys.path as a script

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


# --- the load ---------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]
LOAD_SRC = ROOT / "bench" / "http_load.cpp"


def load_binary() -> Path:
    """bench/http_load.cpp compiled once per source version (build/bench/, a second)."""
    src = LOAD_SRC.read_bytes()
    out = ROOT / "build" / "bench" / f"http_load-{hashlib.sha256(src).hexdigest()[:12]}"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        cxx = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or "c++"
        tmp = out.with_suffix(f".tmp{os.getpid()}")
        subprocess.run(
            [cxx, "-O2", "-std=c++17", "-Wall", "-Wextra", str(LOAD_SRC), "-o", str(tmp)],
            check=True,
        )
        tmp.replace(out)
    return out


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


def _sign_chunk(args: tuple[list[int], int, str, bool]) -> list[bytes]:
    seeds, count, host, close = args
    return [_request_bytes(host, h, close) for h in _sign(seeds, count, 16)]


def _request_bytes(host: str, headers: dict[str, str], close: bool = False) -> bytes:
    lines = [f"POST {PATH} HTTP/1.1", f"Host: {host}", "Content-Length: 0"]
    if close:  # a client without keep-alive: one TCP connection per request
        lines.append("Connection: close")
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _run_load(
    url: str,
    requests: int,
    concurrency: int,
    procs: int,
    seed: int,
    identities: int,
    pid: int | None = None,
    rate: float = 0.0,
    close: bool = False,
) -> dict[str, Any]:
    """Signs ``requests`` requests (``procs`` processes; outside the timing, fresh
    timestamps: the window is 60 s), then replays them through http_load with
    ``concurrency`` in flight (closed loop) or, with ``rate``, at ``rate`` requests/s on
    up to ``concurrency`` connections (open loop). With ``pid``, adds the server's CPU
    over the run."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    seeds = [seed * 1_000_003 + i for i in range(identities)]
    chunks = [
        (
            seeds[k::procs],
            requests // procs + (1 if k < requests % procs else 0),
            f"{host}:{port}",
            close,
        )
        for k in range(procs)
    ]
    with mp.get_context("spawn").Pool(procs) as pool:
        signed = pool.map(_sign_chunk, chunks)
    # Interleave the chunks so consecutive requests come from different wallets.
    ordered = [r for group in itertools.zip_longest(*signed) for r in group if r is not None]
    with tempfile.NamedTemporaryFile(prefix="dclcomms-bench-reqs-", delete=False) as f:
        for r in ordered:
            f.write(struct.pack("<I", len(r)) + r)
        path = f.name
    try:
        before = _threads_cpu(pid) if pid else {}
        cpu0 = _cpu_s(pid) if pid else 0.0
        out = subprocess.run(
            [
                str(load_binary()),
                "--host",
                host,
                "--port",
                str(port),
                "--requests",
                path,
                "--connections",
                str(concurrency),
                *(["--rate", str(rate)] if rate > 0 else []),
            ],
            check=True,
            capture_output=True,
            text=True,
            timeout=600,
        )
        after = _threads_cpu(pid) if pid else {}
        cpu1 = _cpu_s(pid) if pid else 0.0
    finally:
        os.unlink(path)
    result: dict[str, Any] = json.loads(out.stdout)
    if pid:
        main = after.get(pid, 0.0) - before.get(pid, 0.0)
        total = cpu1 - cpu0
        n = max(result["requests"], 1)
        result["server_cpu_us_per_request"] = round(total / n * 1e6, 1)
        result["server_python_thread_us_per_request"] = round(main / n * 1e6, 1)
    result["client_cpu_us_per_request"] = round(
        result["client_cpu_s"] / max(result["requests"], 1) * 1e6, 1
    )
    return result


def _threads_cpu(pid: int) -> dict[int, float]:
    """CPU seconds of each thread of pid (the main thread's id is pid)."""
    out = {}
    tick = os.sysconf("SC_CLK_TCK")
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / tick
    return out


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
        # Warm-up (connections, caches, the delegation cache of the first wallets).
        _run_load(gk.url, min(500, a.requests), a.concurrency, a.procs, a.seed + 50, a.identities)
        runs = [
            _run_load(
                gk.url,
                a.requests,
                a.concurrency,
                a.procs,
                a.seed + r,
                a.identities,
                gk.pid,
                close=a.connection_close,
            )
            for r in range(a.repeats)
        ]
        paced = [
            _run_load(
                gk.url,
                a.requests,
                a.rate_connections,
                a.procs,
                a.seed + 100 + r,
                a.identities,
                gk.pid,
                rate=a.rate,
                close=a.connection_close,
            )
            for r in range(a.repeats if a.rate > 0 else 0)
        ]
        hwm = _proc_status(gk.pid, "VmHWM")

    def med(key: str, of: list[dict[str, Any]] = runs) -> float:
        return round(statistics.median(r[key] for r in of), 3) if of else 0.0

    at_rate: dict[str, Any] = {}
    if paced:
        at_rate = {
            "rate": a.rate,
            "req_per_s_median": med("req_per_s", paced),
            "p50_ms_median": med("p50_ms", paced),
            "p99_ms_median": med("p99_ms", paced),
            "server_cpu_us_per_request": med("server_cpu_us_per_request", paced),
            "runs": paced,
        }
    return {
        "req_per_s_median": med("req_per_s"),
        "p50_ms_median": med("p50_ms"),
        "p99_ms_median": med("p99_ms"),
        "server_cpu_us_per_request": med("server_cpu_us_per_request"),
        "server_python_thread_us_per_request": med("server_python_thread_us_per_request"),
        "client_cpu_us_per_request": med("client_cpu_us_per_request"),
        "server_peak_rss_mib": round(hwm / 1024, 1),
        "bans_stored": banned,
        "answer": answer,
        "runs": runs,
        "at_rate": at_rate,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--requests", type=int, default=10_000, help="requests per repeat")
    ap.add_argument("--concurrency", type=int, default=32, help="requests in flight (total)")
    ap.add_argument("--procs", type=int, default=2, help="signing processes")
    ap.add_argument(
        "--rate",
        type=float,
        default=2000,
        help="then the same at this fixed rate, requests/s (open loop; 0: skip)",
    )
    ap.add_argument(
        "--rate-connections", type=int, default=256, help="open loop: most connections at once"
    )
    autogroup_arg.add_argument(ap)
    ap.add_argument(
        "--connection-close",
        action="store_true",
        help="every request says Connection: close (a client without keep-alive: one TCP "
        "connection per request)",
    )
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
        a.rate = min(a.rate, 1000)
        if "--databases" not in (argv if argv is not None else sys.argv[1:]):
            a.databases = "sqlite"
    autogroup = autogroup_arg.apply(a.autogroup_nice, "bench_gatekeeper")
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
        "rate": a.rate,
        "connection_close": a.connection_close,
        "autogroup": autogroup,
        "loadavg_start": Path("/proc/loadavg").read_text().split()[:3],
        "target": {"req_per_s": 2000, "p99_ms": 20},
        "databases": {},
    }
    for d in databases:
        out["databases"][d] = bench_database(d, a)
    out["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
