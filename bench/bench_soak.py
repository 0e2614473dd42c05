"""Soak: a realm process under N heartbeating connector sessions for M minutes.

``python bench/bench_soak.py [--minutes 10] [--sessions 10000] [--loaders 2] [--rate 1]``

Starts ``python -m dclcomms realm`` on a free port, then ``--loaders`` C++ load processes
(``bench/ws_load.cpp --mode heartbeats``: real secp256k1 identities, each session heartbeats
``--rate`` times a second) sharing ``--sessions``. Every ``--sample-s`` seconds it records
the realm's RSS and CPU share since the previous sample and the latency of 5 ``/status``
requests. Output (JSON on stdout): the series, ``/status`` p50/p99 over the whole run, the
mean CPU share, RSS after the first minute and at the end, and ``rss_growth_after_1min_kib``
(the acceptance: flat after the first minute).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import autogroup as autogroup_arg  # noqa: E402
from bench_ws import build_load, free_port  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def runqueue_wait_s(pid: int) -> float:
    """Seconds the process's threads spent runnable but waiting for a CPU (schedstat).

    On a shared machine this tells a slow answer caused by the realm from one caused by
    the machine: a realm that waits for a core is starved, not stuck."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[1])
            except OSError:  # the thread ended between listdir and open
                continue
    except OSError:
        return 0.0
    return total / 1e9


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


STATUS_TIMEOUT_S = 10.0


def status_ms(url: str) -> float | None:
    """One ``/status`` round trip in ms, or None when it failed or took over 10 s."""
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(url + "/status", timeout=STATUS_TIMEOUT_S) as r:
            r.read()
    except OSError:
        return None
    return (time.perf_counter() - t0) * 1000


def metric(url: str, name: str) -> float | None:
    """One unlabelled gauge from ``/metrics`` (None when unanswered or absent)."""
    try:
        with urllib.request.urlopen(url + "/metrics", timeout=STATUS_TIMEOUT_S) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[1])
    except OSError:
        return None
    return None


def status_users(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url + "/status", timeout=STATUS_TIMEOUT_S) as r:
            return int(json.load(r).get("userCount", 0))
    except OSError:
        return None


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))] if s else 0.0


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--sessions", type=int, default=10_000)
    p.add_argument("--loaders", type=int, default=2)
    p.add_argument("--rate", type=float, default=1.0, help="heartbeats per session per second")
    p.add_argument("--sample-s", type=float, default=10.0)
    p.add_argument("--build-dir", default=str(ROOT / "build" / "bench"))
    p.add_argument(
        "--realm-arg",
        action="append",
        default=[],
        help="an extra argument for the realm (repeat), e.g. --realm-arg=--map-replay-ticks=30",
    )
    autogroup_arg.add_argument(p)
    args = p.parse_args(argv)
    autogroup = autogroup_arg.apply(args.autogroup_nice, "bench_soak")

    load = build_load(Path(args.build_dir))
    port = free_port()
    realm = subprocess.Popen(
        [
            *(sys.executable, "-m", "dclcomms", "realm", "--host", "127.0.0.1"),
            *("--port", str(port), "--max-users", str(args.sessions * 2)),
            # every load session comes from 127.0.0.1 and they handshake in bursts
            *("--max-unauthenticated-per-ip", str(args.sessions)),
            *args.realm_arg,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=dict(os.environ, LOG_LEVEL="WARNING"),
    )
    assert realm.stdout is not None
    line = realm.stdout.readline()
    assert line.startswith("dclcomms realm listening on "), line
    url = f"http://127.0.0.1:{port}"
    duration = args.minutes * 60
    per = args.sessions // args.loaders
    loaders = [
        subprocess.Popen(
            [
                str(load),
                *("--mode", "heartbeats", "--port", str(port), "--clients", str(per)),
                *("--rate", str(args.rate), "--duration", str(duration), "--seed", str(i + 1)),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(args.loaders)
    ]
    outputs: list[list[str]] = [[] for _ in loaders]

    def drain(i: int) -> None:
        assert loaders[i].stdout is not None
        outputs[i] = loaders[i].stdout.readlines()

    readers = [threading.Thread(target=drain, args=(i,), daemon=True) for i in range(len(loaders))]
    for t in readers:
        t.start()
    series: list[dict[str, Any]] = []
    latencies: list[float] = []
    status_failures = 0
    started = time.monotonic()
    last_cpu, last_t, last_wait = cpu_s(realm.pid), started, runqueue_wait_s(realm.pid)
    try:
        while any(lp.poll() is None for lp in loaders):
            time.sleep(args.sample_s)
            now = time.monotonic()
            c = cpu_s(realm.pid)
            w = runqueue_wait_s(realm.pid)
            probes = [status_ms(url) for _ in range(5)]
            lat = [x for x in probes if x is not None]
            failed = len(probes) - len(lat)
            status_failures += failed
            # a failed probe counts as the timeout in the percentiles
            latencies += lat + [STATUS_TIMEOUT_S * 1000] * failed
            users = status_users(url)
            series.append(
                {
                    "t_s": round(now - started, 1),
                    "rss_kib": rss_kib(realm.pid),
                    "cpu_share": round((c - last_cpu) / (now - last_t), 3),
                    "runqueue_wait_share": round((w - last_wait) / (now - last_t), 3),
                    "status_ms_max": round(max(lat), 2) if lat else None,
                    "status_failures": failed,
                    "users": users,
                    # bounded by design: it fills for map_replay_ticks ticks (10 min by
                    # default), a key frame of every peer each 30 ticks
                    "map_replay_kib": (lambda b: None if b is None else round(b / 1024))(
                        metric(url, "dcl_map_replay_bytes")
                    ),
                }
            )
            last_cpu, last_t, last_wait = c, now, w
            print(json.dumps(series[-1]), file=sys.stderr, flush=True)
            if now - started > duration + 120:
                break
    finally:
        for lp in loaders:
            if lp.poll() is None:
                lp.terminate()
            lp.wait()
        for t in readers:
            t.join(timeout=5)
        t_stop = time.monotonic()
        realm.terminate()
        try:
            realm.wait(timeout=60)
        except subprocess.TimeoutExpired:
            realm.kill()
            realm.wait()
        stop_s = time.monotonic() - t_stop
    after_1min = [s for s in series if s["t_s"] >= 60]
    rss_1min = after_1min[0]["rss_kib"] if after_1min else 0
    rss_end = series[-1]["rss_kib"] if series else 0
    summary = {
        "command": "python bench/bench_soak.py " + " ".join(argv),
        "minutes": args.minutes,
        "sessions": args.sessions,
        "loaders": args.loaders,
        "rate_hz": args.rate,
        "peak_users": max((s["users"] or 0 for s in series), default=0),
        "status_failures": status_failures,
        "autogroup": autogroup,
        "loadavg_end": Path("/proc/loadavg").read_text().split()[:3],
        "shutdown_s": round(stop_s, 2),
        "status_p50_ms": round(statistics.median(latencies), 2) if latencies else None,
        "status_p99_ms": round(pct(latencies, 0.99), 2),
        "cpu_share_mean": round(statistics.mean(s["cpu_share"] for s in series), 3)
        if series
        else None,
        "runqueue_wait_share_mean": round(
            statistics.mean(s["runqueue_wait_share"] for s in series), 3
        )
        if series
        else None,
        "rss_kib_at_1min": rss_1min,
        "rss_kib_end": rss_end,
        "rss_growth_after_1min_kib": rss_end - rss_1min,
        "loaders_output": [json.loads(o[-1]) if o else None for o in outputs],
        "series": series,
    }
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
