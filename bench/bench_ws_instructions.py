"""Instructions the WebSocket server spends per delivered room update / accepted heartbeat.

A figure that repeats on a shared machine (wall-clock rates there follow the other
processes' load): the server of ``bench_ws.py --serve`` runs under
``valgrind --tool=callgrind``, the C++ load client of ``bench_ws.py`` drives it, and the
callgrind counters are zeroed once the load is steady and dumped ``--seconds`` later; the
server's own counters over the same window give the denominator. Every thread of the
server process counts (the I/O thread, the auth worker, Python draining events).

    python bench/bench_ws_instructions.py --mode rooms        # 1 room x 20 clients, 1 in flight
    python bench/bench_ws_instructions.py --mode rooms --rooms 10 --clients 20 --inflight 8
    python bench/bench_ws_instructions.py --mode heartbeats   # 300 clients x 10 Hz

Prints one JSON document per repetition.
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench_ws import ROOT, build_load  # this folder is on sys.path when run as a script

HEARTBEAT_CLIENTS = 300


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bench_stats(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/bench-stats", timeout=120) as r:
        out: dict[str, Any] = json.load(r)
        return out


def run(
    load: Path, mode: str, seconds: float, out_dir: Path, shape: tuple[int, int, int] = (1, 20, 1)
) -> dict[str, Any]:
    port = free_port()
    prefix = out_dir / f"callgrind-{mode}-{port}"
    server = subprocess.Popen(
        [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={prefix}.%p",
            sys.executable,
            str(ROOT / "bench" / "bench_ws.py"),
            "--serve",
            str(port),
            "100",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert server.stdout is not None and server.stdout.readline().strip() == "ready"
    common = [str(load), "--port", str(port)]
    if mode == "rooms":
        rooms, clients, inflight = shape
        args = ["--mode", "rooms", "--rooms", str(rooms), "--clients", str(clients)]
        args += ["--inflight", str(inflight)]
        args += ["--size", "100", "--duration", str(seconds + 30)]
    else:
        args = ["--mode", "heartbeats", "--clients", str(HEARTBEAT_CLIENTS), "--rate", "10"]
        args += ["--duration", str(seconds + 60)]
    client = subprocess.Popen(common + args, stdout=subprocess.PIPE, text=True)
    try:
        assert client.stdout is not None
        if mode == "rooms":
            for line in client.stdout:
                if json.loads(line).get("event") == "measuring":
                    break
        else:
            while bench_stats(port)["stats"]["connector"]["sessions"] < HEARTBEAT_CLIENTS:
                time.sleep(0.5)
            time.sleep(2.0)
        before = bench_stats(port)
        subprocess.run(
            ["callgrind_control", "-z", str(server.pid)], check=True, capture_output=True
        )
        time.sleep(seconds)
        subprocess.run(
            ["callgrind_control", "-d", str(server.pid)], check=True, capture_output=True
        )
        after = bench_stats(port)
    finally:
        client.kill()
        client.wait()
        assert server.stdin is not None
        server.stdin.close()
        server.wait(timeout=600)
    dump = Path(f"{prefix}.{server.pid}.1").read_text(errors="replace")
    match = re.search(r"^(?:summary|totals): (\d+)", dump, re.MULTILINE)
    assert match, "no callgrind totals"
    instructions = int(match.group(1))
    out: dict[str, Any] = {"mode": mode, "seconds": seconds, "instructions": instructions}
    if mode == "rooms":
        out["rooms"], out["clients"], out["inflight"] = shape
        key, counter = "updates_delivered", after["stats"]["rooms"]["updates_delivered"]
        n = counter - before["stats"]["rooms"]["updates_delivered"]
        out[key] = n
        out["instructions_per_delivered_update"] = round(instructions / max(n, 1), 1)
    else:
        acc = "heartbeats_accepted"
        n = after["stats"]["connector"][acc] - before["stats"]["connector"][acc]
        out[acc] = n
        out["drained"] = after["drained"]["heartbeats"] - before["drained"]["heartbeats"]
        out["instructions_per_heartbeat"] = round(instructions / max(n, 1), 1)
    return out


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", choices=["rooms", "heartbeats"], default="rooms")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--rooms", type=int, default=1, help="rooms mode: rooms")
    p.add_argument("--clients", type=int, default=20, help="rooms mode: clients per room")
    p.add_argument("--inflight", type=int, default=1, help="rooms mode: updates in flight")
    p.add_argument("--build-dir", type=Path, default=ROOT / "build" / "bench")
    ns = p.parse_args(argv)
    load = build_load(ns.build_dir)
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(ns.reps):
            shape = (ns.rooms, ns.clients, ns.inflight)
            print(json.dumps(run(load, ns.mode, ns.seconds, Path(tmp), shape)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
