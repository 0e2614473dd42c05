"""``dclcomms rooms``: a standalone RFC-5 WebSocket room service.

Serves ``/rooms/<roomId>`` (transports.md section 1) from the C++ server core,
plus ``/status`` and ``/rooms/status`` (JSON), ``/metrics`` (Prometheus) and
``/health/live``. SIGINT/SIGTERM stop it cleanly (every socket closed 1001).

With ``--nats URL --public-url ws://host:port --node-id ID`` it also announces itself
every ``--announce-interval`` seconds on ``dclcomms.transport.<ID>.status`` (JSON,
archipelago.md 6.3) so a core running :class:`dclcomms.nats.nodes.NodeBalancedWsRooms`
places islands on it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dclcomms
from dclcomms.errors import SubjectError
from dclcomms.nats.nodes import NodeStatus, check_node_id, status_subject
from dclcomms.ws import HttpRequest, Server, ServerConfig, metrics_text

_JSON = {"Content-Type": "application/json", "Access-Control-Allow-Origin": "*"}


def status_body(server: Server) -> dict[str, object]:
    """The ``/status`` document of the reference ws-room-service."""
    rooms = server.stats()["rooms"]
    return {
        "version": server.config.version,
        "currentTime": int(time.time() * 1000),
        "commitHash": server.config.commit_hash,
        "users": rooms["users"],
        "rooms": rooms["rooms"],
        "details": rooms["details"],
    }


def answer(server: Server, req: HttpRequest) -> None:
    """Answers one HTTP request of the standalone room service."""
    if req.method in ("GET", "HEAD") and req.path in ("/status", "/rooms/status"):
        body = json.dumps(status_body(server), separators=(",", ":")).encode()
        server.respond(req.request_id, 200, _JSON, body)
    elif req.method == "GET" and req.path == "/metrics":
        text = metrics_text(server.stats(), areas=("rooms",)).encode()
        headers = {"Content-Type": "text/plain; version=0.0.4", "Access-Control-Allow-Origin": "*"}
        server.respond(req.request_id, 200, headers, text)
    else:
        server.respond(req.request_id, 404, _JSON, b'{"error":"Not Found"}')


@dataclass(frozen=True)
class Announce:
    """Where and how a rooms node announces itself over NATS."""

    nats: tuple[str, ...]
    public_url: str
    node_id: str
    interval_s: float = 10.0


def node_status(server: Server, announce: Announce) -> NodeStatus:
    """This node's announcement (seats unlimited: rooms have a per-room cap only)."""
    rooms = server.stats()["rooms"]
    return NodeStatus(
        node_id=announce.node_id,
        kind="ws-room",
        url=announce.public_url,
        max_island_size=server.config.rooms_max_users,
        available_seats=-1,
        users_count=int(rooms["users"]),
        rooms=int(rooms["rooms"]),
        ts=int(time.time() * 1000),
    )


async def _announce_loop(server: Server, announce: Announce, nc: Any) -> None:
    subject = status_subject(announce.node_id)
    while True:
        try:
            await nc.publish(subject, node_status(server, announce).to_json())
            await nc.flush(timeout=announce.interval_s)
        except Exception as e:  # NATS away: nats-py reconnects; announce again next time
            print(f"dclcomms rooms: announcement failed: {e!r}", file=sys.stderr, flush=True)
        await asyncio.sleep(announce.interval_s)


