"""``dclcomms bridge``: API keys and the bridge as its own process.

``dclcomms bridge keys create --name N --scope S [--scope S ...] [--ttl DURATION]
[--rate R] [--max-bytes B]`` prints the new key (shown once) and its record as JSON;
``keys list`` prints every key (never a secret); ``keys revoke ID``. Keys live in the
gatekeeper's database (``--database`` / ``GATEKEEPER_DATABASE_URL``, default the SQLite
file under ``--data-dir``).

``dclcomms bridge serve --nats URL [--host H] [--port P]`` serves ``/bridge`` in a NATS
deployment: the rooms run in other processes (``dclcomms rooms --nats``, realms with the
gatekeeper's scene rooms) and travel on ``dclcomms.bridge.room.<room>.out|in``; the /bus's
global topics on the realms' pub/sub subjects (``--subjects``, their scheme). Credentials
are checked against the gatekeeper's database and its owner-or-admin resolver, configured
with the gatekeeper's flags and environment variables (docs/bridge.md). It also answers
``/metrics``, ``/status`` and ``/health/live``. Errors print
``dclcomms bridge: error: <message> [<code>]`` and exit 2.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import sys
from collections.abc import Sequence
from typing import Any

from dclcomms.errors import BridgeError, ConfigError
from dclcomms.shutdown import stop_on_signals

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd]?)")
_UNIT = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """Seconds of ``90``, ``90s``, ``15m``, ``12h``, ``30d``."""
    m = _DURATION.fullmatch(text.strip())
    if m is None or float(m.group(1)) <= 0:
        raise BridgeError(f"not a duration (e.g. 3600, 15m, 12h, 30d): {text!r}", code="bad_scope")
    return float(m.group(1)) * _UNIT[m.group(2)]


def _db_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--database",
        default=os.environ.get("GATEKEEPER_DATABASE_URL") or None,
        metavar="URL",
        help="the gatekeeper database: postgresql://… or sqlite:///path "
        "(env GATEKEEPER_DATABASE_URL; default: SQLite under --data-dir)",
    )
    p.add_argument(
        "--data-dir",
        default=os.environ.get("DCLCOMMS_DATA_DIR") or None,
        metavar="DIR",
        help="directory of the default SQLite file (env DCLCOMMS_DATA_DIR)",
    )


def _store(ns: argparse.Namespace) -> Any:
    from dclcomms.bridge.keys import SqlKeyStore

    return SqlKeyStore(ns.database, data_dir=ns.data_dir)


def _create(ns: argparse.Namespace) -> int:
    store = _store(ns)
    try:
        key, record = store.create(
            ns.name,
            ns.scope,
            ttl_s=None if ns.ttl is None else parse_duration(ns.ttl),
            rate=ns.rate,
            max_bytes=ns.max_bytes,
        )
    finally:
        store.close()
    print(json.dumps({"key": key, **record.to_json()}, indent=2))
    return 0


def _list(ns: argparse.Namespace) -> int:
    store = _store(ns)
    try:
        print(json.dumps([r.to_json() for r in store.list()], indent=2))
    finally:
        store.close()
    return 0


def _revoke(ns: argparse.Namespace) -> int:
    store = _store(ns)
    try:
        print(json.dumps(store.revoke(ns.id).to_json(), indent=2))
    finally:
        store.close()
    return 0


# `bridge serve` settings that configure the gatekeeper's parts it uses (database,
# owner-or-admin resolver, authoritative server, room naming): the gatekeeper's flag
# names and environment variables (dclcomms.gatekeeper.config.ENV).
GATEKEEPER_SETTINGS = (
    "lambdas_url",
    "worlds_url",
    "places_url",
    "moderation_file",
    "resolver_timeout_s",
)


def gatekeeper_config(ns: argparse.Namespace) -> Any:
    """The :class:`~dclcomms.gatekeeper.config.GatekeeperConfig` of ``bridge serve``: its
    flags over the gatekeeper's environment variables, like ``dclcomms gatekeeper``."""
    from dclcomms.gatekeeper import config as gk_config

    overrides: dict[str, Any] = {
        "database": ns.database,
        "data_dir": ns.data_dir,
        "authoritative_server_address": ns.authoritative_server,
        "scene_room_prefix": ns.scene_room_prefix,
        "world_room_prefix": ns.world_room_prefix,
    }
    for name in GATEKEEPER_SETTINGS:
        v = getattr(ns, name, None)
        overrides[name] = gk_config._convert(name, v) if isinstance(v, str) else v
    return gk_config.from_env(**overrides)


