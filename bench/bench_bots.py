"""Client load: ``dclcomms bots`` against ``dclcomms realm`` (both subprocesses).

Prints JSON: per bot count, the median over ``--repeat`` runs of the connect
time, messages received per second, the bots process' CPU (user + system, % of
one core) and peak RSS, and the realm's CPU over the same run.

    python bench/bench_bots.py                       # 200 bots, 10 s, 3 runs
    python bench/bench_bots.py --counts 100 200 400 --seconds 20
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """user + system CPU seconds of a running process (from /proc)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def one_run(url: str, realm_pid: int, count: int, seconds: float, seed: int) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "dclcomms", "bots", "--realm", url, "--count", str(count)]
    cmd += ["--seconds", str(seconds), "--seed", str(seed), "--mobility", "waypoint"]
    realm_before = cpu_s(realm_pid)
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - t0
    summary = json.loads(out)
    return {
        "exit": proc.returncode,
        "protocol_errors": summary["protocol_errors"],
        "connect_s": summary["connect_s"],
        "received_per_s": summary["messages_received"] / seconds,
        "sent_per_s": summary["messages_sent"] / seconds,
        "island_changes": summary["island_changes"],
        "bots_cpu_pct": 100.0 * (usage.ru_utime + usage.ru_stime) / wall,
        "bots_peak_rss_mib": usage.ru_maxrss / 1024.0,
        "realm_cpu_pct": 100.0 * (cpu_s(realm_pid) - realm_before) / wall,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--counts", type=int, nargs="+", default=[200])
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    realm = subprocess.Popen(
        [sys.executable, "-m", "dclcomms", "realm", "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=dict(os.environ, LOG_LEVEL="WARNING"),
    )
    results: list[dict[str, Any]] = []
    try:
        assert realm.stdout is not None
        url = realm.stdout.readline().split()[-1]
        for count in args.counts:
            runs = [
                one_run(url, realm.pid, count, args.seconds, seed) for seed in range(args.repeat)
            ]
            row: dict[str, Any] = {"bots": count, "seconds": args.seconds, "runs": len(runs)}
            row["all_exit_0"] = all(r["exit"] == 0 for r in runs)
            row["protocol_errors"] = sum(r["protocol_errors"] for r in runs)
            for key in (
                "connect_s",
                "sent_per_s",
                "received_per_s",
                "island_changes",
                "bots_cpu_pct",
                "bots_peak_rss_mib",
                "realm_cpu_pct",
            ):
                row[key] = round(statistics.median(r[key] for r in runs), 2)
            results.append(row)
    finally:
        realm.terminate()
        realm.wait(timeout=30)
    print(json.dumps({"bench": "bots", "results": results}, indent=2))
    return 0 if all(r["all_exit_0"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
