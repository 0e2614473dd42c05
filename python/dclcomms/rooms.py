"""``dclcomms rooms``: a standalone RFC-5 WebSocket room service.

Serves ``/rooms/<roomId>`` (transports.md section 1) from the C++ server core,
plus ``/status`` and ``/rooms/status`` (JSON), ``/metrics`` (Prometheus) and
``/health/live``. SIGINT/SIGTERM stop it cleanly (every socket closed 1001).

With ``--nats URL --public-url ws://host:port --node-id ID`` it also announces itself
every ``--transport-node-interval-s`` seconds (the core's setting of the same name) on
``dclcomms.transport.<ID>.status`` (JSON, archipelago.md 6.3) so a core running
:class:`dclcomms.nats.nodes.NodeBalancedWsRooms` places islands on it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dclcomms
from dclcomms.clock import now_ms
from dclcomms.config import SETTINGS, RealmConfig, add_arguments, config_from_args
from dclcomms.errors import SubjectError
from dclcomms.http import status_document
from dclcomms.nats.nodes import NodeStatus, check_node_id, status_subject
from dclcomms.shutdown import stop_on_signals
from dclcomms.ws import HttpRequest, RoomMessage, Server, ServerConfig, metrics_text

_JSON = {"Content-Type": "application/json", "Access-Control-Allow-Origin": "*"}


def status_body(server: Server) -> dict[str, object]:
    """The ``/status`` document of the reference ws-room-service (also the realm's
    ``/rooms/status``)."""
    rooms = server.stats()["rooms"]
    return status_document(
        commit_hash=server.config.commit_hash,
        version=server.config.version,
        users=int(rooms["users"]),
        rooms=int(rooms["rooms"]),
        details=list(rooms["details"]),
    )


def answer(server: Server, req: HttpRequest) -> None:
    """Answers one HTTP request of the standalone room service."""
    if req.method in ("GET", "HEAD") and req.path in ("/status", "/rooms/status"):
        body = json.dumps(status_body(server), separators=(",", ":")).encode()
        server.respond(req.request_id, 200, _JSON, body)
    elif req.method == "GET" and req.path == "/metrics":
        text = metrics_text(server.stats(), areas=("rooms", "server")).encode()
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
    transport_node_interval_s: float = 10.0


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
        ts=now_ms(),
    )


async def _announce_loop(server: Server, announce: Announce, nc: Any) -> None:
    subject = status_subject(announce.node_id)
    while True:
        try:
            await nc.publish(subject, node_status(server, announce).to_json())
            await nc.flush(timeout=announce.transport_node_interval_s)
        except Exception as e:  # NATS away: nats-py reconnects; announce again next time
            print(f"dclcomms rooms: announcement failed: {e!r}", file=sys.stderr, flush=True)
        await asyncio.sleep(announce.transport_node_interval_s)


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
    taps: Any = None
    if nc is not None:  # the bridge reads and writes these rooms over NATS (docs/bridge.md)
        from dclcomms.bridge.nats import NatsRoomTaps

        taps = await NatsRoomTaps(server, nc).start()
    announcer = (
        asyncio.create_task(_announce_loop(server, announce, nc), name="rooms-announce")
        if announce is not None
        else None
    )

    def drain() -> None:
        for ev in server.poll():
            if isinstance(ev, HttpRequest):
                answer(server, ev)
            elif isinstance(ev, RoomMessage) and taps is not None:
                taps.deliver(ev.room, ev.sender, ev.body, ev.unreliable, ev.received_ms, ev.scene)

    loop.add_reader(server.fileno(), drain)
    print(f"dclcomms rooms: listening on ws://{config.host}:{port}/rooms/<roomId>", flush=True)
    if ready is not None:
        ready.set()
    try:
        with stop_on_signals(stop.set):  # none off the main thread: ``stop`` ends it there
            await stop.wait()
    finally:
        if announcer is not None:
            announcer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await announcer
        if taps is not None:
            await taps.aclose()
        if nc is not None:
            await nc.close()
        loop.remove_reader(server.fileno())
        await asyncio.to_thread(server.stop)
        print("dclcomms rooms: stopped", flush=True)


#: Settings that are no server field but that ``dclcomms rooms`` reads (the announcement
#: period is the core's ``transport_node_interval_s``: one setting for both sides).
_ROOMS_EXTRA = ("commit_hash", "transport_node_interval_s")
#: This command's own defaults: it listens on 127.0.0.1 unless told otherwise.
_DEFAULTS = {"host": "127.0.0.1"}
#: Server fields of every role (the rooms' own are those named rooms_* / ws_room_*): where
#: it listens, its threads and frames, and the connection admission and plain-HTTP limits
#: every TCP connection of the node is held to (a rooms node is as exposed as a realm).
_COMMON = (
    "host",
    "port",
    "io_threads",
    "auth_threads",
    "max_frame_bytes",
    "max_connections",
    "max_unauthenticated_per_ip",
    "unauthenticated_evict_min_age_ms",
    "http_max_body_bytes",
    "http_keep_alive_ms",
)


def rooms_settings() -> tuple[str, ...]:
    """The settings ``dclcomms rooms`` takes (flags, env, ``--config``): derived from the
    server's fields, so a new ``rooms_*`` limit becomes a flag here without an edit."""
    server = {name for name, *_ in ServerConfig.fields()}
    return tuple(
        s.name
        for s in SETTINGS
        if s.name in _ROOMS_EXTRA
        or (s.name in server and (s.name in _COMMON or s.name.startswith(("rooms_", "ws_room_"))))
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dclcomms rooms", description=__doc__.splitlines()[0])
    add_arguments(p, command="rooms", only=rooms_settings(), defaults=_DEFAULTS)
    p.add_argument(
        "--nats",
        action="append",
        metavar="URL",
        help="announce this node on NATS (repeat for several servers)",
    )
    p.add_argument("--public-url", help="ws(s)://host:port clients reach this node at")
    p.add_argument("--node-id", help="node id in dclcomms.transport.<node>.status")
    return p


def settings_from_flags(ns: argparse.Namespace) -> RealmConfig:
    """The settings of parsed flags, env and ``--config`` (ConfigError if invalid)."""
    return config_from_args(ns, defaults=_DEFAULTS)


def config_from_flags(ns: argparse.Namespace) -> ServerConfig:
    """The server settings of parsed flags, env and ``--config`` (ConfigError if invalid)."""
    return settings_from_flags(ns).server_config("rooms")


def main(argv: Sequence[str]) -> int:
    p = build_parser()
    ns = p.parse_args(list(argv))
    try:  # the settings table's flags, env and --config
        settings = settings_from_flags(ns)
        config = settings.server_config("rooms")
    except dclcomms.ConfigError as e:
        p.error(f"{e} [{e.code}]")
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
        announce = Announce(
            tuple(ns.nats), ns.public_url, ns.node_id, settings.transport_node_interval_s
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