async def serve(
    config: ServerConfig,
    *,
    ready: asyncio.Event | None = None,
    announce: Announce | None = None,
) -> None:
    """Runs the room service until cancelled or SIGINT/SIGTERM."""
    loop = asyncio.get_running_loop()
    nc: Any = None
    if announce is not None:
        import nats
        from nats.errors import NoServersError

        async def quiet(_e: Exception) -> None:
            pass  # nats-py reports through error_cb; retries are logged by the loop below

        try:
            nc = await nats.connect(
                list(announce.nats),
                name=f"dclcomms-rooms-{announce.node_id}",
                # bounded while connecting (nats-py would retry a dead list forever) ...
                max_reconnect_attempts=1,
                reconnect_time_wait=0.5,
                connect_timeout=2.0,
                error_cb=quiet,
            )
        except (NoServersError, TimeoutError) as e:
            raise OSError(f"cannot connect to NATS {list(announce.nats)}: {e!r}") from e
        # ... then unbounded once connected (options is read per attempt)
        nc.options["max_reconnect_attempts"] = -1
    server = Server(config)
    port = server.start()
    stop = asyncio.Event()
    announcer = (
        asyncio.create_task(_announce_loop(server, announce, nc), name="rooms-announce")
        if announce is not None
        else None
    )

    def drain() -> None:
        for ev in server.poll():
            if isinstance(ev, HttpRequest):
                answer(server, ev)

    loop.add_reader(server.fileno(), drain)
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):  # not the main thread
            pass
    print(f"dclcomms rooms: listening on ws://{config.host}:{port}/rooms/<roomId>", flush=True)
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        if announcer is not None:
            announcer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await announcer
        if nc is not None:
            await nc.close()
        loop.remove_reader(server.fileno())
        for sig in installed:
            loop.remove_signal_handler(sig)
        await asyncio.to_thread(server.stop)
        print("dclcomms rooms: stopped", flush=True)


def main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="dclcomms rooms", description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--io-threads", type=int, default=1)
    p.add_argument("--max-users", type=int, default=100, help="members per room (default 100)")
    p.add_argument("--handshake-timeout-ms", type=int, default=10_000)
    p.add_argument(
        "--secret",
        default=os.environ.get("WS_ROOM_SERVICE_SECRET") or None,
        help="HS256 secret of ?access_token= (default: $WS_ROOM_SERVICE_SECRET)",
    )
    p.add_argument("--require-token", action="store_true", help="reject joins without a token")
    p.add_argument("--commit-hash", default=os.environ.get("COMMIT_HASH", ""))
    p.add_argument(
        "--nats",
        action="append",
        metavar="URL",
        help="announce this node on NATS (repeat for several servers)",
    )
    p.add_argument("--public-url", help="ws(s)://host:port clients reach this node at")
    p.add_argument("--node-id", help="node id in dclcomms.transport.<node>.status")
    p.add_argument(
        "--announce-interval", type=float, default=10.0, help="seconds between announcements"
    )
    p.add_argument(
        "--sender-max-msgs-per-s",
        type=int,
        default=0,
        help="sender token bucket, messages/s (0 = off): over it unreliable updates are "
        "dropped and a reliable one closes the sender 4009",
    )
    p.add_argument(
        "--sender-max-bytes-per-s", type=int, default=0, help="sender token bucket, bytes/s"
    )
    ns = p.parse_args(list(argv))
    if ns.sender_max_msgs_per_s < 0 or ns.sender_max_bytes_per_s < 0:
        p.error("--sender-max-msgs-per-s and --sender-max-bytes-per-s must be >= 0")
    if ns.require_token and not ns.secret:
        p.error("--require-token needs --secret or WS_ROOM_SERVICE_SECRET")
    announce = None
    if ns.nats:
        if not (ns.public_url and ns.node_id):
            p.error("--nats needs --public-url and --node-id")
        try:
            check_node_id(ns.node_id)
        except SubjectError as e:
            p.error(f"{e} [{e.code}]")
        if not ns.public_url.startswith(("ws://", "wss://")):
            p.error("--public-url must be ws:// or wss://")
        if ns.announce_interval <= 0:
            p.error("--announce-interval must be > 0")
        announce = Announce(tuple(ns.nats), ns.public_url, ns.node_id, ns.announce_interval)
    config = ServerConfig(
        host=ns.host,
        port=ns.port,
        io_threads=ns.io_threads,
        connector=False,
        rooms_max_users=ns.max_users,
        rooms_handshake_timeout_ms=ns.handshake_timeout_ms,
        ws_room_secret=ns.secret,
        ws_room_require_token=ns.require_token,
        rooms_sender_max_msgs_per_s=ns.sender_max_msgs_per_s,
        rooms_sender_max_bytes_per_s=ns.sender_max_bytes_per_s,
        version=dclcomms.__version__,
        commit_hash=ns.commit_hash,
    )
    try:
        asyncio.run(serve(config, announce=announce))
    except dclcomms.ConfigError as e:
        print(f"dclcomms rooms: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"dclcomms rooms: cannot start: {e}", file=sys.stderr)
        return 1
    return 0