async def serve(ns: argparse.Namespace, ready: asyncio.Event | None = None) -> None:
    import nats

    from dclcomms import http as dhttp
    from dclcomms import ws
    from dclcomms.bridge.authority import open_authority
    from dclcomms.bridge.gateway import BridgeGateway
    from dclcomms.bridge.keys import SqlKeyStore
    from dclcomms.bridge.nats import NatsRoomLink
    from dclcomms.bridge.scopes import RoomNames
    from dclcomms.metrics import CONTENT_TYPE, Registry

    loop = asyncio.get_running_loop()
    gconf = gatekeeper_config(ns)
    registry = Registry()
    keys = SqlKeyStore(gconf.database or None, data_dir=gconf.data_dir or None)
    try:
        authority = open_authority(gconf, keys.store, registry)
    except BaseException:
        keys.close()
        raise
    try:
        nc = await nats.connect(list(ns.nats), name="dclcomms-bridge", connect_timeout=2.0)
    except Exception as e:
        await authority.close()
        keys.close()
        raise ConfigError(f"cannot connect to NATS {ns.nats}: {e!r}", code="bad_value") from e
    link = await NatsRoomLink(nc, interval_s=ns.lease_interval).start()
    # the /bus's global topics: the realm's pub/sub subjects, in its scheme (--subjects)
    from dclcomms.bridge.bus import PubSubBusLink
    from dclcomms.nats.processes import connect_pubsub

    try:
        bus_pubsub = await connect_pubsub(ns.nats, ns.subjects, "dclcomms-bridge-bus", registry)
    except Exception as e:
        await link.aclose()
        with contextlib.suppress(Exception):
            await nc.drain()
        await authority.close()
        keys.close()
        raise ConfigError(f"cannot connect to NATS {ns.nats}: {e!r}", code="bad_value") from e
    bus = PubSubBusLink(bus_pubsub)
    # the gatekeeper's scene rooms are LiveKit rooms when it is configured with LiveKit
    # (LIVEKIT_HOST, LIVEKIT_API_KEY, LIVEKIT_API_SECRET): read and written there
    from dclcomms.bridge.links import SceneRoutedLink
    from dclcomms.bridge.livekit import scene_room_link

    livekit = scene_room_link(gconf)
    room_link: Any = link if livekit is None else SceneRoutedLink(link, livekit)
    server = ws.Server(
        ws.ServerConfig(host=ns.host, port=ns.port, connector=False, rooms=False, bridge=True)
    )
    port = server.start()
    registry.collector(lambda: ws.server_metrics(server.stats(), areas=("bridge",)))
    tasks: set[asyncio.Task[Any]] = set()

    def spawn(coro: Any) -> asyncio.Task[Any]:
        t: asyncio.Task[Any] = asyncio.ensure_future(coro)
        tasks.add(t)
        t.add_done_callback(tasks.discard)
        return t

    gateway = BridgeGateway(
        server,
        room_link,
        registry,
        keys=keys,
        names=RoomNames(gconf.scene_room_prefix, gconf.world_room_prefix),
        authority=authority,
        authoritative_server=gconf.authoritative_server_address,
        spawn=spawn,
        bus=bus,
    )

    def answer(req: ws.HttpRequest) -> None:
        if req.path == "/metrics":
            server.respond(
                req.request_id, 200, {"Content-Type": CONTENT_TYPE}, registry.render().encode()
            )
        elif req.path == "/status":
            body = json.dumps(
                dhttp.status_document(commit_hash="", bridgeSessions=len(gateway.sessions))
            )
            server.respond(req.request_id, 200, {"Content-Type": "application/json"}, body.encode())
        else:
            server.respond(
                req.request_id, 404, {"Content-Type": "application/json"}, b'{"error":"Not Found"}'
            )

    def drain() -> None:
        for ev in server.poll():
            if isinstance(ev, ws.BridgeFrame):
                gateway.on_frame(ev.id, ev.text)
            elif isinstance(ev, ws.BridgeOpened):
                gateway.on_opened(ev.id)
            elif isinstance(ev, ws.BridgeClosed):
                gateway.on_closed(ev.id)
            elif isinstance(ev, ws.HttpRequest):
                answer(ev)

    loop.add_reader(server.fileno(), drain)
    stop = asyncio.Event()
    print(f"dclcomms bridge: listening on ws://{ns.host}:{port}/bridge", flush=True)
    if ready is not None:
        ready.set()
    try:
        with stop_on_signals(stop.set):  # none off the main thread: ``stop`` ends it there
            await stop.wait()
    finally:
        loop.remove_reader(server.fileno())
        gateway.close()
        await link.aclose()
        if livekit is not None:
            await livekit.aclose()
        await bus_pubsub.aclose()
        with contextlib.suppress(Exception):
            await nc.drain()
        await asyncio.to_thread(server.stop)
        await authority.close()
        keys.close()
        print("dclcomms bridge: stopped", flush=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dclcomms bridge",
        description="The third-party server bridge: API keys, and /bridge over NATS.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    keys = sub.add_parser("keys", help="create, list and revoke API keys").add_subparsers(
        dest="keys_command", required=True, metavar="ACTION"
    )
    c = keys.add_parser("create", help="create a key (printed once)")
    _db_arguments(c)
    c.add_argument("--name", required=True, help="the key's name; its identity is server:<name>")
    c.add_argument(
        "--scope",
        action="append",
        required=True,
        help="island:<id>, island:*, scene:<realm>:<sceneId> or world:<name>.eth (repeat)",
    )
    c.add_argument("--ttl", help="expires after this long (e.g. 3600, 15m, 12h, 30d)")
    c.add_argument("--rate", type=float, default=100.0, help="messages/s it may publish")
    c.add_argument("--max-bytes", type=int, default=16384, help="payload bytes per message")
    c.set_defaults(run=_create)
    li = keys.add_parser("list", help="list every key (never a secret)")
    _db_arguments(li)
    li.set_defaults(run=_list)
    r = keys.add_parser("revoke", help="revoke a key by id")
    _db_arguments(r)
    r.add_argument("id")
    r.set_defaults(run=_revoke)
    s = sub.add_parser("serve", help="serve /bridge over NATS (rooms in other processes)")
    _db_arguments(s)
    s.add_argument("--nats", action="append", required=True, metavar="URL")
    from dclcomms.nats.subjects import SCHEMES

    s.add_argument(
        "--subjects",
        choices=sorted(SCHEMES),
        default="native",
        help="the realm's NATS subject scheme (its --subjects): the /bus global topics",
    )
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=0)
    s.add_argument(
        "--authoritative-server",
        "--authoritative-server-address",
        default=None,
        help="wallet allowed on every scene (env AUTHORITATIVE_SERVER_ADDRESS)",
    )
    s.add_argument("--scene-room-prefix", default=None, help="(env SCENE_ROOM_PREFIX)")
    s.add_argument("--world-room-prefix", default=None, help="(env WORLD_ROOM_PREFIX)")
    # the gatekeeper's owner-or-admin resolver, configured as for `dclcomms gatekeeper`
    from dclcomms.gatekeeper.config import ENV

    for name in GATEKEEPER_SETTINGS:
        env = ENV.get(name)
        s.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            default=None,
            help=f"as dclcomms gatekeeper (env {env})" if env else "as dclcomms gatekeeper",
        )
    s.add_argument("--lease-interval", type=float, default=10.0, help=argparse.SUPPRESS)
    s.set_defaults(run=lambda ns: asyncio.run(serve(ns)) or 0)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    ns = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        rc: int = ns.run(ns)
        return rc
    except (BridgeError, ConfigError) as e:
        print(f"dclcomms bridge: error: {e} [{e.code}]", file=sys.stderr)
        return 2


__all__ = ["main", "parse_duration", "serve"]
