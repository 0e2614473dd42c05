"""Instructions the core process spends per heartbeat ingested over NATS (C++ feed).

A figure that repeats on a shared machine: the core side of ``bench_nats.py --ingest``
(a :class:`NatsPubSub` with the C++ client feeding an :class:`ArchipelagoCore`'s
engine) runs under ``valgrind --tool=callgrind``; ``--load-procs`` load processes of
``bench_nats.py`` (not under valgrind) publish ``--peers`` heartbeats ``--repeat`` times
each (the first of a peer adds it to the engine, the others update it). The
callgrind counters are zeroed when the core is subscribed and dumped when the engine
has applied every heartbeat; every thread of the core process counts (libnats' socket
reader and delivery thread, the feed's applier, Python polling the feed every 0.5 s).

    python bench/nats_ingest_instructions.py --subjects workers,v3 --peers 10000 --repeat 5
    python bench/nats_ingest_instructions.py --subjects workers --top 25   # + hottest functions
    python bench/nats_ingest_instructions.py --side publisher   # a load process instead

``--side publisher``: the other end, what a connector spends per heartbeat it publishes:
one load process (a connector's :class:`NatsPubSub` with the C++ client, ``bench_nats.py
--load-worker``) runs under callgrind and publishes ``--peers`` heartbeats ``--repeat``
times (its Python, which builds the batches and hands them to C++, and the C++ publisher
thread encoding each heartbeat and handing it to libnats); the core runs normally. The
counters are zeroed before the burst and dumped when it was flushed (its address strings,
built once per burst, count too).

Prints one JSON document per scheme and repetition (``--top N``: the N functions with
the most exclusive instructions, from ``callgrind_annotate``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import bench_nats  # this folder is on sys.path when run as a script


async def core_child(url: str, scheme: str, total: int) -> None:
    """The measured process: feeds the engine from NATS until `total` heartbeats applied."""
    bus = await bench_nats.NatsPubSub.connect([url], subjects=scheme, c_client=True)
    core = bench_nats.make_core(bus)
    await bus.ready()
    print("ready", flush=True)
    line = await asyncio.to_thread(sys.stdin.readline)
    assert line.strip() == "go"
    base = core.metrics.heartbeats.get()
    while True:
        core.sync_feed()
        if core.metrics.heartbeats.get() - base >= total:
            break
        await asyncio.sleep(0.5)  # rarely: Python's share stays small and steady
    print(json.dumps({"heartbeats": int(core.metrics.heartbeats.get() - base)}), flush=True)
    await asyncio.to_thread(sys.stdin.readline)  # dumped: close
    core.close()
    await bus.aclose()


def top_functions(dump: Path, n: int) -> list[tuple[int, str]]:
    text = subprocess.run(
        ["callgrind_annotate", "--inclusive=no", "--threshold=100", str(dump)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    out = []
    for line in text.splitlines():
        m = re.match(r"^\s*([\d,]+)\s+\([^)]*\)\s+(.*)$", line)
        if m and "PROGRAM TOTALS" not in line:
            out.append((int(m.group(1).replace(",", "")), m.group(2).strip()))
        if len(out) >= n:
            break
    return out


def load_config(url: str, scheme: str, repeat: int) -> dict[str, Any]:
    """The load processes' settings, the same on both sides: the C++ client, batches of
    1,000, seed 1, ``repeat`` heartbeats per peer."""
    return {
        "url": url,
        "c_client": True,
        "subjects": scheme,
        "batch": 1000,
        "seed": 1,
        "repeat": repeat,
    }


def child(args: list[str], callgrind: Path | None = None) -> subprocess.Popen[str]:
    """A Python child run with ``args`` that speaks lines on its stdin and stdout (stderr
    dropped); under callgrind (``--callgrind-out-file={callgrind}.%p``) when given."""
    tool: list[str] = []
    if callgrind is not None:
        tool = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={callgrind}.%p"]
    return subprocess.Popen(
        [*tool, sys.executable, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def stop(p: subprocess.Popen[str]) -> None:
    """Kills ``p`` if it still runs and closes its pipes."""
    if p.poll() is None:
        p.kill()
        p.wait()
    assert p.stdin is not None and p.stdout is not None
    p.stdin.close()
    p.stdout.close()


def callgrind_total(prefix: Path, pid: int) -> tuple[Path, int]:
    """Process ``pid``'s callgrind dump (``--callgrind-out-file={prefix}.%p``, dumped once)
    and the instructions it counted in all."""
    dump = Path(f"{prefix}.{pid}.1")
    match = re.search(r"^(?:summary|totals): (\d+)", dump.read_text(errors="replace"), re.M)
    assert match, "no callgrind totals"
    return dump, int(match.group(1))


def run(
    url: str, scheme: str, peers: int, repeat: int, load_procs: int, out_dir: Path, top: int
) -> dict[str, Any]:
    prefix = out_dir / f"callgrind-{scheme}"
    core = child([__file__, "--core-child", url, scheme, str(peers * repeat)], callgrind=prefix)
    assert core.stdin is not None and core.stdout is not None
    procs = None
    try:
        assert core.stdout.readline().strip() == "ready"
        procs = bench_nats.LoadProcs(load_procs, peers, load_config(url, scheme, repeat))
        subprocess.run(["callgrind_control", "-z", str(core.pid)], check=True, capture_output=True)
        core.stdin.write("go\n")
        core.stdin.flush()
        procs.send("burst 0")
        got = json.loads(core.stdout.readline())
        subprocess.run(["callgrind_control", "-d", str(core.pid)], check=True, capture_output=True)
        asyncio.run(procs.results())
        core.stdin.write("close\n")
        core.stdin.flush()
        core.wait(timeout=600)
    finally:
        if procs is not None:
            procs.close()
        stop(core)
    dump, instructions = callgrind_total(prefix, core.pid)
    out: dict[str, Any] = {
        "scheme": scheme,
        "peers": peers,
        "repeat": repeat,
        "load_procs": load_procs,
        "heartbeats": got["heartbeats"],
        "instructions": instructions,
        "instructions_per_heartbeat": round(instructions / max(got["heartbeats"], 1), 1),
    }
    if top:
        out["top_exclusive"] = [
            [round(ir / max(got["heartbeats"], 1), 1), fn] for ir, fn in top_functions(dump, top)
        ]
    return out


def run_publisher(
    url: str, scheme: str, peers: int, repeat: int, out_dir: Path, top: int
) -> dict[str, Any]:
    prefix = out_dir / f"callgrind-publisher-{scheme}"
    total = peers * repeat
    core = child([__file__, "--core-child", url, scheme, str(total)])
    assert core.stdin is not None and core.stdout is not None
    cfg = {**load_config(url, scheme, repeat), "first": 0, "count": peers}
    pub = child([bench_nats.__file__, "--load-worker", json.dumps(cfg)], callgrind=prefix)
    assert pub.stdin is not None and pub.stdout is not None
    try:
        assert core.stdout.readline().strip() == "ready"
        assert pub.stdout.readline().strip() == "ready"
        subprocess.run(["callgrind_control", "-z", str(pub.pid)], check=True, capture_output=True)
        core.stdin.write("go\n")
        core.stdin.flush()
        pub.stdin.write("burst 0\n")
        pub.stdin.flush()
        res = json.loads(pub.stdout.readline())
        subprocess.run(["callgrind_control", "-d", str(pub.pid)], check=True, capture_output=True)
        got = json.loads(core.stdout.readline())
        core.stdin.write("close\n")
        core.stdin.flush()
        pub.stdin.write("quit\n")
        pub.stdin.flush()
        pub.wait(timeout=600)
        core.wait(timeout=60)
    finally:
        for p in (pub, core):
            stop(p)
    dump, instructions = callgrind_total(prefix, pub.pid)
    out: dict[str, Any] = {
        "side": "publisher",
        "scheme": scheme,
        "peers": peers,
        "repeat": repeat,
        "published": res["published"],
        "ingested_by_the_core": got["heartbeats"],
        "instructions": instructions,
        "instructions_per_heartbeat": round(instructions / max(total, 1), 1),
    }
    if top:
        out["top_exclusive"] = [
            [round(ir / max(total, 1), 1), fn] for ir, fn in top_functions(dump, top)
        ]
    return out


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--core-child":
        asyncio.run(core_child(sys.argv[2], sys.argv[3], int(sys.argv[4])))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subjects", default="workers,v3")
    ap.add_argument("--peers", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=5, help="heartbeats per peer")
    ap.add_argument("--load-procs", type=int, default=2)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--top", type=int, default=0, help="also the N hottest functions")
    ap.add_argument("--keep", type=Path, help="keep the callgrind dumps in this folder")
    ap.add_argument(
        "--side",
        choices=("core", "publisher"),
        default="core",
        help="the process under callgrind: the core (the default) or one load process",
    )
    args = ap.parse_args()
    nats, url = bench_nats.start_nats()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            out_dir = args.keep or Path(tmp)
            out_dir.mkdir(parents=True, exist_ok=True)
            for scheme in args.subjects.split(","):
                for _ in range(args.reps):
                    t0 = time.perf_counter()
                    if args.side == "publisher":
                        res = run_publisher(url, scheme, args.peers, args.repeat, out_dir, args.top)
                    else:
                        res = run(
                            url, scheme, args.peers, args.repeat, args.load_procs, out_dir, args.top
                        )
                    res["wall_s"] = round(time.perf_counter() - t0, 1)
                    print(json.dumps(res), flush=True)
    finally:
        nats.terminate()
        nats.wait(5)


if __name__ == "__main__":
    main()
