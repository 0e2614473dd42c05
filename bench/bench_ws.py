"""Benchmarks of the WebSocket server: RFC-5 rooms fan-out and the connector.

The server runs in its own process (``--serve``: a ``dclcomms.ws.Server``
drained by an asyncio loop, as in ``dclcomms rooms``/the realm); the load is
``bench/ws_load.cpp`` (C++, one thread, real secp256k1 identities; rooms on raw
epoll sockets, so the load costs less per delivery than the server), built
here with CMake into ``build/bench``. Server CPU comes from /proc/<pid>/stat,
RSS from /proc/<pid>/status. Prints one JSON document: per scenario the median
of the repetitions, plus every run.

    python bench/bench_ws.py            # full: 10 s per run, 3 repetitions
    python bench/bench_ws.py --quick    # smoke: 1 s, 1 repetition, small counts
    python bench/bench_ws.py --only rooms --autogroup-nice -20   # a fair share when shared

Every run records the load average (1, 5, 15 min) at its end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import autogroup as autogroup_arg  # bench/autogroup.py: this folder is on sys.path as a script

ROOT = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")


def build_load(build_dir: Path) -> Path:
    """Configures and builds the C++ load client only (no Python module)."""
    subprocess.run(
        [
            "cmake",
            "-S",
            str(ROOT),
            "-B",
            str(build_dir),
            "-DCMAKE_BUILD_TYPE=Release",
            "-DDCLCOMMS_BENCH=ON",
            "-DDCLCOMMS_TESTS=OFF",
            "-DDCLCOMMS_PYTHON=OFF",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    subprocess.run(
        ["cmake", "--build", str(build_dir), "--target", "dclcomms_ws_load", "-j", "2"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return build_dir / "cpp" / "ws" / "dclcomms_ws_load"


# --- the server process ------------------------------------------------------------------


async def _serve(port: int, max_users: int, io_threads: int = 1) -> None:
    from dclcomms.ws import Heartbeats, HttpRequest, Server, ServerConfig

    server = Server(ServerConfig(port=port, rooms_max_users=max_users, io_threads=io_threads))
    server.start()
    loop = asyncio.get_running_loop()
    drained = {"heartbeats": 0, "polls": 0}

    def drain() -> None:
        drained["polls"] += 1
        for ev in server.poll():
            if isinstance(ev, Heartbeats):
                drained["heartbeats"] += len(ev.addresses)
            elif isinstance(ev, HttpRequest):
                body = json.dumps({"stats": server.stats(), "drained": drained}).encode()
                server.respond(ev.request_id, 200, {"Content-Type": "application/json"}, body)

    loop.add_reader(server.fileno(), drain)
    print("ready", flush=True)
    await loop.run_in_executor(None, sys.stdin.read)  # until the driver closes stdin
    server.stop()


class ServerProc:
    def __init__(self, port: int, max_users: int, io_threads: int = 1) -> None:
        self.port = port
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(port), str(max_users), str(io_threads)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "ready"

    def cpu_s(self) -> float:
        user, system = self.cpu_split_s()
        return user + system

    def cpu_split_s(self) -> tuple[float, float]:
        """(user, system) CPU seconds of the server process so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK

    def rss_kib(self) -> tuple[int, int]:
        status = dict(
            line.split(":", 1)
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines()
        )
        return int(status["VmRSS"].split()[0]), int(status["VmHWM"].split()[0])

    def stats(self) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.port}/bench-stats"
        with urllib.request.urlopen(url, timeout=10) as r:
            out: dict[str, Any] = json.load(r)
            return out

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- scenarios ----------------------------------------------------------------------------


