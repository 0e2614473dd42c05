"""CommunicationsDirector: realm ``/about`` -> connector session -> island transports.

The ADR-81 flow: read the realm's ``/about``, pick the adapter
(``comms.adapter ?? comms.fixedAdapter ?? "offline:offline"``, ``fixed-adapter:``
unwrapped, unhealthy v3 comms => offline). For ``archipelago:`` the director
authenticates to the connector with an :class:`~dclcomms.auth.Identity`,
heartbeats the position source every ``heartbeat_interval_s`` and, on every
``island_changed``, swaps the island transport: exactly one adapter at a time,
the old one disconnected before the new one connects, and nothing from the old
room is delivered after the swap starts.

P2P islands (``p2p:``) need the realm's ``/bus`` (``/about`` ``bff.publicUrl``) for
signalling: the director opens one ``/bus`` session, with the same identity, the
first time it gets a P2P island (or at start, ``open_bus_early=True``, so that no
offer arrives before it listens) and keeps it, with its signalling subscriptions
(:class:`~dclcomms.client.p2p.SignalHub`), until ``stop``; it tells the P2P
adapter every change of the island's members (``join_island`` / ``left_island``).

Scene rooms (ADR-204): with a scene resolver (``scenes=``, ``parcel -> scene id``,
e.g. :class:`~dclcomms.client.scenes.SceneGrid`) the director also holds **one
scene room** for the scene the player stands in, beside the island transport. On
every position it looks up the scene of the player's parcel; when that changes it
leaves the previous scene room first, asks the gatekeeper (``POST
/get-scene-adapter``, a signed fetch with metadata ``realmName``, ``sceneId``,
``parcel``; control-plane.md 1.2-1.3) for the new one and connects the returned
adapter (``ws-room:`` on the built-in rooms, ``livekit:`` with LiveKit). Latest
scene wins while a swap is in progress. A scene room that kicks us (a ban:
``peer_kicked`` + close 4005) is reported as ``scene_kicked`` and not rejoined
until the player enters another scene; a gatekeeper refusal (403 banned, 401...)
is an ``error`` with the code of :mod:`dclcomms.client.gatekeeper`.
Reconnection (``reconnect=True``, the default): when the connector session ends
(a close, a realm restart) for any reason but a kick or a deny-list refusal (4004,
4005, 4006), the director leaves its island transport, then tries again with
exponential back-off (``reconnect_base_s`` doubling up to ``reconnect_max_s``, each
wait drawn in [50 %, 100 %] of it from a generator seeded by the identity): read
``/about`` (a 503 or an unhealthy realm is one more failed attempt), re-handshake,
heartbeat; the next ``island_changed`` rejoins an island. ``reconnects`` counts the
sessions restored; ``reconnect=False`` keeps the session-ends-for-good behaviour.

Events (``director.on(name, callback)``): ``message`` / ``PEER_DISCONNECTED``
relayed from the current adapter only, ``island_changed``
(:class:`IslandChanged`), ``DISCONNECTION`` (the connector session ended) and
``error`` (a transport that failed to connect, a protocol error); for scene rooms
``scene_message`` (a :class:`Message` from the current scene room only),
``scene_changed`` (:class:`SceneChanged`) and ``scene_kicked`` (:class:`SceneKicked`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Any
from urllib.parse import unquote, urlsplit

import aiohttp

from dclcomms import codec
from dclcomms.auth import Identity
from dclcomms.client._events import (
    DISCONNECTION,
    ERROR,
    ISLAND_CHANGED,
    MESSAGE,
    PEER_DISCONNECTED,
    SCENE_CHANGED,
    SCENE_KICKED,
    SCENE_MESSAGE,
    Disconnection,
    EventEmitter,
    IslandChanged,
    Listener,
    SceneChanged,
    SceneKicked,
)
from dclcomms.client.adapters import (
    Adapter,
    OfflineAdapter,
    create_adapter,
    parse_connection_string,
    ws_url,
)
from dclcomms.client.gatekeeper import GatekeeperClient, SceneRequest
from dclcomms.client.msgbus import MessageBusClient
from dclcomms.client.p2p import SignalHub, load_aiortc
from dclcomms.client.scenes import SceneResolver, parcel_of
from dclcomms.errors import DecodeError, TransportError
from dclcomms.pubsub import Vec3

log = logging.getLogger("dclcomms.client")

PositionSource = Callable[[], Vec3] | Callable[[], Awaitable[Vec3]] | AsyncIterator[Vec3]

ARCHIPELAGO_PREFIX = "archipelago:archipelago:"
#: connector close codes after which the director does not reconnect: deny-listed,
#: kicked (banned), replaced by a newer session of the same identity
NO_RECONNECT = frozenset({4004, 4005, 4006})


def choose_adapter(about: dict[str, Any]) -> str:
    """The connection string a client uses for a realm ``/about`` (control-plane.md 2)."""
    comms = about.get("comms") or {}
    if comms.get("protocol") == "v3" and comms.get("healthy") is False:
        return "offline:offline"
    conn = comms.get("adapter") or comms.get("fixedAdapter") or "offline:offline"
    while conn.startswith("fixed-adapter:"):
        conn = conn[len("fixed-adapter:") :]
    return str(conn)


def _error(message: str, code: str, close_code: int | None = None) -> TransportError:
    err = TransportError(message, code=code)
    err.close_code = close_code
    return err


def gatekeeper_url_from_about(about: dict[str, Any], realm_url: str) -> str:
    """Where the gatekeeper's routes live: ``/about`` ``comms.gatekeeperUrl`` (or a
    top-level ``gatekeeper.publicUrl`` / ``gatekeeperUrl``), else the realm itself
    (the embedded realm mounts the gatekeeper on its own port)."""
    comms = about.get("comms")
    candidates: list[Any] = []
    if isinstance(comms, dict):
        candidates.append(comms.get("gatekeeperUrl"))
    gk = about.get("gatekeeper")
    if isinstance(gk, dict):
        candidates.append(gk.get("publicUrl"))
        candidates.append(gk.get("url"))
    candidates.append(about.get("gatekeeperUrl"))
    for c in candidates:
        if isinstance(c, str) and c:
            return c.rstrip("/")
    return realm_url


def _room_of(conn_str: str) -> str | None:
    """The room id a ``ws-room:`` string names (its last path segment), else None."""
    try:
        protocol, params = parse_connection_string(conn_str)
    except TransportError:
        return None
    if protocol != "ws-room":
        return None
    path = urlsplit(ws_url(params)).path
    return unquote(path.rsplit("/", 1)[-1]) or None


def _vec(p: Any) -> Vec3:
    return (float(p.get("x", 0.0)), float(p.get("y", 0.0)), float(p.get("z", 0.0)))


class CommunicationsDirector:
    """One explorer's comms: ``async with CommunicationsDirector(realm_url, identity,
    position=lambda: (x, y, z)) as d: await d.send(b"...", reliable=True)``.

    ``position`` is a callable (sync or async) or an async iterator of
    ``(x, y, z)`` in metres. ``adapter_options`` go to the ws-room and LiveKit
    adapters (e.g. ``timeout_s``); ``p2p_options``
    (:class:`~dclcomms.client.p2p.P2POptions`: ICE servers, mesh size...) to the P2P
    adapter. Not thread-safe: use it from one event loop.
    """

    def __init__(
        self,
        realm_url: str,
        identity: Identity,
        *,
        position: PositionSource,
        heartbeat_interval_s: float = 1.0,
        timeout_s: float = 10.0,
        adapter_options: dict[str, Any] | None = None,
        p2p_options: Any = None,
        open_bus_early: bool = False,
        scenes: SceneResolver | None = None,
        gatekeeper_url: str | None = None,
        realm_name: str | None = None,
        reconnect: bool = True,
        reconnect_base_s: float = 0.5,
        reconnect_max_s: float = 8.0,
    ) -> None:
        self.realm_url = realm_url.rstrip("/")
        self.identity = identity
        self.position = position
        self.heartbeat_interval_s = heartbeat_interval_s
        self.timeout_s = timeout_s
        self.adapter_options = dict(adapter_options or {})
        self.p2p_options = p2p_options
        #: the realm's /bus URL (``/about`` ``bff.publicUrl``), None when it has none
        self.bus_url: str | None = None
        #: the /bus session P2P islands signal through (opened on the first one, or at
        #: start with ``open_bus_early``) and its signalling subscriptions
        self.bus: MessageBusClient | None = None
        self.signals: SignalHub | None = None
        self.open_bus_early = open_bus_early
        self.events = EventEmitter()
        #: the connection string /about chose (``archipelago:...`` or a fixed transport)
        self.realm_adapter: str | None = None
        self.peer_id: str | None = None
        self.island_id: str | None = None
        #: island members (lowercase address -> last known position), self included
        self.peers: dict[str, Vec3] = {}
        self.adapter: Adapter | None = None
        self.kicked = False
        #: connector handshakes (welcome received) and island-transport joins
        self.handshakes = 0
        self.transport_handshakes = 0
        self.island_changes = 0
        self.protocol_errors = 0
        #: island transports that closed on us (not by a swap or stop)
        self.transport_losses = 0
        #: /bus sessions the server ended while we used them (reopened for P2P islands)
        self.bus_losses = 0
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._swap_lock = asyncio.Lock()
        self._pending: IslandChanged | None = None
        self._drainer: asyncio.Task[None] | None = None
        self._stopped = False
        # --- scene rooms (ADR-204)
        #: ``parcel -> scene id`` (None: no scene rooms)
        self.scenes = scenes
        #: the gatekeeper's base URL (default: /about, else the realm) and the realm
        #: name sent as ``realmName`` (default: /about ``configurations.realmName``)
        self.gatekeeper_url = gatekeeper_url.rstrip("/") if gatekeeper_url else None
        self.realm_name = realm_name
        self.gatekeeper: GatekeeperClient | None = None
        #: the scene the player stands in (None: outside every scene) and its room
        self.scene_id: str | None = None
        self.parcel: tuple[int, int] | None = None
        self.scene_adapter: Adapter | None = None
        self.scene_room: str | None = None
        #: scene rooms joined, swaps (a room left for another), kicks, gatekeeper
        #: refusals/failures and scene rooms lost otherwise
        self.scene_joins = 0
        self.scene_swaps = 0
        self.scene_kicks = 0
        self.scene_failures = 0
        self.scene_losses = 0
        #: seconds each scene-room join took, from the scene change to the room joined
        self.scene_join_s: list[float] = []
        self._scene_lock = asyncio.Lock()
        self._scene_pending: tuple[str | None, tuple[int, int]] | None = None
        self._scene_drainer: asyncio.Task[None] | None = None
        #: the scene a kick removed us from (not rejoined until we enter another)
        self._kicked_from: str | None = None
        self._scene_retry_at = 0.0
        self._scene_target: str | None = None
        self.reconnect = reconnect
        self.reconnect_base_s = reconnect_base_s
        self.reconnect_max_s = reconnect_max_s
        #: connector sessions restored after a loss, and attempts that failed meanwhile
        self.reconnects = 0
        self.reconnect_failures = 0
        self._rng = random.Random(identity.address)  # jitter, reproducible per identity
        self._heartbeat_task: asyncio.Task[None] | None = None

    def on(self, event: str, callback: Listener) -> Callable[[], None]:
        """Register ``callback`` for ``event``; returns a function that unregisters it."""
        return self.events.on(event, callback)

    # --- lifecycle --------------------------------------------------------------

    async def __aenter__(self) -> CommunicationsDirector:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Read ``/about``, then join the connector (archipelago) or the fixed transport."""
        self._session = aiohttp.ClientSession()
        try:
            about = await self._about()
            bff = about.get("bff")
            if isinstance(bff, dict) and isinstance(bff.get("publicUrl"), str):
                self.bus_url = bff["publicUrl"]
            self.realm_adapter = choose_adapter(about)
            if self.scenes is not None:
                self._setup_scenes(about)
            if self.open_bus_early and self.bus_url is not None:
                try:  # listening before the first island: no offer is missed
                    await self._message_bus()
                    await load_aiortc()
                except TransportError as e:
                    self._report(e)
            protocol, _ = parse_connection_string(self.realm_adapter)
            if protocol == "archipelago":
                await self._connect_connector(self.realm_adapter)
            else:
                await self._swap(IslandChanged("", self.realm_adapter, None, {}))
                if self.scenes is not None:  # no heartbeats: follow the position for scenes
                    self._tasks.append(asyncio.create_task(self._heartbeats(send=False)))
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Stop heartbeats, leave the island transport, close the connector session."""
        self._stopped = True
        tasks, self._tasks = self._tasks, []
        if self._drainer is not None:
            tasks.append(self._drainer)
        if self._scene_drainer is not None:
            tasks.append(self._scene_drainer)
        for task in tasks:
            if task is not asyncio.current_task():
                task.cancel()
        for task in tasks:
            if task is not asyncio.current_task():
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        async with self._swap_lock:
            adapter, self.adapter = self.adapter, None
            if adapter is not None:
                await adapter.disconnect()
        async with self._scene_lock:
            scene, self.scene_adapter = self.scene_adapter, None
            if scene is not None:
                await scene.disconnect()
        if self.gatekeeper is not None:
            await self.gatekeeper.close()
        bus, self.bus = self.bus, None
        if self.signals is not None:
            self.signals.close()
            self.signals = None
        if bus is not None:
            await bus.close()
        if self._ws is not None:
            await self._ws.close()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(self, data: bytes, *, reliable: bool) -> bool:
        """Send through the current island transport; False when there is none yet."""
        adapter = self.adapter
        if adapter is None or not adapter.connected:
            return False
        await adapter.send(data, reliable=reliable)
        return True

    async def send_scene(self, data: bytes, *, reliable: bool) -> bool:
        """Send through the current scene room; False when there is none."""
        adapter = self.scene_adapter
        if adapter is None or not adapter.connected:
            return False
        await adapter.send(data, reliable=reliable)
        return True

    # --- realm and connector ----------------------------------------------------

    async def _about(self) -> dict[str, Any]:
        assert self._session is not None
        url = self.realm_url + "/about"
        try:
            async with self._session.get(url, timeout=aiohttp.ClientTimeout(self.timeout_s)) as r:
                if r.status != 200:
                    raise _error(f"GET {url}: HTTP {r.status}", "about_failed")
                body: dict[str, Any] = await r.json(content_type=None)
                return body
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as e:
            raise _error(f"GET {url}: {e}", "about_failed") from e

    async def _connect_connector(self, conn_str: str) -> None:
        assert self._session is not None
        url = (
            conn_str[len(ARCHIPELAGO_PREFIX) :]
            if conn_str.startswith(ARCHIPELAGO_PREFIX)
            else (conn_str[len("archipelago:") :])
        )
        try:
            self._ws = await self._session.ws_connect(url, max_msg_size=1 << 22)
        except (aiohttp.ClientError, OSError) as e:
            raise _error(f"cannot open the connector {url}: {e}", "connector_failed") from e
        try:
            await asyncio.wait_for(self._handshake(), self.timeout_s)
        except TimeoutError:
            raise _error(f"connector handshake at {url} timed out", "handshake_timeout") from None
        except DecodeError as e:
            raise _error(f"undecodable frame from the connector: {e}", "handshake_failed") from e
        except (aiohttp.ClientError, ConnectionError) as e:
            raise _error(f"the connector dropped the handshake: {e}", "handshake_failed") from e
        self.handshakes += 1
        self._tasks = [t for t in self._tasks if not t.done()]
        self._tasks.append(asyncio.create_task(self._read_connector()))
        self._heartbeat_task = asyncio.create_task(self._heartbeats())
        self._tasks.append(self._heartbeat_task)

    async def _send_client(self, packet: dict[str, Any]) -> None:
        assert self._ws is not None
        await self._ws.send_bytes(codec.encode(codec.CLIENT_PACKET, packet))

    async def _next_server_packet(self) -> dict[str, Any]:
        assert self._ws is not None
        msg = await self._ws.receive()
        if msg.type != aiohttp.WSMsgType.BINARY:
            code = self._ws.close_code
            raise _error(
                f"connector closed the handshake: {code} {msg.extra!r}", "handshake_failed", code
            )
        return codec.decode(codec.SERVER_PACKET, msg.data, including_defaults=True)

    async def _handshake(self) -> None:
        await self._send_client({"challengeRequest": {"address": self.identity.address}})
        packet = await self._next_server_packet()
        if "challengeResponse" not in packet:
            raise _error(f"expected challengeResponse, got {sorted(packet)}", "handshake_failed")
        chain = self.identity.sign_challenge(packet["challengeResponse"]["challengeToSign"])
        await self._send_client({"signedChallenge": {"authChainJson": chain}})
        packet = await self._next_server_packet()
        if "welcome" not in packet:
            raise _error(f"expected welcome, got {sorted(packet)}", "handshake_failed")
        self.peer_id = str(packet["welcome"]["peerId"])

    async def _position(self) -> Vec3 | None:
        source = self.position
        if isinstance(source, AsyncIterator):
            try:
                return await anext(source)
            except StopAsyncIteration:
                return None
        value = source()
        if isinstance(value, Awaitable):
            value = await value
        return value

    async def _heartbeats(self, send: bool = True) -> None:
        while True:
            pos = await self._position()
            if pos is None:
                return  # the position source ended: stop heartbeating
            x, y, z = (float(v) for v in pos)
            if all(math.isfinite(v) for v in (x, y, z)):
                if self.scenes is not None:
                    self._follow_scene(x, z)
                if not send:
                    await asyncio.sleep(self.heartbeat_interval_s)
                    continue
                try:
                    await self._send_client({"heartbeat": {"position": {"x": x, "y": y, "z": z}}})
                except (aiohttp.ClientError, ConnectionError):
                    return  # the session is gone; the reader reports DISCONNECTION
            await asyncio.sleep(self.heartbeat_interval_s)

    async def _read_connector(self) -> None:
        ws = self._ws
        assert ws is not None
        error: Exception | None = None
        try:
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.BINARY:
                    continue
                try:
                    packet = codec.decode(codec.SERVER_PACKET, msg.data, including_defaults=True)
                except DecodeError as e:
                    self._protocol_error(e)
                    continue
                await self._on_server_packet(packet)
        except (aiohttp.ClientError, OSError) as e:
            error = e
        if self._stopped:
            return
        code = ws.close_code
        if error is None and code not in (None, 1000):
            error = _error(f"connector closed the session: {code}", "connector_failed", code)
        self.events.emit(DISCONNECTION, Disconnection(kicked=self.kicked, error=error))
        if self.reconnect and not self.kicked and code not in NO_RECONNECT and not self._stopped:
            self._tasks.append(asyncio.create_task(self._reconnect()))

    async def _reconnect(self) -> None:
        """The session is gone: leave the island, then /about + handshake with back-off."""
        hb, self._heartbeat_task = self._heartbeat_task, None
        if hb is not None and hb is not asyncio.current_task():
            hb.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await hb
        async with self._swap_lock:  # the island belonged to the old session
            adapter, self.adapter = self.adapter, None
            self._pending = None
            if adapter is not None:
                await adapter.disconnect()
            self.island_id = None
            self.peers = {}
        attempt = 0
        while not self._stopped:
            delay = min(self.reconnect_max_s, self.reconnect_base_s * 2**attempt)
            await asyncio.sleep(delay * (0.5 + 0.5 * self._rng.random()))
            attempt += 1
            if self._stopped:
                return
            old, self._ws = self._ws, None
            if old is not None:
                await old.close()
            try:
                about = await self._about()
                conn = choose_adapter(about)
                if parse_connection_string(conn)[0] != "archipelago":
                    raise _error(f"the realm offers {conn!r}, not its connector", "about_failed")
                await self._connect_connector(conn)
            except TransportError as e:
                self.reconnect_failures += 1
                log.info("reconnect attempt %d failed: %s (%s)", attempt, e, e.code)
                continue
            self.realm_adapter = conn
            self.reconnects += 1
            log.info("connector session restored", extra={"attempts": attempt})
            return

    async def _on_server_packet(self, packet: dict[str, Any]) -> None:
        if "islandChanged" in packet:
            ic = packet["islandChanged"]
            change = IslandChanged(
                island_id=str(ic.get("islandId", "")),
                conn_str=str(ic.get("connStr", "")),
                from_island_id=ic.get("fromIslandId"),
                peers={k: _vec(v) for k, v in ic.get("peers", {}).items()},
            )
            # Latest wins: a swap in progress picks this one up when it finishes.
            self._pending = change
            if self._drainer is None or self._drainer.done():
                self._drainer = asyncio.create_task(self._drain_swaps())
        elif "joinIsland" in packet:
            j = packet["joinIsland"]
            if j.get("islandId") == self.island_id:
                self.peers.setdefault(str(j.get("peerId")), (math.nan, math.nan, math.nan))
                if self.adapter is not None:
                    self.adapter.members_changed(self.peers)
        elif "leftIsland" in packet:
            left = packet["leftIsland"]
            if left.get("islandId") == self.island_id:
                self.peers.pop(str(left.get("peerId")), None)
                if self.adapter is not None:
                    self.adapter.members_changed(self.peers)
        elif "kicked" in packet:
            self.kicked = True
        else:
            self._protocol_error(_error(f"unexpected packet {sorted(packet)}", "protocol_error"))

    async def _drain_swaps(self) -> None:
        while self._pending is not None and not self._stopped:
            change, self._pending = self._pending, None
            await self._swap(change)

    async def _swap(self, change: IslandChanged) -> None:
        async with self._swap_lock:
            old, self.adapter = self.adapter, None
            if old is not None:
                # Disconnect first: exactly one transport at a time; the old adapter
                # delivers nothing once disconnect() starts.
                await old.disconnect()
            if self._stopped:
                return
            self.island_id = change.island_id or None
            self.peers = dict(change.peers)
            if change.island_id:
                self.island_changes += 1
            self.events.emit(ISLAND_CHANGED, change)
            try:
                options = await self._options_for(change)
                adapter = create_adapter(change.conn_str, self.identity, **options)
            except TransportError as e:
                self._report(e)
                return
            adapter.on(MESSAGE, partial(self._relay, adapter, MESSAGE))
            adapter.on(PEER_DISCONNECTED, partial(self._relay, adapter, PEER_DISCONNECTED))
            adapter.on(ERROR, partial(self._relay_error, adapter))
            adapter.on(DISCONNECTION, partial(self._on_transport_lost, adapter))
            try:
                await adapter.connect()
            except TransportError as e:
                self._report(e)
                adapter = OfflineAdapter("offline:offline")
                await adapter.connect()
            else:
                if not isinstance(adapter, OfflineAdapter):
                    self.transport_handshakes += 1
            self.adapter = adapter
            adapter.members_changed(self.peers)  # joins and leaves during the connect

    async def _options_for(self, change: IslandChanged) -> dict[str, Any]:
        protocol, _ = parse_connection_string(change.conn_str)
        if protocol == "p2p":
            bus = await self._message_bus()
            options: dict[str, Any] = {"bus": bus, "hub": self.signals, "members": self.peers}
            if self.p2p_options is not None:
                options["options"] = self.p2p_options
            return options
        return self.adapter_options if protocol in ("ws-room", "livekit") else {}

    async def _message_bus(self) -> MessageBusClient:
        """The /bus session for P2P signalling, opened on first use (TransportError
        ``bus_unavailable`` when the realm has none, ``bus_failed`` etc. from connecting)."""
        if self.bus is not None and not self.bus.closed:
            return self.bus
        ended, self.bus = self.bus, None
        if ended is not None:  # ended by the server: release its socket and HTTP session
            await ended.close()
        if self.bus_url is None:
            raise _error("the realm advertises no /bus (bff) for P2P signalling", "bus_unavailable")
        if self.signals is not None:  # the previous session's
            self.signals.close()
            self.signals = None
        bus = MessageBusClient(self.bus_url, self.identity, timeout_s=self.timeout_s)
        await bus.connect()
        self.bus = bus
        try:
            self.signals = await SignalHub(bus).start()
        except Exception as e:
            raise _error(f"cannot subscribe the P2P signalling topics: {e}", "bus_failed") from e
        bus.on_closed(lambda: self._bus_lost(bus))
        return bus

    def _bus_lost(self, bus: MessageBusClient) -> None:
        """The server ended our /bus session: open another one while a P2P island needs it."""
        if self._stopped or self.bus is not bus:
            return
        self.bus_losses += 1
        self._tasks.append(asyncio.create_task(self._reopen_bus()))

    async def _reopen_bus(self) -> None:
        from dclcomms.client.p2p import P2PAdapter

        delay = 0.5
        while not self._stopped:
            await asyncio.sleep(delay)
            adapter = self.adapter
            if not isinstance(adapter, P2PAdapter):
                return  # opened again with the next P2P island
            try:
                bus = await self._message_bus()
            except TransportError as e:
                self._report(e)
                delay = min(delay * 2, 10.0)
                continue
            if self.adapter is adapter and self.signals is not None:
                adapter.use_bus(bus, self.signals)
            return

    # --- scene rooms (ADR-204) -------------------------------------------------

    def _setup_scenes(self, about: dict[str, Any]) -> None:
        if self.realm_name is None:
            conf = about.get("configurations")
            name = conf.get("realmName") if isinstance(conf, dict) else None
            self.realm_name = str(name) if name else "main"
        if self.gatekeeper_url is None:
            self.gatekeeper_url = gatekeeper_url_from_about(about, self.realm_url)
        assert self._session is not None
        self.gatekeeper = GatekeeperClient(
            self.gatekeeper_url, self.identity, session=self._session, timeout_s=self.timeout_s
        )

    def _follow_scene(self, x: float, z: float) -> None:
        """The player is at (x, z): swap the scene room when the scene changed (and
        rejoin one that failed or was lost, no sooner than 2 s after a failure)."""
        assert self.scenes is not None
        parcel = parcel_of(x, z)
        self.parcel = parcel
        scene = self.scenes(parcel)
        if scene != self._kicked_from:
            self._kicked_from = None  # left the scene that kicked us
        busy = self._scene_drainer is not None and not self._scene_drainer.done()
        target = self._scene_pending[0] if self._scene_pending is not None else self._scene_target
        if scene == target and (
            busy
            or scene is None
            or self.scene_adapter is not None
            or scene == self._kicked_from
            or asyncio.get_running_loop().time() < self._scene_retry_at
        ):
            return
        self._scene_target = scene
        self._scene_pending = (scene, parcel)  # latest wins
        if not busy:
            self._scene_drainer = asyncio.create_task(self._drain_scenes())

    async def _drain_scenes(self) -> None:
        while self._scene_pending is not None and not self._stopped:
            (scene, parcel), self._scene_pending = self._scene_pending, None
            await self._scene_swap(scene, parcel)

    async def _scene_swap(self, scene: str | None, parcel: tuple[int, int]) -> None:
        started = asyncio.get_running_loop().time()
        async with self._scene_lock:
            old, self.scene_adapter = self.scene_adapter, None
            previous = self.scene_id
            if old is not None:
                await old.disconnect()  # leave first: at most one scene room
            if self._stopped:
                return
            self.scene_id = scene
            self.scene_room = None
            conn_str: str | None = None
            adapter: Adapter | None = None
            if scene is not None:
                adapter, conn_str = await self._join_scene(scene, parcel)
            if adapter is not None:
                self.scene_adapter = adapter
                self.scene_room = _room_of(conn_str or "")
                self.scene_joins += 1
                self.scene_join_s.append(asyncio.get_running_loop().time() - started)
                if old is not None:
                    self.scene_swaps += 1
            self.events.emit(
                SCENE_CHANGED, SceneChanged(scene, previous, parcel, conn_str, self.scene_room)
            )

    async def _join_scene(
        self, scene: str, parcel: tuple[int, int]
    ) -> tuple[Adapter | None, str | None]:
        assert self.gatekeeper is not None and self.realm_name is not None
        try:
            conn_str = await self.gatekeeper.scene_adapter(
                SceneRequest(self.realm_name, scene, parcel)
            )
            protocol, _ = parse_connection_string(conn_str)
            if protocol not in ("ws-room", "livekit"):
                raise _error(
                    f"the gatekeeper answered a {protocol!r} scene room", "gatekeeper_failed"
                )
            adapter = create_adapter(conn_str, self.identity, **self.adapter_options)
        except TransportError as e:
            self._scene_failed(e)
            return None, None
        adapter.on(MESSAGE, partial(self._relay_scene, adapter))
        adapter.on(ERROR, partial(self._relay_scene_error, adapter))
        adapter.on(DISCONNECTION, partial(self._on_scene_lost, adapter, scene))
        try:
            await adapter.connect()
        except TransportError as e:
            if e.close_code == 4005:  # banned between the token and the handshake
                self._scene_kicked(scene, str(e), e.close_code)
            else:
                self._scene_failed(e)
            return None, conn_str
        return adapter, conn_str

    def _scene_failed(self, err: TransportError) -> None:
        self.scene_failures += 1
        self._scene_retry_at = asyncio.get_running_loop().time() + 2.0
        log.warning("scene room failed: %s (%s)", err, err.code)
        self.events.emit(ERROR, err)

    def _scene_kicked(self, scene: str, reason: str, close_code: int | None) -> None:
        self.scene_kicks += 1
        self._kicked_from = scene
        self.events.emit(SCENE_KICKED, SceneKicked(scene, reason, close_code))

    def _relay_scene(self, adapter: Adapter, message: Any) -> None:
        if adapter is self.scene_adapter:  # never from a scene room we left
            self.events.emit(SCENE_MESSAGE, message)

    def _relay_scene_error(self, adapter: Adapter, err: Exception) -> None:
        if adapter is self.scene_adapter:
            self._protocol_error(err)

    def _on_scene_lost(self, adapter: Adapter, scene: str, gone: Disconnection) -> None:
        if adapter is not self.scene_adapter or gone.error is None:
            return  # left by a swap or stop
        self.scene_adapter = None
        self.scene_room = None
        code = getattr(gone.error, "close_code", None)
        if gone.kicked or code == 4005:
            reason = str(gone.error)
            self._scene_kicked(scene, reason, code)
        else:  # the room closed on us: rejoin on a later position
            self.scene_losses += 1
            self._scene_retry_at = asyncio.get_running_loop().time() + 2.0
            self.events.emit(ERROR, gone.error)

    def _relay(self, adapter: Adapter, event: str, payload: Any) -> None:
        if adapter is self.adapter:  # never deliver from a transport we swapped away
            self.events.emit(event, payload)

    def _relay_error(self, adapter: Adapter, err: Exception) -> None:
        if adapter is self.adapter:
            self._protocol_error(err)

    def _on_transport_lost(self, adapter: Adapter, gone: Disconnection) -> None:
        # The island room closed on us (kick, too slow, server gone): report it; the
        # next island_changed brings a fresh transport.
        if adapter is self.adapter and gone.error is not None:
            self.transport_losses += 1
            self.events.emit(ERROR, gone.error)

    def _report(self, err: TransportError) -> None:
        log.warning("island transport failed: %s (%s)", err, err.code)
        self.events.emit(ERROR, err)

    def _protocol_error(self, err: Exception) -> None:
        self.protocol_errors += 1
        self.events.emit(ERROR, err)
