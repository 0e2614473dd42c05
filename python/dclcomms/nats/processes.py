"""The realm's parts as separate processes over NATS (archipelago-workers layout).

* ``dclcomms connector --nats URL``: the C++ connector + WebSocket rooms + /about,
  stats routes and /metrics (a :class:`~dclcomms.realm.Realm` with
  ``run_core=False``); any number of them.
* ``dclcomms core --nats URL``: the clustering engine, policy and transports
  (:class:`CoreService`: the realm's :class:`~dclcomms.archipelago.core.ArchipelagoCore`
  on a :class:`~dclcomms.nats.pubsub.NatsPubSub`); exactly one. It keeps no state that
  heartbeats do not rebuild: restarted, it re-assigns every peer from the next
  heartbeats.
* ``dclcomms stats --nats URL``: the stats HTTP API (:class:`StatsService`).
* ``dclcomms realm --nats URL``: all of them in one process, through NATS.

Each process keeps one metrics registry for all its parts and serves it on ``/metrics``
(the connector's port, the core's, the stats'): its NATS clients' ``dcl_nats_*`` labelled
``client=<connection name>``, the core's ``dcl_archipelago_*``, the connector's, ...

All take the realm's flags (``--config``, env) plus ``--nats`` (repeatable) and
``--subjects native|workers|v3``; the commands themselves live in :mod:`dclcomms.realm.cli`
(they compose a :class:`~dclcomms.realm.Realm`, a layer above this one). Islands
minted by the core must be reachable through every connector: use LiveKit
(``--livekit-*``) or a fixed adapter, or give the core and the connectors the same
``--ws-room-secret`` and ``--ws-room-url``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from dclcomms import _moved, ws
from dclcomms.archipelago.core import core_from_config
from dclcomms.config import RealmConfig
from dclcomms.errors import ConfigError
from dclcomms.http import Request, Response, Router, json_response, status_document
from dclcomms.livemap import MapFeed
from dclcomms.metrics import CONTENT_TYPE, Registry
from dclcomms.nats.nodes import (
    STATUS_PREFIX,
    NodeBalancedWsRooms,
    NodeRegistry,
    NodeStatus,
    status_subject,
)
from dclcomms.nats.pubsub import NatsPubSub
from dclcomms.nats.subjects import SCHEMES
from dclcomms.policy import RealmPolicy, build_transports, make_policy
from dclcomms.pubsub import PubSub
from dclcomms.stats import stats_from_config

log = logging.getLogger("dclcomms.nats.processes")


def __getattr__(name: str) -> Any:
    """The commands that moved to :mod:`dclcomms.realm.cli` (``connector_main``, ...)."""
    return _moved.moved_name(__name__, name)


def add_nats_arguments(p: argparse.ArgumentParser, *, required: bool = True) -> None:
    p.add_argument(
        "--nats",
        action="append",
        metavar="URL",
        required=required,
        help="NATS server URL nats://host:port (repeat for several servers or cluster nodes)",
    )
    p.add_argument(
        "--subjects",
        choices=sorted(SCHEMES),
        default="native",
        help="subject scheme (default native: batched, between dclcomms processes; "
        "workers: archipelago-workers compatible; v3: legacy comms-v3)",
    )


async def connect_pubsub(
    urls: Sequence[str], subjects: str, name: str, registry: Registry | None = None
) -> NatsPubSub:
    return await NatsPubSub.connect(list(urls), subjects=subjects, name=name, registry=registry)


def check_core_config(config: RealmConfig) -> None:
    """A separate core must mint connection strings every connector honours."""
    if not (config.livekit_enabled or config.fixed_adapter or config.ws_room_secret):
        raise ConfigError(
            "a separate core needs LiveKit, a fixed adapter or a ws_room_secret shared "
            "with the connectors",
            code="bad_value",
            field="ws_room_secret",
        )


class CoreService:
    """The archipelago core alone on a pub/sub.

    With ``http=True`` (``dclcomms core``) it also listens on ``config.host:port`` for
    ``/health/live``, ``/health/ready`` (503 until NATS is connected and a tick ran
    recently), ``/status`` (JSON: peers, islands, last tick, transport nodes) and
    ``/metrics`` (the core's and its NATS pub/sub's metrics).
    """

    def __init__(
        self,
        config: RealmConfig,
        pubsub: PubSub,
        *,
        policy: RealmPolicy | type[RealmPolicy] | None = None,
        registry: Registry | None = None,
        http: bool = False,
        bound_port: int | None = None,
    ) -> None:
        """``bound_port``: the port the connector serving the ws-room transport listens on
        (``dclcomms realm --nats`` passes its connector's, so ``--port 0`` names the port
        actually bound); default ``config.port``, or 80 when that is 0 (a separate core
        behind a proxy; set ``public_url`` or ``ws_room_url`` there).
        """
        check_core_config(config)
        self.config = config
        self.pubsub = pubsub
        self.registry = registry or Registry()
        port = bound_port if bound_port is not None else (config.port or 80)
        transports = build_transports(config, bound_port=port, ws_room_secret=config.ws_room_secret)
        pol = make_policy(policy, transports, config)
        if isinstance(pol, NodeBalancedWsRooms) and not isinstance(policy, RealmPolicy):
            # built here: the announcement timing comes from the configuration
            pol.registry = NodeRegistry(
                transport_node_interval_s=config.transport_node_interval_s,
                transport_node_missed=config.transport_node_missed,
            )
        self.core = core_from_config(config, pubsub, pol, registry=self.registry)
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._node_sub: Any = None
        self.node_status_errors = self.registry.counter(
            "dcl_transport_node_status_errors_total", "node announcements refused (malformed)"
        )
        self.http: HttpFront | None = None
        if http:
            router = Router()
            router.add("/health/ready", self._h_ready)
            router.add("/status", self._h_status)
            router.add("/metrics", self._h_metrics)
            self.http = HttpFront(config, router)

    @property
    def url(self) -> str:
        if self.http is None:
            raise AttributeError("url: this core serves no HTTP (http=False)")
        return self.http.url

    def _nats_connected(self) -> bool:
        nc = getattr(self.pubsub, "nc", None)
        if nc is None:
            return True
        # with the C++ client: both connections (connected covers them)
        return bool(getattr(self.pubsub, "connected", nc.is_connected))

    def _h_ready(self, _req: Request) -> Response:
        reasons = []
        if not self._nats_connected():
            reasons.append("bus_disconnected")
        if not self.core.healthy():
            reasons.append("no_recent_tick")
        if reasons:
            return json_response({"ready": False, "reasons": reasons}, 503)
        return json_response({"ready": True})

    def _h_status(self, _req: Request) -> Response:
        core = self.core
        body = status_document(
            commit_hash=self.config.commit_hash,
            ok=True,
            subjects=getattr(getattr(self.pubsub, "scheme", None), "name", None),
            busConnected=self._nats_connected(),
            peers=core.engine.peer_count,
            islands=core.engine.island_count,
            flushIntervalS=core.flush_interval_s,
            lastTickMs=core.last_tick_ms,
            lastTickDurationS=core.last_tick_s,
            healthy=core.healthy(),
        )
        pol = core.policy
        if isinstance(pol, NodeBalancedWsRooms):
            body["transportNodes"] = [
                {
                    "nodeId": n.node_id,
                    "url": n.url,
                    "usersCount": n.users_count,
                    "islands": sum(1 for v in pol.island_node.values() if v == n.node_id),
                }
                for n in pol.registry.live()
            ]
        return json_response(body)

    def _h_metrics(self, _req: Request) -> Response:
        return Response(200, self.registry.render().encode(), {"Content-Type": CONTENT_TYPE})

    def _on_node_status(self, policy: NodeBalancedWsRooms, subject: str, data: bytes) -> None:
        try:
            status = NodeStatus.from_json(data)
            if subject != status_subject(status.node_id):
                raise ValueError(f"nodeId {status.node_id!r} announced on {subject!r}")
        except ValueError as e:  # SubjectError is a ValueError too
            self.node_status_errors.inc()
            log.error("refused node announcement: %s", e, extra={"subject": subject})
            return
        policy.on_status(status)

    async def start(self) -> CoreService:
        pol = self.core.policy
        nc = getattr(self.pubsub, "nc", None)
        if isinstance(pol, NodeBalancedWsRooms) and nc is not None:
            # The registry subject is the same in both schemes and carries JSON, so it
            # goes straight to nats-py rather than through the scheme's routes.
            async def cb(msg: Any) -> None:
                self._on_node_status(pol, msg.subject, msg.data)

            self._node_sub = await nc.subscribe(STATUS_PREFIX + "*.status", cb=cb)
        ready = getattr(self.pubsub, "ready", None)
        if ready is not None:
            await ready()
        if self.http is not None:
            await self.http.start()
        self._task = asyncio.create_task(self.core.run(self._stop), name="core")
        log.info("core started", extra={"config": self.config.public_dict()})
        return self

    def request_stop(self) -> None:
        self._stop.set()

    async def wait_stopped(self) -> None:
        await self._stop.wait()

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task
            self._task = None
        if self._node_sub is not None:
            with contextlib.suppress(Exception):
                await self._node_sub.unsubscribe()
            self._node_sub = None
        if self.http is not None:
            await self.http.stop()
        self.core.close()


class HttpFront:
    """A plain HTTP listener (the C++ server with no WebSocket paths) serving a Router.

    ``/health/live`` never reaches the router: the C++ server answers it (200 ``alive``).
    """

    def __init__(self, config: RealmConfig, router: Router) -> None:
        self.config = config
        self.router = router
        self.server: Any = None
        self.port = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self.server = ws.Server(self.config.server_config("http"))
        self.port = int(self.server.start())
        asyncio.get_running_loop().add_reader(self.server.fileno(), self._pump)
        return self.port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _pump(self) -> None:
        server = self.server
        if server is None:
            return
        for ev in server.poll():
            if isinstance(ev, ws.HttpRequest):
                t = asyncio.ensure_future(self._http(ev))
                self._tasks.add(t)
                t.add_done_callback(self._tasks.discard)

    async def _http(self, ev: Any) -> None:
        req = Request(ev.method, ev.path, ev.query, dict(ev.headers), bytes(ev.body))
        resp = await self.router.dispatch(req)
        if self.server is not None:
            self.server.respond(ev.request_id, resp.status, resp.headers, resp.body)

    async def stop(self) -> None:
        server, self.server = self.server, None
        if server is None:
            return
        asyncio.get_running_loop().remove_reader(server.fileno())
        for t in list(self._tasks):
            t.cancel()
        await asyncio.to_thread(server.stop)


class StatsService:
    """The stats HTTP API (archipelago.md 5) fed from a pub/sub, on its own port."""

    def __init__(
        self, config: RealmConfig, pubsub: PubSub, *, registry: Registry | None = None
    ) -> None:
        self.config = config
        self.pubsub = pubsub
        self.registry = registry or Registry()
        self.stats = stats_from_config(config, pubsub)
        self.router = Router()
        self.stats.routes(self.router)
        # The live map: frames at each engine.islands, to /map/feed once the front is up.
        self.map = (
            MapFeed(self.stats, pubsub, ring_ticks=config.map_replay_ticks, registry=self.registry)
            if config.map_feed
            else None
        )
        if self.map is not None:
            self.map.routes(self.router)
        self.router.add("/metrics", self._metrics)
        self.http = HttpFront(config, self.router)
        if self.map is not None:
            self.registry.collector(self._feed_metrics)
        self._stop = asyncio.Event()
        self._started = False

    def _metrics(self, _req: Request) -> Response:
        self.stats.sweep()
        return Response(200, self.registry.render().encode(), {"Content-Type": CONTENT_TYPE})

    def _feed_metrics(self) -> dict[str, tuple[str, str, float]]:
        """``dcl_ws_feed_*``: the live map's pages on the HTTP front."""
        server = self.http.server
        return ws.server_metrics(server.stats(), areas=("feed",)) if server is not None else {}

    async def start(self) -> StatsService:
        await self.http.start()
        if self.map is not None:
            self.map.sink = self.http.server
        self._started = True
        ready = getattr(self.pubsub, "ready", None)
        if ready is not None:
            await ready()
        return self

    @property
    def port(self) -> int:
        return self.http.port

    @property
    def url(self) -> str:
        return self.http.url

    def request_stop(self) -> None:
        self._stop.set()

    async def wait_stopped(self) -> None:
        await self._stop.wait()

    async def stop(self) -> None:
        self._stop.set()
        if not self._started:
            return
        self._started = False
        if self.map is not None:
            self.map.sink = None
            self.map.close()
        await self.http.stop()
        self.stats.close()


__all__ = [
    "CoreService",
    "HttpFront",
    "StatsService",
    "add_nats_arguments",
    "check_core_config",
    "connect_pubsub",
]
