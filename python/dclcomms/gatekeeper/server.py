"""Assembling a gatekeeper, and the standalone ``dclcomms gatekeeper`` process.

:func:`build` makes a :class:`~dclcomms.gatekeeper.app.Gatekeeper` from a
:class:`~dclcomms.gatekeeper.config.GatekeeperConfig`: the store (migrated at
start), the resolver (HTTP when a lambdas/worlds/places URL is set, else the
static table), and the scene rooms (LiveKit when configured, else the built-in
``/scene-rooms/<room>`` of the given C++ server). ``dclcomms realm`` calls it
with its own server; :class:`GatekeeperServer` runs one on its own port.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable, Collection
from typing import Any

from dclcomms import ws
from dclcomms.gatekeeper.app import Gatekeeper
from dclcomms.gatekeeper.config import GatekeeperConfig
from dclcomms.gatekeeper.resolver import HttpResolver, Resolver, StaticResolver
from dclcomms.gatekeeper.rooms import LiveKitRooms, SceneRooms, WsRooms
from dclcomms.gatekeeper.storage import Store
from dclcomms.http import Request, Response, Router, text_response
from dclcomms.metrics import CONTENT_TYPE, Registry

log = logging.getLogger("dclcomms.gatekeeper")


def build_resolver(config: GatekeeperConfig, registry: Registry) -> Resolver:
    if config.lambdas_url or config.worlds_url or config.places_url:
        return HttpResolver(
            lambdas_url=config.lambdas_url,
            worlds_url=config.worlds_url,
            places_url=config.places_url,
            timeout_s=config.resolver_timeout_s,
            registry=registry,
        )
    if config.moderation_file:
        return StaticResolver.from_file(config.moderation_file)
    return StaticResolver()


def build_rooms(config: GatekeeperConfig, server: Any, ws_base_url: str, secret: str) -> SceneRooms:
    if config.livekit_enabled:
        return LiveKitRooms(config.livekit_host, config.livekit_api_key, config.livekit_api_secret)
    return WsRooms(
        server, config.ws_room_url or ws_base_url, secret, token_ttl_s=config.token_ttl_s
    )


async def build(
    config: GatekeeperConfig,
    *,
    server: Any,
    ws_base_url: str,
    ws_room_secret: str,
    registry: Registry,
    deny_list: Callable[[], Collection[str]] | None = None,
    on_platform_ban: Callable[[str], Awaitable[None] | None] | None = None,
    on_platform_unban: Callable[[str], Awaitable[None] | None] | None = None,
) -> Gatekeeper:
    """A gatekeeper whose database is open and migrated (raises StorageError/ConfigError)."""
    store = await asyncio.to_thread(
        Store.open, config.database or None, data_dir=config.data_dir or None
    )
    try:
        resolver = build_resolver(config, registry)
    except BaseException:
        store.close()
        raise
    rooms = build_rooms(config, server, ws_base_url, ws_room_secret)
    log.info(
        "gatekeeper ready",
        extra={"database": store.url, "rooms": rooms.kind, "resolver": type(resolver).__name__},
    )
    gk = Gatekeeper(
        config,
        store,
        rooms,
        resolver,
        registry=registry,
        deny_list=deny_list,
        on_platform_ban=on_platform_ban,
        on_platform_unban=on_platform_unban,
    )
    await gk.reload()  # token requests read bans from memory from the first one on
    return gk


def _ws_base(host: str, port: int) -> str:
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"ws://{host}:{port}"


class GatekeeperServer:
    """``dclcomms gatekeeper``: the routes, /metrics, /health/live and the built-in scene
    rooms on one port."""

    def __init__(self, config: GatekeeperConfig, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.config = config
        self.host = host
        self.requested_port = port
        self.registry = Registry()
        self.router = Router()
        self.server: Any = None
        self.gatekeeper: Gatekeeper | None = None
        self.port = 0
        self._stop = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._deny: Any = None

    @property
    def url(self) -> str:
        return "http" + _ws_base(self.host, self.port)[2:]

    async def start(self) -> GatekeeperServer:
        secret = self.config.ws_room_secret or secrets.token_urlsafe(32)
        self.server = ws.Server(
            ws.ServerConfig(
                host=self.host,
                port=self.requested_port,
                connector=False,
                rooms=False,
                scene_rooms=True,
                bus=False,
                ws_room_secret=secret,
                commit_hash=self.config.commit_hash,
            )
        )
        self.port = int(self.server.start())
        try:
            deny = None
            if self.config.deny_list_url:
                from dclcomms.realm.denylist import DenyList

                self._deny = DenyList(
                    self.config.deny_list_url,
                    _NoServer(),
                    self.registry,
                    deny_list_refresh_s=self.config.deny_list_refresh_s,
                )
                deny_obj = self._deny
                deny = lambda: deny_obj.addresses  # noqa: E731
            self.gatekeeper = await build(
                self.config,
                server=self.server,
                ws_base_url=_ws_base(self.host, self.port),
                ws_room_secret=secret,
                registry=self.registry,
                deny_list=deny,
            )
        except BaseException:
            server, self.server = self.server, None
            server.stop()
            raise
        self.gatekeeper.routes(self.router)
        self.router.add("/metrics", self._h_metrics)
        self.router.add("/health/live", lambda _r: text_response("alive"), methods=None)
        loop = asyncio.get_running_loop()
        loop.add_reader(self.server.fileno(), self._pump)
        if self._deny is not None:
            self._spawn(self._deny.run(self._stop))
        self._spawn(self.gatekeeper.run(self._stop))
        return self

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _pump(self) -> None:
        server = self.server
        if server is None:
            return
        for ev in server.poll():
            if isinstance(ev, ws.HttpRequest):
                req = Request(ev.method, ev.path, ev.query, dict(ev.headers), bytes(ev.body))
                # Answered at once when the handler does not wait (a token from memory);
                # else a task finishes it.
                result = self.router.dispatch_now(req)
                if isinstance(result, Response):
                    server.respond(ev.request_id, result.status, result.headers, result.body)
                else:
                    self._spawn(self._http(ev.request_id, result))

    async def _http(self, request_id: int, pending: Awaitable[Response]) -> None:
        resp = await pending
        if self.server is not None:
            self.server.respond(request_id, resp.status, resp.headers, resp.body)

    def _h_metrics(self, _req: Request) -> Response:
        body = self.registry.render()
        if self.server is not None:
            body += ws.metrics_text(self.server.stats(), areas=("rooms", "server"))
        return Response(200, body.encode(), {"Content-Type": CONTENT_TYPE})

    def request_stop(self) -> None:
        self._stop.set()

    async def wait_stopped(self) -> None:
        await self._stop.wait()

    async def stop(self) -> None:
        self._stop.set()
        if self.server is None:
            return
        server, self.server = self.server, None
        asyncio.get_running_loop().remove_reader(server.fileno())
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.to_thread(server.stop)
        if self.gatekeeper is not None:
            await self.gatekeeper.close()
            self.gatekeeper.store.close()

    async def __aenter__(self) -> GatekeeperServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


class _NoServer:
    """The deny list's target when there is no connector: the list is only read."""

    def set_deny_list(self, _addresses: Any) -> None:
        return None


__all__ = ["GatekeeperServer", "build", "build_resolver", "build_rooms"]
