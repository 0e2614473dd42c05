"""The realm process: one port serving the connector, the WebSocket rooms and HTTP.

::

    async with Realm(RealmConfig(host="127.0.0.1", port=0)) as realm:
        print(realm.url)          # http://127.0.0.1:PORT
        await realm.wait_stopped()

Threads: the C++ ``Server`` runs its I/O thread(s) (WebSocket handshakes,
auth-chain verification, frame handling, rooms fan-out); everything in Python
runs on one asyncio loop: the server's eventfd wakes :meth:`Realm._pump`, which
drains events onto the pub/sub (heartbeats in batches) and dispatches HTTP requests;
the core ticks in its own task on the same loop.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable
from typing import Any

import dclcomms
from dclcomms import ws
from dclcomms.about import AboutState, about, public_url_from_host
from dclcomms.archipelago.core import ArchipelagoCore, core_from_config
from dclcomms.bridge.bus import PubSubBusLink
from dclcomms.bridge.gateway import BridgeGateway, SceneAuthority
from dclcomms.bridge.keys import KeyStore, SqlKeyStore, open_key_store
from dclcomms.bridge.links import LocalRoomLink, TapOwners
from dclcomms.bridge.scopes import RoomNames
from dclcomms.clock import now_ms
from dclcomms.config import RealmConfig
from dclcomms.http import Request, Response, Router, json_response, status_document
from dclcomms.livemap import MapFeed
from dclcomms.logs import JsonFormatter, setup_logging
from dclcomms.metrics import CONTENT_TYPE, Registry
from dclcomms.msgbus import MessageBusGateway
from dclcomms.policy import RealmPolicy, Transports, build_transports, make_policy
from dclcomms.pubsub import InProcessPubSub, PubSub
from dclcomms.realm.bans import BanChecker
from dclcomms.realm.connector import Connector
from dclcomms.realm.denylist import DenyList
from dclcomms.rooms import status_body as rooms_status_body
from dclcomms.stats import Stats, stats_from_config

log = logging.getLogger("dclcomms.realm")

PolicyArg = RealmPolicy | type[RealmPolicy] | None


class Realm:
    """A running realm (connector + archipelago core + stats + rooms) on one port."""

    def __init__(
        self,
        config: RealmConfig,
        *,
        policy: PolicyArg = None,
        pubsub: PubSub | None = None,
        run_core: bool = True,
        bus: PubSub | None = None,
        bridge_keys: KeyStore | None = None,
        bridge_authority: SceneAuthority | None = None,
        bridge_authoritative_server: str = "",
        bridge_names: RoomNames | None = None,
        registry: Registry | None = None,
    ) -> None:
        """``pubsub``: how the parts talk (default in-process; ``bus`` is its old name).

        ``run_core=False``: a connector-only realm; the core runs elsewhere on ``pubsub``.
        ``registry``: the process's metrics registry, served on ``/metrics`` (default a new
        one); pass the one the other parts of the process register on (e.g. ``pubsub``'s,
        a separate core's) so that ``/metrics`` shows them too.
        ``bridge_*``: the /bridge gateway's API keys (default: the gatekeeper database's
        ``bridge_keys``, created with ``dclcomms bridge keys``), scene owner/admin
        authority, authoritative server wallet and scene-room naming (docs/bridge.md).
        """
        if bus is not None:
            if pubsub is not None:
                raise TypeError("pass pubsub= only (bus= is its old name)")
            pubsub = bus
        self.config = config
        self.run_core = run_core
        self.pubsub: PubSub = pubsub if pubsub is not None else InProcessPubSub()
        self.registry = registry if registry is not None else Registry()
        self._policy_arg = policy
        self.server: Any = None
        self.core: ArchipelagoCore | None = None
        self.connector: Connector | None = None
        self.msgbus: MessageBusGateway | None = None
        self.bridge: BridgeGateway | None = None
        self.bridge_link: LocalRoomLink | None = None
        self.bridge_taps: Any = None  # NatsRoomTaps: bridges in other processes, over NATS
        self._bridge_args: dict[str, Any] = {
            "keys": bridge_keys,
            "authority": bridge_authority,
            "authoritative_server": bridge_authoritative_server,
            "names": bridge_names,
        }
        # what the realm opened for the bridge itself (no gatekeeper mounted): closed at stop
        self._bridge_keys: Any = None
        self._bridge_store: Any = None
        self._bridge_authority: Any = None
        self._bridge_livekit: Any = None  # LiveKitRoomLink: the gatekeeper's LiveKit scene rooms
        self.stats: Stats | None = None
        self.map: MapFeed | None = None
        self.transports: Transports | None = None
        self.policy: RealmPolicy | None = None
        self.router = Router()
        self.ws_room_secret = config.ws_room_secret or secrets.token_urlsafe(32)
        self._stop = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._core_task: asyncio.Task[None] | None = None
        self.deny_list: DenyList | None = None
        self.bans: BanChecker | None = None
        self.gatekeeper: Any = None  # dclcomms.gatekeeper.app.Gatekeeper when mounted
        self._loop: asyncio.AbstractEventLoop | None = None
        self._port = 0
        self._started_ms = 0
        self.m_http = self.registry.counter(
            "dcl_http_requests_total", "HTTP requests answered by Python, by status class"
        )
        self.m_events = self.registry.counter(
            "dcl_realm_server_events_total", "events drained from the C++ server, by type"
        )
        self.m_event_errors = self.registry.counter(
            "dcl_realm_event_errors_total", "server events whose handler raised (logged), by type"
        )

    # --- lifecycle ----------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        host = self.config.host if self.config.host not in ("0.0.0.0", "::") else "127.0.0.1"
        return f"http://{host}:{self._port}"

    async def start(self) -> Realm:
        cfg = self.config
        self._loop = asyncio.get_running_loop()
        self.server = ws.Server(cfg.server_config("realm", ws_room_secret=self.ws_room_secret))
        self._port = int(self.server.start())
        self._started_ms = now_ms()
        self.registry.collector(self._server_metrics)
        try:
            self.transports = build_transports(
                cfg, bound_port=self._port, ws_room_secret=self.ws_room_secret
            )
            self.policy = make_policy(self._policy_arg, self.transports, cfg)
            if self.run_core:  # else the core runs elsewhere on the pub/sub
                self.core = core_from_config(cfg, self.pubsub, self.policy, registry=self.registry)
            # next to the core the stats read the positions from its engine
            engine = self.core.engine if self.core is not None else None
            self.stats = stats_from_config(cfg, self.pubsub, engine=engine)
            if cfg.map_feed:  # the live map: frames built at each engine.islands
                self.map = MapFeed(
                    self.stats,
                    self.pubsub,
                    self.server,
                    ring_ticks=cfg.map_replay_ticks,
                    registry=self.registry,
                )
            self.connector = Connector(self.server, self.pubsub, self.registry)
            if cfg.bus:
                self.msgbus = MessageBusGateway(
                    self.server,
                    self.pubsub,
                    self.registry,
                    global_topics=cfg.bus_global_topic_list,
                    bus_queue=cfg.bus_queue,
                    island_of=self.connector.island_of_address,
                    p2p_signal_max_per_s=cfg.p2p_signal_max_per_s,
                    p2p_signal_burst=cfg.p2p_signal_burst,
                    # scene topics: members of the gatekeeper's scene rooms on this server
                    scene_of=self._scene_room_of if cfg.gatekeeper else None,
                )
                self.connector.add_island_listener(self.msgbus.on_island)
            taps = TapOwners(self.server)
            nc = getattr(self.pubsub, "nc", None)
            if nc is not None:  # a NATS deployment: `dclcomms bridge serve` reads these rooms
                from dclcomms.bridge.nats import NatsRoomTaps

                self.bridge_taps = await NatsRoomTaps(self.server, nc, taps).start()
            if cfg.gatekeeper:
                await self._mount_gatekeeper()
                self._spawn(self.gatekeeper.run(self._stop))
            if cfg.bridge:
                await self._start_bridge(taps)
            self._routes()
            self._loop.add_reader(self.server.fileno(), self._pump)
            ready = getattr(
                self.pubsub, "ready", None
            )  # a network pub/sub: subscriptions registered
            if ready is not None:
                await ready()
            if self.core is not None:
                self._core_task = asyncio.create_task(self.core.run(self._stop), name="realm-core")
            if cfg.deny_list_url:
                self.deny_list = DenyList(
                    cfg.deny_list_url,
                    self.server,
                    self.registry,
                    deny_list_refresh_s=cfg.deny_list_refresh_s,
                )
                self._spawn(self.deny_list.run(self._stop))
            if cfg.comms_gatekeeper_url or self.gatekeeper is not None:
                connector = self.connector
                self.bans = BanChecker(
                    cfg.comms_gatekeeper_url,
                    self.server,
                    self.registry,
                    sessions=lambda: connector.sessions | self._bus_sessions(),
                    ban_sweep_interval_ms=cfg.ban_sweep_interval_ms,
                    # no external gatekeeper: ask the mounted one in process
                    lookup=None if cfg.comms_gatekeeper_url else self.gatekeeper.is_platform_banned,
                    island_bar_ms=(cfg.island_token_ttl_s + 30) * 1000,
                )
                self._spawn(self.bans.run(self._stop))
        except BaseException:
            # what start() spawned (the gatekeeper's database poll) stops first: left
            # running, it went on querying the store closed below
            self._stop.set()
            for t in list(self._tasks):
                t.cancel()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            server, self.server = self.server, None
            if self._loop is not None:
                self._loop.remove_reader(server.fileno())
            server.stop()
            if self.gatekeeper is not None:
                await self.gatekeeper.close()
                self.gatekeeper.store.close()
            await self._close_bridge_parts()
            raise
        if not cfg.public_url and cfg.host in ("0.0.0.0", "::"):
            log.warning(
                "public_url is not set: ws-room connection strings will name the bound address; "
                "set --public-url for clients on other machines",
                extra={"url": self.url},
            )
        if not cfg.ws_room_allow_missing_token and cfg.fixed_adapter.startswith("ws-room:"):
            log.warning(
                "fixed_adapter is a ws-room but rooms require a token and a fixed adapter gets "
                "none: set ws_room_allow_missing_token = true (compatibility) if those rooms are "
                "this realm's",
                extra={"fixed_adapter": cfg.fixed_adapter},
            )
        log.info(
            "realm started",
            extra={
                # RLIMIT_NOFILE after the server raised it to the hard limit
                "fd_limit": int(self.server.stats().get("server", {}).get("fd_limit", 0)),
                "url": self.url,
                "transport": self.transports.default.name,
                "policy": type(self.policy).__name__,
                "config": cfg.public_dict(),
            },
        )
        return self

    async def _mount_gatekeeper(self) -> None:
        """The gatekeeper on this port: its routes, and scene rooms on this server when
        LiveKit is not configured (docs/gatekeeper.md)."""
        from dclcomms.gatekeeper import config as gk_config
        from dclcomms.gatekeeper.server import build

        cfg = self.config
        assert self.transports is not None
        gk = gk_config.from_env(
            database=cfg.gatekeeper_database or None,
            data_dir=cfg.data_dir or None,
            livekit_host=cfg.livekit_host or None,
            livekit_api_key=cfg.livekit_api_key or None,
            livekit_api_secret=cfg.livekit_api_secret or None,
            commit_hash=cfg.commit_hash or None,
            ws_room_secret=self.ws_room_secret,
        )

        def deny() -> list[str]:
            return self.deny_list.addresses if self.deny_list is not None else []

        # a token minted before a ban stays valid this long: the island rooms bar that long
        island_bar_ms = (cfg.island_token_ttl_s + 30) * 1000

        def kick(address: str) -> None:
            """A platform ban, at once: the connector, /bus and this server's island rooms
            (peer_kicked + 4005, barred for the island token's TTL; the gatekeeper closes
            the scene rooms)."""
            server = self.server
            if server is not None:
                server.kick(address, 4005, "banned")
                server.close_bus(address, 4005, "banned")
                server.kick_room_member(None, address, "banned", scene=False, bar_ms=island_bar_ms)

        def unban(address: str) -> None:  # lifted or expired: the island rooms admit it again
            server = self.server
            if server is not None:
                server.unbar_room_member(None, address, scene=False)

        self.gatekeeper = await build(
            gk,
            server=self.server,
            ws_base_url=self.transports.ws_room.base_url,
            ws_room_secret=self.ws_room_secret,
            registry=self.registry,
            deny_list=deny,
            on_platform_ban=kick,
            on_platform_unban=unban,
        )

    async def _start_bridge(self, taps: TapOwners) -> None:
        """The /bridge gateway over this server's rooms, with the gatekeeper's database (API
        keys), owner-or-admin check (signed fetch), authoritative server and room naming:
        the mounted gatekeeper's own, else built from the same configuration
        (docs/bridge.md). ``Realm(bridge_*=...)`` arguments take precedence."""
        from dclcomms.bridge.authority import OwnerOrAdminAuthority, open_authority
        from dclcomms.gatekeeper import config as gk_config

        cfg = self.config
        args = dict(self._bridge_args)
        gk = self.gatekeeper
        gconf = (
            gk.config
            if gk is not None
            else gk_config.from_env(
                database=cfg.gatekeeper_database or None, data_dir=cfg.data_dir or None
            )
        )
        if args["keys"] is None:  # the gatekeeper database's bridge_keys
            if gk is not None:
                args["keys"] = SqlKeyStore(store=gk.store)
            else:
                args["keys"] = self._bridge_keys = await asyncio.to_thread(
                    open_key_store, gconf.database or None, data_dir=gconf.data_dir or None
                )
        if args["authority"] is None:
            if gk is not None:
                args["authority"] = OwnerOrAdminAuthority(gk.owner_or_admin)
            else:
                store = getattr(args["keys"], "store", None)
                if store is None:  # keys elsewhere (Realm(bridge_keys=)): the database's rows
                    from dclcomms.gatekeeper.storage import Store

                    store = self._bridge_store = await asyncio.to_thread(
                        Store.open, gconf.database or None, data_dir=gconf.data_dir or None
                    )
                args["authority"] = self._bridge_authority = open_authority(
                    gconf, store, self.registry
                )
        if not args["authoritative_server"]:
            args["authoritative_server"] = gconf.authoritative_server_address
        if args["names"] is None:
            args["names"] = RoomNames(gconf.scene_room_prefix, gconf.world_room_prefix)
        self.bridge_link = LocalRoomLink(self.server, taps)
        link: Any = self.bridge_link
        if gk is not None:  # its scene rooms are LiveKit's when it is configured with LiveKit
            from dclcomms.bridge.links import SceneRoutedLink
            from dclcomms.bridge.livekit import scene_room_link

            self._bridge_livekit = scene_room_link(gk.config)
            if self._bridge_livekit is not None:
                link = SceneRoutedLink(self.bridge_link, self._bridge_livekit)
        self.bridge = BridgeGateway(
            self.server,
            link,
            self.registry,
            spawn=self._spawn_task,
            bus=PubSubBusLink(self.pubsub),  # the /bus's global topics, on the realm's pub/sub
            **args,
        )

    async def _close_bridge_parts(self) -> None:
        if self._bridge_livekit is not None:
            await self._bridge_livekit.aclose()
            self._bridge_livekit = None
        if self._bridge_authority is not None:
            await self._bridge_authority.close()
            self._bridge_authority = None
        for part in (self._bridge_keys, self._bridge_store):
            if part is not None:
                await asyncio.to_thread(part.close)
        self._bridge_keys = self._bridge_store = None

    def _scene_room_of(self, address: str) -> str | None:
        server = self.server
        return server.scene_room_of(address) if server is not None else None

    def _bus_sessions(self) -> set[str]:
        return set(self.msgbus.sessions) if self.msgbus is not None else set()

    def _spawn(self, coro: Any) -> None:
        self._spawn_task(coro)

    def _spawn_task(self, coro: Any) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def stop(self) -> None:
        """Stop accepting, close every socket (1001), cancel tasks. Idempotent."""
        self._stop.set()
        if self.server is None:
            return
        server, self.server = self.server, None
        if self._loop is not None:
            self._loop.remove_reader(server.fileno())
        if self._core_task is not None:
            try:
                await asyncio.wait_for(self._core_task, 5.0)
            except (TimeoutError, asyncio.CancelledError):
                self._core_task.cancel()
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        # Server.stop joins the I/O threads: keep the loop responsive meanwhile.
        await asyncio.to_thread(server.stop)
        if self.bridge_taps is not None:
            await self.bridge_taps.aclose()
        for part in (self.core, self.connector, self.stats, self.map, self.msgbus, self.bridge):
            if part is not None:
                part.close()
        if self.gatekeeper is not None:
            await self.gatekeeper.close()
            await asyncio.to_thread(self.gatekeeper.store.close)
        await self._close_bridge_parts()
        aclose = getattr(self.pubsub, "aclose", None)  # a network pub/sub: flush, then disconnect
        if aclose is not None:
            await aclose()
        else:
            self.pubsub.close()
        log.info("realm stopped", extra={"url": self.url})

    async def wait_stopped(self) -> None:
        await self._stop.wait()

    def request_stop(self) -> None:
        self._stop.set()

    async def __aenter__(self) -> Realm:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- events ---------------------------------------------------------------------

    def _pump(self) -> None:
        server = self.server
        if server is None:
            return
        connector = self.connector
        assert connector is not None
        while True:
            events = server.poll()
            if not events:
                return
            for ev in events:
                try:
                    self._dispatch(ev, connector)
                except Exception:  # a bug in one handler must not drop the other events
                    self.m_event_errors.inc(kind=type(ev).__name__)
                    log.exception("server event handler failed", extra={"event": type(ev).__name__})

    def _dispatch(self, ev: Any, connector: Connector) -> None:
        if isinstance(ev, ws.Heartbeats):
            self.m_events.inc(kind="heartbeats")
            connector.on_heartbeats(ev)  # the batch the engine ingests, as it came
        elif isinstance(ev, ws.HttpRequest):
            self.m_events.inc(kind="http")
            req = Request(ev.method, ev.path, ev.query, dict(ev.headers), bytes(ev.body))
            # Answered at once when the handler does not wait (the gatekeeper's token
            # from memory); else a task finishes it.
            result = self.router.dispatch_now(req)
            if isinstance(result, Response):
                self._respond(ev.request_id, result)
            else:
                self._spawn(self._http(ev.request_id, result))
        elif isinstance(ev, ws.PeerConnected):
            self.m_events.inc(kind="connected")
            connector.on_connected(ev.address)
            if self.bans is not None:  # checked right after the handshake
                self._spawn(self.bans.check(ev.address))
        elif isinstance(ev, ws.PeerDisconnected):
            self.m_events.inc(kind="disconnected")
            connector.on_disconnected(ev.address)
        elif isinstance(ev, ws.BusFrame) and self.msgbus is not None:
            self.m_events.inc(kind="bus_frame")
            self.msgbus.on_frame(ev.address, ev.text)
        elif isinstance(ev, ws.BusOpened) and self.msgbus is not None:
            self.m_events.inc(kind="bus_opened")
            self.msgbus.on_opened(ev.address)
            if self.bans is not None:
                self._spawn(self.bans.check(ev.address))
        elif isinstance(ev, ws.BusClosed) and self.msgbus is not None:
            self.m_events.inc(kind="bus_closed")
            self.msgbus.on_closed(ev.address)
        elif isinstance(ev, ws.RoomMessage):
            self.m_events.inc(kind="room_message")
            args = (ev.room, ev.sender, ev.body, ev.unreliable, ev.received_ms, ev.scene)
            if self.bridge_link is not None:
                self.bridge_link.deliver(*args)
            if self.bridge_taps is not None:
                self.bridge_taps.deliver(*args)
        elif isinstance(ev, ws.BridgeFrame) and self.bridge is not None:
            self.m_events.inc(kind="bridge_frame")
            self.bridge.on_frame(ev.id, ev.text)
        elif isinstance(ev, ws.BridgeOpened) and self.bridge is not None:
            self.m_events.inc(kind="bridge_opened")
            self.bridge.on_opened(ev.id)
        elif isinstance(ev, ws.BridgeClosed) and self.bridge is not None:
            self.m_events.inc(kind="bridge_closed")
            self.bridge.on_closed(ev.id)
        else:
            self.m_events.inc(kind="other")

    async def _http(self, request_id: int, pending: Awaitable[Response]) -> None:
        self._respond(request_id, await pending)

    def _respond(self, request_id: int, resp: Response) -> None:
        self.m_http.inc(status=f"{resp.status // 100}xx")
        server = self.server
        if server is not None:
            server.respond(request_id, resp.status, resp.headers, resp.body)

    # --- HTTP -----------------------------------------------------------------------

    def _routes(self) -> None:
        r = self.router
        r.add("/about", self._h_about)
        r.add("/status", self._h_status)
        r.add("/rooms/status", self._h_rooms_status)
        r.add("/metrics", self._h_metrics)
        if self.gatekeeper is not None:  # /status stays the realm's
            self.gatekeeper.routes(r, status=False)
        assert self.stats is not None
        self.stats.routes(r)
        if self.map is not None:
            self.map.routes(r)

    def users_count(self) -> int:
        return len(self.connector.sessions) if self.connector is not None else 0

    def bus_connected(self) -> bool:
        """The pub/sub between the parts is up (an in-process one always is)."""
        nc = getattr(self.pubsub, "nc", None)
        if nc is None:
            return True
        # with the C++ client: both connections (connected covers them)
        return bool(getattr(self.pubsub, "connected", nc.is_connected))

    def health(self) -> dict[str, bool]:
        """What /about and /status report: comms are healthy while the server runs, the
        bus (NATS) is connected and the core ticked within 3 flush periods (a remote core:
        its discovery is fresh, control-plane 3)."""
        if self.core is not None:
            ticking = self.core.healthy()
        else:
            assert self.stats is not None
            ticking = self.stats.core_healthy()
        bus = self.bus_connected()
        return {
            "healthy": self.server is not None and bus and ticking,
            "busConnected": bus,
            "coreTicking": ticking,
        }

    def _h_about(self, req: Request) -> Response:
        overloaded = self.core.overloaded() if self.core is not None else False
        state = AboutState(
            comms_healthy=self.health()["healthy"],
            users_count=self.users_count(),
            version=dclcomms.__version__,
            overloaded=overloaded,
            bus_sessions=len(self.msgbus.sessions) if self.msgbus is not None else 0,
        )
        public = public_url_from_host(self.config, req.header("host"), self.url)
        status, body = about(
            self.config, state, public, gatekeeper_url=public if self.gatekeeper else None
        )
        return json_response(body, status)

    def _h_status(self, _req: Request) -> Response:
        health = self.health()
        return json_response(
            status_document(
                commit_hash=self.config.commit_hash,
                userCount=self.users_count(),
                healthy=health["healthy"],
                busConnected=health["busConnected"],
                coreTicking=health["coreTicking"],
            )
        )

    def _h_rooms_status(self, _req: Request) -> Response:
        server = self.server
        if server is None:  # stopping
            return json_response({"error": "Service Unavailable"}, 503)
        return json_response(rooms_status_body(server))

    def _server_metrics(self) -> dict[str, tuple[str, str, float]]:
        """The C++ counters (``dcl_ws_connector_*``, ``dcl_ws_rooms_*``, ``dcl_ws_bus_*``)."""
        return ws.server_metrics(self.server.stats()) if self.server is not None else {}

    def _h_metrics(self, _req: Request) -> Response:
        if self.stats is not None:
            self.stats.sweep()
        body = self.registry.render()  # with the C++ counters (dcl_ws_*): a collector
        return Response(200, body.encode(), {"Content-Type": CONTENT_TYPE})


__all__ = ["JsonFormatter", "Realm", "setup_logging"]
