"""Benchmarks of the third-party server bridge (docs/bridge.md, docs/performance.md).

* fan-in: 100 players in one room (``bench/ws_load.cpp``: real secp256k1 identities,
  each keeping K updates in flight), a server reading the room through ``/bridge``
  (:class:`dclcomms.bridge.BridgeClient` in this process): messages/s the server
  reads, the room's own delivered updates/s with and without the reader (the tap's
  cost), the server process's CPU share;
* injection: a server injects packets into a scene room (the gatekeeper's built-in
  ``/scene-rooms/`` registry, joined with a room token) through ``/bridge``; a member
  (an RFC-5 client in this process, so one clock) measures publish -> receive latency,
  p50/p99.

The server process is a ``dclcomms.ws.Server`` with the bridge gateway and its rooms in
the same process (the embedded realm's arrangement), drained by an asyncio loop. Prints
one JSON document: per scenario the median of the repetitions, plus every run.

    python bench/bench_bridge.py            # 10 s runs, 3 repetitions
    python bench/bench_bridge.py --quick    # smoke: 1 s, 1 repetition
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import resource
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ws import ROOT, ServerProc, build_load, free_port, median_of

RFC5 = "decentraland.kernel.comms.rfc5.WsPacket"
ROOM_SECRET = "bench-room-secret"  # scene rooms always require a room token


async def _serve(port: int, max_users: int) -> None:
    from dclcomms import ws
    from dclcomms.bridge import BridgeGateway, LocalRoomLink, MemoryKeyStore
    from dclcomms.metrics import Registry

    server = ws.Server(
        ws.ServerConfig(
            port=port,
            rooms_max_users=max_users,
            bridge=True,
            scene_rooms=True,
            ws_room_secret=ROOM_SECRET,
        )
    )
    server.start()
    loop = asyncio.get_running_loop()
    keys = MemoryKeyStore()
    key, _ = keys.create("bench", ["island:*", "scene:bench:s1"], rate=1e6, max_bytes=16384)
    link = LocalRoomLink(server)
    gateway = BridgeGateway(server, link, Registry(), keys=keys)

    def drain() -> None:
        for ev in server.poll():
            if isinstance(ev, ws.RoomMessage):
                link.deliver(ev.room, ev.sender, ev.body, ev.unreliable, ev.received_ms, ev.scene)
            elif isinstance(ev, ws.BridgeFrame):
                gateway.on_frame(ev.id, ev.text)
            elif isinstance(ev, ws.BridgeOpened):
                gateway.on_opened(ev.id)
            elif isinstance(ev, ws.BridgeClosed):
                gateway.on_closed(ev.id)
            elif isinstance(ev, ws.HttpRequest):
                body = json.dumps({"stats": server.stats(), "drained": {}}).encode()
                server.respond(ev.request_id, 200, {"Content-Type": "application/json"}, body)

    loop.add_reader(server.fileno(), drain)
    print("ready", flush=True)
    print(key, flush=True)
    await loop.run_in_executor(None, sys.stdin.read)
    server.stop()


class BridgeServerProc(ServerProc):
    def __init__(self, port: int, max_users: int) -> None:
        self.port = port
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(port), str(max_users)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "ready"
        self.key = self.proc.stdout.readline().strip()


def run_load_async(load: Path, port: int, **kw: Any) -> subprocess.Popen[str]:
    args = [str(load), "--port", str(port)]
    for k, v in kw.items():
        args += [f"--{k}", str(v)]
    return subprocess.Popen(args, stdout=subprocess.PIPE, text=True)


async def fan_in_run(
    load: Path, clients: int, inflight: int, duration: float, read: bool
) -> dict[str, Any]:
    from dclcomms.bridge import BridgeClient

    srv = BridgeServerProc(free_port(), max(100, clients))
    try:
        client = BridgeClient(f"ws://127.0.0.1:{srv.port}/bridge", key=srv.key, queue=10**7)
        await client.connect()
        sub = await client.subscribe("island", "bench-0") if read else None
        proc = run_load_async(
            load,
            srv.port,
            mode="rooms",
            rooms=1,
            clients=clients,
            inflight=inflight,
            duration=duration,
            size=100,
        )
        assert proc.stdout is not None
        result: dict[str, Any] = {}
        measuring = asyncio.Event()
        window: dict[str, float] = {}

        def read_lines() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                doc = json.loads(line)
                if doc.get("event") == "measuring":
                    window["cpu0"], window["t0"] = srv.cpu_s(), time.monotonic()
                    loop.call_soon_threadsafe(measuring.set)
                elif "mode" in doc:
                    window["cpu1"], window["t1"] = srv.cpu_s(), time.monotonic()
                    result.update(doc)

        loop = asyncio.get_running_loop()
        reader = loop.run_in_executor(None, read_lines)
        await measuring.wait()
        n0 = sub.queue.qsize() + sub.dropped if sub else 0
        await reader
        proc.wait(timeout=60)
        n1 = sub.queue.qsize() + sub.dropped if sub else 0
        elapsed = window["t1"] - window["t0"]
        result["server_cpu_share"] = round((window["cpu1"] - window["cpu0"]) / elapsed, 3)
        result["bridge_read_msgs_per_s"] = round((n1 - n0) / elapsed, 1) if sub else 0.0
        result["server_rss_kib"], result["server_peak_rss_kib"] = srv.rss_kib()
        st = srv.stats()["stats"]
        result["tapped_messages"] = st["rooms"]["tapped_messages"]
        result["bridge_frames_sent"] = st["bridge"]["frames_sent"]
        await client.close()
        return result
    finally:
        srv.close()


async def _scene_member(port: int, room: str) -> aiohttp.ClientWebSocketResponse:
    """A member of the scene room ``/scene-rooms/<room>`` (a room token, as the gatekeeper
    mints it)."""
    from dclcomms import codec
    from dclcomms.auth import Identity
    from dclcomms.gatekeeper.tokens import ws_room_token

    ident = Identity.generate(seed=1)
    token = ws_room_token(ROOM_SECRET, address=ident.address.lower(), room=room)
    session = aiohttp.ClientSession()
    ws = await session.ws_connect(f"ws://127.0.0.1:{port}/scene-rooms/{room}?access_token={token}")
    ws._bench_session = session  # type: ignore[attr-defined]
    await ws.send_bytes(codec.encode(RFC5, {"peerIdentification": {"address": ident.address}}))
    ch = codec.decode(RFC5, (await ws.receive(10)).data)["challengeMessage"]
    chain = ident.sign_challenge(ch["challengeToSign"])
    await ws.send_bytes(codec.encode(RFC5, {"signedChallengeForServer": {"authChainJson": chain}}))
    assert "welcomeMessage" in codec.decode(RFC5, (await ws.receive(10)).data)
    return ws


async def injection_run(count: int, rate: float) -> dict[str, Any]:
    from dclcomms import codec
    from dclcomms.bridge import BridgeClient

    srv = BridgeServerProc(free_port(), 100)
    try:
        member = await _scene_member(srv.port, "bench:s1")
        async with BridgeClient(f"ws://127.0.0.1:{srv.port}/bridge", key=srv.key) as client:
            sub = await client.subscribe("scene", "bench:s1")
            lat: list[float] = []

            async def receive() -> None:
                while len(lat) < count:
                    msg = await member.receive(10)
                    p = codec.decode(RFC5, msg.data)
                    if "peerUpdateMessage" not in p:
                        continue
                    raw = base64.b64decode(p["peerUpdateMessage"]["body"])
                    body = codec.decode(codec.RFC4_PACKET, raw)
                    sent = struct.unpack("<d", base64.b64decode(body["scene"]["data"]))[0]
                    lat.append((time.perf_counter() - sent) * 1000)

            task = asyncio.create_task(receive())
            for _ in range(count):
                data = base64.b64encode(struct.pack("<d", time.perf_counter())).decode()
                await sub.send({"scene": {"sceneId": "s1", "data": data}})
                await asyncio.sleep(1 / rate)
            await asyncio.wait_for(task, 30)
        await member.close()
        await member._bench_session.close()  # type: ignore[attr-defined]
        q = statistics.quantiles(lat, n=100)
        return {
            "injected": count,
            "rate_per_s": rate,
            "latency_ms_p50": round(statistics.median(lat), 3),
            "latency_ms_p99": round(q[98], 3),
            "latency_ms_max": round(max(lat), 3),
        }
    finally:
        srv.close()


async def amain(ns: argparse.Namespace) -> dict[str, Any]:
    reps, duration = (1, 1.0) if ns.quick else (ns.reps, ns.duration)
    load = build_load(ns.build_dir)
    results: dict[str, Any] = {"reps": reps, "duration_s": duration, "scenarios": {}}
    scen = results["scenarios"]
    clients = 20 if ns.quick else 100
    for inflight in (1, 4):
        for read in (False, True):
            name = f"fan_in_1x{clients}_inflight{inflight}_{'reader' if read else 'no_reader'}"
            runs = [await fan_in_run(load, clients, inflight, duration, read) for _ in range(reps)]
            scen[name] = {"median": median_of(runs), "runs": runs}
    count = 100 if ns.quick else 2000
    runs = [await injection_run(count, 200.0) for _ in range(reps)]
    scen[f"injection_{count}_at_200hz"] = {"median": median_of(runs), "runs": runs}
    results["driver_peak_rss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return results


def main(argv: list[str]) -> int:
    if argv and argv[0] == "--serve":
        asyncio.run(_serve(int(argv[1]), int(argv[2])))
        return 0
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="1 s runs, 1 repetition, small counts")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--build-dir", type=Path, default=ROOT / "build" / "bench")
    ns = p.parse_args(argv)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    print(json.dumps(asyncio.run(amain(ns)), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