def run_load(load: Path, srv: ServerProc | None, port: int, **kw: Any) -> dict[str, Any]:
    """Runs ws_load; with srv, adds the server's CPU share over the measured window."""
    args = [str(load), "--port", str(port)]
    for k, v in kw.items():
        args += [f"--{k}", str(v)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    user0 = sys0 = t0 = 0.0
    result: dict[str, Any] = {}
    for line in proc.stdout:
        doc = json.loads(line)
        if doc.get("event") == "measuring" and srv is not None:
            (user0, sys0), t0 = srv.cpu_split_s(), time.monotonic()
        elif "mode" in doc:
            result = doc
            if srv is not None and t0:
                (user1, sys1), elapsed = srv.cpu_split_s(), time.monotonic() - t0
                result["server_cpu_share"] = round((user1 + sys1 - user0 - sys0) / elapsed, 3)
                result["server_sys_share"] = round((sys1 - sys0) / elapsed, 3)
    assert proc.wait(timeout=600) == 0 and result, "ws_load failed"
    return result


def rooms_run(
    load: Path, rooms: int, clients: int, inflight: int, duration: float, io_threads: int = 1
) -> dict[str, Any]:
    srv = ServerProc(free_port(), max(100, clients), io_threads)
    try:
        r = run_load(
            load,
            srv,
            srv.port,
            mode="rooms",
            rooms=rooms,
            clients=clients,
            inflight=inflight,
            duration=duration,
            size=100,
        )
        r["server_rss_kib"], r["server_peak_rss_kib"] = srv.rss_kib()
        # CPU time per delivered update (server and load client): a figure that holds on a
        # shared machine, where the delivered rate follows the CPU the scheduler gives.
        per_s = max(r["delivered_per_s"], 1.0)
        r["server_cpu_us_per_delivery"] = round(r["server_cpu_share"] * 1e6 / per_s, 3)
        r["client_cpu_us_per_delivery"] = round(r["client_cpu_share"] * 1e6 / per_s, 3)
        stats = srv.stats()["stats"]
        st = stats["rooms"]
        r["server_unreliable_dropped"] = st["unreliable_dropped"]
        r["server_closed_slow"] = st["closed_slow"]
        # Frames per socket write (whole run, setup included): what corking achieved.
        if "socket_writes" in stats["server"]:
            sv = stats["server"]
            writes = sv["socket_writes"] + sv["writes_handed_over"]
            r["server_frames_per_write"] = round(sv["frames_flushed"] / max(writes, 1), 2)
            r["server_flushes_deferred"] = sv["flushes_deferred"]
        r["loadavg"] = loadavg()
        return r
    finally:
        srv.close()


def handshakes_run(load: Path, clients: int) -> dict[str, Any]:
    srv = ServerProc(free_port(), 100)
    try:
        rss0, _ = srv.rss_kib()
        cpu0 = srv.cpu_s()
        r = run_load(load, None, srv.port, mode="handshakes", clients=clients)
        r["server_cpu_s"] = round(srv.cpu_s() - cpu0, 3)
        st = srv.stats()["stats"]["connector"]
        r["server_auth_verify_us_mean"] = round(
            st["auth_verify_us_total"] / max(1, st["welcomed"]), 1
        )
        r["welcomed"] = st["welcomed"]
        r["server_rss_kib_idle"] = rss0
        return r
    finally:
        srv.close()


def heartbeats_run(load: Path, clients: int, rate: float, duration: float) -> dict[str, Any]:
    srv = ServerProc(free_port(), 100)
    try:
        rss0, _ = srv.rss_kib()
        proc = subprocess.Popen(
            [
                str(load),
                "--port",
                str(srv.port),
                "--mode",
                "heartbeats",
                "--clients",
                str(clients),
                "--rate",
                str(rate),
                "--duration",
                str(duration),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        # Sample server counters while the load is steady.
        while srv.stats()["stats"]["connector"]["sessions"] < clients:
            time.sleep(0.2)
        rss_conn, _ = srv.rss_kib()
        time.sleep(1.0)
        s0, cpu0, t0 = srv.stats(), srv.cpu_s(), time.monotonic()
        time.sleep(max(1.0, duration - 2.5))
        s1, cpu1, t1 = srv.stats(), srv.cpu_s(), time.monotonic()
        out, _ = proc.communicate(timeout=600)
        r: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        acc = "heartbeats_accepted"
        r["server_ingest_per_s"] = round(
            (s1["stats"]["connector"][acc] - s0["stats"]["connector"][acc]) / (t1 - t0), 1
        )
        r["python_drained_per_s"] = round(
            (s1["drained"]["heartbeats"] - s0["drained"]["heartbeats"]) / (t1 - t0), 1
        )
        r["server_cpu_share"] = round((cpu1 - cpu0) / (t1 - t0), 3)
        r["server_rss_kib_idle"] = rss0
        r["server_rss_kib_connected"] = rss_conn
        r["rss_per_connection_kib"] = round((rss_conn - rss0) / clients, 2)
        return r
    finally:
        srv.close()


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in runs[0].items():
        if isinstance(v, int | float) and not isinstance(v, bool):
            out[k] = statistics.median(r[k] for r in runs)
        elif isinstance(v, list) and all(isinstance(x, int | float) for x in v):
            out[k] = [statistics.median(r[k][i] for r in runs) for i in range(len(v))]
        else:
            out[k] = v
    return out


def main(argv: list[str]) -> int:
    if argv and argv[0] == "--serve":
        asyncio.run(_serve(int(argv[1]), int(argv[2]), int(argv[3]) if len(argv) > 3 else 1))
        return 0
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="1 s runs, 1 repetition, small counts")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--build-dir", type=Path, default=ROOT / "build" / "bench")
    p.add_argument("--only", choices=["rooms", "connector"], default=None)
    p.add_argument(
        "--io-threads", type=int, default=1, help="rooms: the server's io_threads (room shards)"
    )
    autogroup_arg.add_argument(p)
    ns = p.parse_args(argv)
    autogroup = autogroup_arg.apply(ns.autogroup_nice, "bench_ws")
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    reps, duration = (1, 1.0) if ns.quick else (ns.reps, ns.duration)
    load = build_load(ns.build_dir)
    results: dict[str, Any] = {
        "reps": reps,
        "duration_s": duration,
        "io_threads": ns.io_threads,
        "autogroup": autogroup,
        "loadavg_start": loadavg(),
        "scenarios": {},
    }
    scen = results["scenarios"]
    if ns.only in (None, "rooms"):
        shapes = [(1, 10), (2, 5)] if ns.quick else [(1, 50), (10, 20)]
        for rooms, clients in shapes:
            for inflight in (1, 8):
                name = f"rooms_{rooms}x{clients}_inflight{inflight}"
                runs = [
                    rooms_run(load, rooms, clients, inflight, duration, ns.io_threads)
                    for _ in range(reps)
                ]
                scen[name] = {"median": median_of(runs), "runs": runs}
    if ns.only in (None, "connector"):
        n_hs = 50 if ns.quick else 1000
        runs = [handshakes_run(load, n_hs) for _ in range(reps)]
        scen[f"connector_handshakes_{n_hs}"] = {"median": median_of(runs), "runs": runs}
        n_hb = 100 if ns.quick else 5000
        hb_duration = 4.0 if ns.quick else duration
        for rate in (1.0, 10.0):
            runs = [heartbeats_run(load, n_hb, rate, hb_duration) for _ in range(reps)]
            scen[f"connector_heartbeats_{n_hb}_at_{rate:g}hz"] = {
                "median": median_of(runs),
                "runs": runs,
            }
    results["loadavg_end"] = loadavg()
    results["driver_peak_rss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
