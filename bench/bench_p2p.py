"""P2P islands against WebSocket rooms: delivery latency, member upload, time to ready.

For each island size ``n`` (default 2..8) and each transport (``p2p``: a realm with
``--policy p2p``; ``ws-room``: the default policy), starts ``dclcomms realm`` and ``n``
peers, **one process per peer** (as real clients are), all on 127.0.0.1. Each peer
is a :class:`~dclcomms.client.CommunicationsDirector` with a real identity; once
every peer is ready (P2P: it has heard every member through the mesh; rooms: the
room lists every member) they all send an RFC-4 position packet ``--hz`` times a
second for ``--seconds`` and record send and receive times (wall clock, shared by
the processes). Printed JSON, per transport and size, medians over ``--repeat``
runs of:

* ``latency_p50_ms`` / ``latency_p99_ms``: send -> receive over every delivery;
* ``delivered``: deliveries / (packets sent x (n - 1));
* ``upload_Bps_median`` / ``upload_Bps_max``: bytes a peer hands its transport per
  second (P2P: envelopes into data channels, its own and relayed; rooms: WebSocket
  frames), the median and the busiest peer; ``dtls_Bps_median`` / ``dtls_Bps_max``
  (P2P): what aiortc's DTLS layer wrote (SCTP and DTLS overhead included);
* ``ready_s_median`` / ``ready_s_max``: P2P: from the peer's last membership change
  (its ``island_changed`` or the last ``join_island``) to having heard every member
  through the mesh; rooms: from ``island_changed`` to the room joined;
* ``peer_cpu_pct_median`` and ``peer_rss_mib_max``: per peer process;
* ``unreliable_copies_per_delivery`` (P2P): unreliable copies received by the peers
  (first copies and duplicates, over the traffic window) per first copy: 1.0 is one
  copy per member; ``unreliable_fallback``: packets relayed to every neighbour because
  the relay may disagree with the others on the tree (docs/p2p.md "Relaying"), summed
  over the peers (None: a client without that counter).

``--settled`` starts the traffic only once every peer's view of the links has not
changed for a ``links`` period and it knows every member's links (ready_s is still
the time to an open mesh); without it traffic starts as soon as every mesh is open,
while connections may still be opening.

    python bench/bench_p2p.py                        # n = 2..8, 10 s, 3 runs
    python bench/bench_p2p.py --sizes 2 4 --seconds 5 --repeat 1
    python bench/bench_p2p.py --quick                # smoke: n = 2, 1 s, 1 run
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
from typing import Any

HERE = os.path.abspath(__file__)


# --- one peer (a subprocess) -------------------------------------------------------


async def peer(args: argparse.Namespace) -> dict[str, Any]:
    from dclcomms import codec
    from dclcomms.auth import Identity
    from dclcomms.client import (
        CommunicationsDirector,
        Message,
        P2PAdapter,
        P2POptions,
        WsRoomAdapter,
    )

    me = Identity.generate(args.seed)
    changed_at = [time.monotonic()]
    recv: list[tuple[str, int, float]] = []
    d = CommunicationsDirector(
        args.realm,
        me,
        position=lambda: (args.x, 0.0, 0.0),
        heartbeat_interval_s=0.2,
        p2p_options=P2POptions(host_addresses=("127.0.0.1",), seed=args.seed),
        open_bus_early=args.transport == "p2p",
    )

    def on_message(m: Message) -> None:
        now = time.time()
        packet = codec.decode(codec.RFC4_PACKET, m.data)
        recv.append((m.address, int(packet["position"].get("index", 0)), now))

    d.on("island_changed", lambda _c: changed_at.__setitem__(0, time.monotonic()))
    d.on("message", on_message)
    await d.start()
    n_others = args.n - 1

    room_joined: list[float] = []

    def ready() -> float | None:
        """Seconds from the last membership change we saw to ready; None while not ready.

        P2P: from our ``island_changed`` or the last ``join_island`` to having heard every
        member through the mesh. Rooms: from our ``island_changed`` to the room joined.
        """
        a = d.adapter
        if isinstance(a, P2PAdapter) and len(a.members) == n_others and a.mesh_open:
            since = max(changed_at[0], a.members_changed_at)
            return max((a.mesh_open_at or 0.0) - since, 0.0)
        if isinstance(a, WsRoomAdapter):
            if not room_joined:
                room_joined.append(time.monotonic() - changed_at[0])
            if len(a.peers) == n_others:
                return room_joined[0]
        return None

    deadline = time.monotonic() + 60
    while (ready_s := ready()) is None:
        if time.monotonic() > deadline:
            raise SystemExit(f"peer {args.seed}: not ready after 60 s ({d.adapter!r})")
        await asyncio.sleep(0.005)
    if args.settled and isinstance(d.adapter, P2PAdapter):
        a = d.adapter
        seen, since = dict(a.router.links), time.monotonic()
        while True:  # our view unchanged for a links period, every member's links known
            now = time.monotonic()
            if a.router.links != seen:
                seen, since = dict(a.router.links), now
            if (
                now - since >= a.options.links_interval_s
                and a.members <= set(seen)
                and seen.get(a.me) == frozenset(a.open_links)
            ):
                break
            if now > deadline + 60:
                raise SystemExit(f"peer {args.seed}: mesh not settled after 60 s")
            await asyncio.sleep(0.005)
    print("READY", flush=True)
    loop = asyncio.get_running_loop()
    line = await loop.run_in_executor(None, sys.stdin.readline)
    start_at = float(line.split()[1])  # wall clock shared by every peer
    await asyncio.sleep(max(start_at - time.time(), 0.0))
    adapter = d.adapter
    p2p = adapter if isinstance(adapter, P2PAdapter) else None
    app0 = p2p.bytes_sent if p2p is not None else 0
    stats0 = p2p.stats() if p2p is not None else {}
    dtls0 = p2p.transport_bytes_sent() if p2p is not None else 0
    ws_bytes = 0
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.monotonic()
    sent: dict[int, float] = {}
    period = 1.0 / args.hz
    k = 0
    while time.monotonic() - t0 < args.seconds:
        pos = {"index": k, "positionX": args.x, "positionY": 0.0, "positionZ": 0.0}
        data = codec.encode(
            codec.RFC4_PACKET, {"position": {**pos, "rotationW": 1.0}, "protocolVersion": 100}
        )
        sent[k] = time.time()
        await d.send(data, reliable=False)
        if p2p is None:  # the frame the room adapter writes (+ 6 bytes of masked WS header)
            frame = {"peerUpdateMessage": {"body": data, "unreliable": True}}
            ws_bytes += len(codec.encode(codec.WS_PACKET, frame)) + 6
        k += 1
        await asyncio.sleep(max(t0 + k * period - time.monotonic(), 0.0))
    window = time.monotonic() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    app = (p2p.bytes_sent - app0) if p2p is not None else ws_bytes
    dtls = (p2p.transport_bytes_sent() - dtls0) if p2p is not None else 0
    stats = p2p.stats() if p2p is not None else {}
    await asyncio.sleep(1.5)  # stragglers
    after = p2p.stats() if p2p is not None else {}
    keys = ("router_unreliable_duplicates", "router_stale", "router_unreliable_fallback")
    counted = (  # over the traffic window and its stragglers (clients that count them)
        {k: after.get(k, 0) - stats0.get(k, 0) for k in keys}
        if p2p is not None and hasattr(p2p.router, "settle_s")
        else {}
    )
    out = {
        "address": me.address.lower(),
        "transport": adapter.protocol if adapter is not None else "none",
        "ready_s": ready_s,
        "sent": sent,
        "recv": recv,
        "upload_Bps": app / window,
        "dtls_Bps": dtls / window,
        "cpu_pct": 100.0 * (cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime) / window,
        "rss_mib": cpu1.ru_maxrss / 1024.0,
        "stats": stats,
        "counted": counted,
    }
    await d.stop()
    return out


# --- the coordinator --------------------------------------------------------------


def start_realm(policy: str | None) -> tuple[subprocess.Popen[str], str]:
    cmd = [sys.executable, "-m", "dclcomms", "realm", "--host", "127.0.0.1", "--port", "0"]
    cmd += ["--flush-interval-s", "0.2"]
    if policy:
        cmd += ["--policy", policy]
    realm = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=dict(os.environ, LOG_LEVEL="WARNING"),
    )
    assert realm.stdout is not None
    line = realm.stdout.readline()
    if not line.startswith("dclcomms realm listening on "):
        realm.kill()
        raise SystemExit(f"realm did not start: {line!r}")
    return realm, line.split()[-1]


def one_run(
    transport: str, n: int, seconds: float, hz: float, seed: int, settled: bool = False
) -> dict[str, Any]:
    realm, url = start_realm("p2p" if transport == "p2p" else None)
    peers: list[subprocess.Popen[str]] = []
    try:
        for i in range(n):
            cmd = [sys.executable, HERE, "--peer", "--realm", url, "--n", str(n)]
            cmd += ["--transport", transport]
            cmd += ["--seed", str(seed * 1000 + i), "--x", str(4.0 * i)]
            cmd += ["--seconds", str(seconds), "--hz", str(hz)]
            cmd += ["--settled"] if settled else []
            peers.append(
                subprocess.Popen(
                    cmd,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    text=True,
                )
            )
        for p in peers:
            assert p.stdout is not None
            line = p.stdout.readline()
            if line.strip() != "READY":
                raise SystemExit(f"a peer failed before traffic: {line!r}")
        start_at = time.time() + 0.5
        for p in peers:
            assert p.stdin is not None
            p.stdin.write(f"GO {start_at}\n")
            p.stdin.flush()
        outs = []
        for p in peers:
            assert p.stdout is not None
            outs.append(json.loads(p.stdout.read()))
            p.wait(timeout=30)
    finally:
        for p in peers:
            if p.poll() is None:
                p.kill()
                p.wait()
        realm.terminate()
        try:
            realm.wait(timeout=20)
        except subprocess.TimeoutExpired:
            realm.kill()
            realm.wait()
    sent = {o["address"]: {int(k): t for k, t in o["sent"].items()} for o in outs}
    latencies = sorted(
        (t - sent[src][seq]) * 1000.0
        for o in outs
        for src, seq, t in o["recv"]
        if src in sent and seq in sent[src]
    )
    expected = sum(len(s) for s in sent.values()) * (n - 1)
    firsts = sum(len(o["recv"]) for o in outs)
    extra = sum(
        o["counted"].get("router_unreliable_duplicates", 0) + o["counted"].get("router_stale", 0)
        for o in outs
    )
    counted = transport == "p2p" and all(o["counted"] for o in outs) and firsts > 0
    fallback = sum(o["counted"].get("router_unreliable_fallback", 0) for o in outs)

    def pct(q: float) -> float:
        return latencies[min(int(q * len(latencies)), len(latencies) - 1)] if latencies else 0.0

    return {
        "transports": sorted({o["transport"] for o in outs}),
        "latency_p50_ms": pct(0.50),
        "latency_p99_ms": pct(0.99),
        "delivered": len(latencies) / expected if expected else 1.0,
        "upload_Bps_median": statistics.median(o["upload_Bps"] for o in outs),
        "upload_Bps_max": max(o["upload_Bps"] for o in outs),
        "dtls_Bps_median": statistics.median(o["dtls_Bps"] for o in outs),
        "dtls_Bps_max": max(o["dtls_Bps"] for o in outs),
        "ready_s_median": statistics.median(o["ready_s"] for o in outs),
        "ready_s_max": max(o["ready_s"] for o in outs),
        "peer_cpu_pct_median": statistics.median(o["cpu_pct"] for o in outs),
        "peer_rss_mib_max": max(o["rss_mib"] for o in outs),
        "links_median": statistics.median(o["stats"].get("links", 0) for o in outs),
        "unreliable_copies_per_delivery": (firsts + extra) / firsts if counted else None,
        "unreliable_fallback": fallback if counted else None,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[2, 3, 4, 5, 6, 7, 8])
    p.add_argument("--transports", nargs="+", default=["p2p", "ws-room"])
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--hz", type=float, default=10.0)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="n = 2, 1 s, 1 run")
    p.add_argument("--settled", action="store_true", help="P2P: traffic once every mesh settled")
    # one peer process (internal)
    p.add_argument("--peer", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--realm", help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    p.add_argument("--x", type=float, help=argparse.SUPPRESS)
    p.add_argument("--transport", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.peer:
        print(json.dumps(asyncio.run(peer(args))))
        return 0
    if args.quick:
        args.sizes, args.seconds, args.repeat = [2], 1.0, 1
    load = os.getloadavg()
    results: list[dict[str, Any]] = []
    for n in args.sizes:  # both transports per size, back to back (similar load)
        for transport in args.transports:
            runs = [
                one_run(transport, n, args.seconds, args.hz, seed, args.settled)
                for seed in range(args.repeat)
            ]
            row: dict[str, Any] = {"transport": transport, "peers": n, "runs": len(runs)}
            row["transports_seen"] = sorted({t for r in runs for t in r["transports"]})
            for key in runs[0]:
                if key != "transports":
                    values = [r[key] for r in runs if r[key] is not None]
                    row[key] = round(statistics.median(values), 4) if values else None
            results.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    print(
        json.dumps(
            {
                "bench": "p2p",
                "hz": args.hz,
                "seconds": args.seconds,
                "repeat": args.repeat,
                "settled": args.settled,
                "loadavg_before": [round(x, 2) for x in load],
                "loadavg_after": [round(x, 2) for x in os.getloadavg()],
                "results": results,
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
