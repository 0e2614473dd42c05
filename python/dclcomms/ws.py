"""The WebSocket server core: Archipelago connector (``/ws``), RFC-5 rooms and the bus.

Everything per socket (handshakes, limits, close codes, room fan-out) runs in
C++ I/O threads; Python drains :meth:`Server.poll` (e.g. from an asyncio
reader on :meth:`Server.fileno`) and answers HTTP requests with
:meth:`Server.respond`. The bus (``/bus``) is only a transport here: the
connector handshake, then :class:`BusFrame` text frames in and
:meth:`Server.send_bus` text frames out; their JSON is the embedder's. See
``docs/ws.md``.

>>> from dclcomms.ws import Server, ServerConfig
>>> server = Server(ServerConfig(connector=False))
>>> port = server.start()
>>> server.stats()["rooms"]["users"]
0
>>> server.stop()
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import FrozenInstanceError, dataclass
from typing import Any, Final, TypeAlias, cast

import dclcomms
from dclcomms import _core
from dclcomms.heartbeats import UNSET, HeartbeatBatch, Unset
from dclcomms.metrics import Registry

__all__ = [
    "UNSET",
    "BridgeClosed",
    "BridgeFrame",
    "BridgeOpened",
    "BusClosed",
    "BusFrame",
    "BusOpened",
    "Event",
    "Heartbeats",
    "HttpRequest",
    "PeerConnected",
    "PeerDisconnected",
    "RoomMessage",
    "Server",
    "ServerConfig",
    "Unset",
]


# Connector: accepted heartbeats in arrival order (one batch per poll run), as the
# engine ingests them (``desired_rooms``: UNSET = field absent, keep; "" = clear).
Heartbeats = HeartbeatBatch


class ServerConfig(_core.WsConfig):
    """Settings of one server: every WebSocket limit, with its default and unit.

    The limits are the fields of the C++ ``ws::Config``, declared once
    (``DCLCOMMS_WS_CONFIG`` in ``cpp/ws/include/dclcomms/ws/server.hpp``) and
    bound as :class:`dclcomms._core.WsConfig`: keyword-only, frozen, each a
    read-only property whose docstring gives its unit and default
    (``help(ServerConfig)``; :meth:`fields` lists them). A value out of range
    raises :class:`~dclcomms.errors.ConfigError` (``code="invalid_parameter"``)
    whose message starts with the field's name, also given as its ``field``.
    ``version`` and ``commit_hash`` are what the embedder's ``/status`` reports;
    the server does not read them. A realm's processes build theirs with
    :meth:`dclcomms.config.RealmConfig.server_config`.
    """

    version: str
    commit_hash: str

    def __init__(self, *, version: str | None = None, commit_hash: str = "", **limits: Any) -> None:
        try:
            super().__init__(**limits)
        except dclcomms.ConfigError as e:  # "<field>: <why>": name the field in e.field too
            name = str(e).split(":", 1)[0]
            if e.field is None and name in _FIELD_NAMES:
                e.field = name
            raise
        object.__setattr__(self, "version", dclcomms.__version__ if version is None else version)
        object.__setattr__(self, "commit_hash", commit_hash)

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ServerConfig):
            return NotImplemented
        same = (self.version, self.commit_hash) == (other.version, other.commit_hash)
        return same and super().__eq__(other)

    def __hash__(self) -> int:
        return hash((super().__hash__(), self.version, self.commit_hash))

    def __repr__(self) -> str:
        identity = f"version={self.version!r}, commit_hash={self.commit_hash!r}"
        return f"{super().__repr__()[:-1]}, {identity})"


_FIELD_NAMES: Final = frozenset(name for name, *_ in _core.WsConfig.fields())


@dataclass(frozen=True)
class HttpRequest:
    """An HTTP request the C++ side does not answer itself: call ``respond`` once."""

    request_id: int
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class PeerConnected:
    """Connector: handshake completed, welcome sent."""

    address: str


@dataclass(frozen=True)
class PeerDisconnected:
    """Connector: the registered session for address closed (not a replaced one)."""

    address: str


@dataclass(frozen=True)
class BusOpened:
    """Bus: handshake completed, welcome sent."""

    address: str


@dataclass(frozen=True)
class BusFrame:
    """Bus: one text frame of a completed session, in arrival order (not parsed here)."""

    address: str
    text: str


@dataclass(frozen=True)
class BusClosed:
    """Bus: the registered session for address closed (not a replaced one; also at stop)."""

    address: str


@dataclass(frozen=True)
class BridgeOpened:
    """Bridge: a connection to ``/bridge``, not authenticated yet (its first frames carry
    the credential: accept it with :meth:`Server.accept_bridge` or close it)."""

    id: int
    query: str


@dataclass(frozen=True)
class BridgeFrame:
    """Bridge: one text frame of session ``id``, in arrival order (not parsed here)."""

    id: int
    text: str


@dataclass(frozen=True)
class BridgeClosed:
    """Bridge: session ``id`` closed (for any reason; also at stop)."""

    id: int


@dataclass(frozen=True)
class RoomMessage:
    """A tapped room's update (:meth:`Server.set_room_tap`): ``sender`` is the member's
    address, or the identity an injected update was sent as; ``body`` the RFC-4 packet."""

    room: str
    sender: str
    body: bytes
    unreliable: bool
    received_ms: int  # server clock, ms since the epoch
    scene: bool = False  # a scene room (/scene-rooms/<room>), else /rooms/<room>


Event: TypeAlias = (
    HttpRequest
    | PeerConnected
    | PeerDisconnected
    | Heartbeats
    | BusOpened
    | BusFrame
    | BusClosed
    | BridgeOpened
    | BridgeFrame
    | BridgeClosed
    | RoomMessage
)


_K = _core.WsEventKind
# Polled events are (kind, *fields): one constructor per kind, fields in order.
_EVENTS: Final[dict[_core.WsEventKind, Callable[..., Event]]] = {
    _K.HEARTBEATS: HeartbeatBatch,
    _K.HTTP: HttpRequest,
    _K.CONNECTED: PeerConnected,
    _K.DISCONNECTED: PeerDisconnected,
    _K.BUS_OPENED: BusOpened,
    _K.BUS_FRAME: BusFrame,
    _K.BUS_CLOSED: BusClosed,
    _K.BRIDGE_OPENED: BridgeOpened,
    _K.BRIDGE_FRAME: BridgeFrame,
    _K.BRIDGE_CLOSED: BridgeClosed,
    _K.ROOM_MESSAGE: RoomMessage,
}


def _event(raw: tuple[object, ...]) -> Event:
    return _EVENTS[cast(_core.WsEventKind, raw[0])](*raw[1:])


class Server:
    """One listening socket serving the connector, RFC-5 rooms and/or the bus."""

    def __init__(self, config: ServerConfig | None = None) -> None:
        self.config = config if config is not None else ServerConfig()
        self._core = _core.WsServer(self.config)

    def start(self) -> int:
        """Binds and starts the I/O thread(s); returns the bound port."""
        return self._core.start()

    def stop(self) -> None:
        """Closes every socket with 1001 and joins the threads; idempotent."""
        self._core.stop()

    @property
    def port(self) -> int:
        return self._core.port

    def fileno(self) -> int:
        """An eventfd, readable while events are pending (for ``loop.add_reader``)."""
        return self._core.fileno()

    def poll(self, max_events: int = 4096) -> list[Event]:
        """Drains pending events without blocking."""
        return [_event(raw) for raw in self._core.poll(max_events)]

    def respond(
        self, request_id: int, status: int, headers: Mapping[str, str], body: bytes
    ) -> None:
        """Answers an :class:`HttpRequest` (exactly once; later calls are ignored)."""
        self._core.respond(request_id, status, list(headers.items()), body)

    def send_island_changed(
        self,
        address: str,
        island_id: str,
        conn_str: str,
        from_island_id: str | None,
        peers: Sequence[tuple[str, tuple[float, float, float]]] | bytes,
    ) -> None:
        """``ServerPacket{island_changed}`` to the connector session of address, encoded
        in one call.

        ``peers``: every member with its position, or the members' entries already
        encoded (``bytes``, e.g. :meth:`dclcomms.pubsub.IslandMembers.to_bytes`, shared by
        every member of the island), which are copied into the frame as they are.
        """
        if isinstance(peers, bytes):
            self._core.send_island_changed(address, island_id, conn_str, from_island_id, peers)
        else:
            self._core.send_island_changed(
                address, island_id, conn_str, from_island_id, list(peers)
            )

    def send_island_changed_message(self, address: str, message: bytes) -> None:
        """``ServerPacket{island_changed}`` around an encoded ``IslandChangedMessage``.

        The bytes are wrapped, not re-encoded or checked: pass what dclcomms encoded, or
        decoded successfully (as the pub/sub does for every message it delivers).
        """
        self._core.send_island_changed_message(address, message)

    def relay_stats(self) -> dict[str, int]:
        """The connector relay's totals (island messages handed over from NATS in C++,
        :meth:`dclcomms.nats.pubsub.NatsPubSub.relay_islands`): ``items``,
        ``dropped_stopped``, ``drains`` and ``last_drain_ns`` (``time.monotonic_ns()``
        clock, the end of the last hand-over to the sessions)."""
        return dict(self._core.relay_stats())

    def connector_island_of(self, address: str) -> str | None:
        """The island the C++ relay last sent the connector session of ``address``
        (lowercase); None when none or not connected here."""
        return self._core.connector_island_of(address) or None

    def send_join_island(self, address: str, island_id: str, peer_id: str) -> None:
        self._core.send_join_island(address, island_id, peer_id)

    def send_left_island(self, address: str, island_id: str, peer_id: str) -> None:
        self._core.send_left_island(address, island_id, peer_id)

    def kick(self, address: str, code: int, reason: str) -> None:
        """Closes the connector session of address (4005/4006: after ``kicked``)."""
        self._core.kick(address, code, reason)

    def send_bus(self, address: str, text: str) -> None:
        """One text frame to the bus session of address (ignored when none; over
        ``connector_max_queued_bytes`` queued the receiver is closed 4008 instead)."""
        self._core.send_bus(address, text)

    def close_bus(self, address: str, code: int, reason: str) -> None:
        """Closes the bus session of address (a :class:`BusClosed` follows).

        Codes other than 4000-4999, 1000, 1001, 1008, 1011, 1013 raise ``ConfigError``.
        """
        self._core.close_bus(address, code, reason)

    def publish_feed(self, delta: str, key: str = "") -> None:
        """One live-map frame to every /map/feed page (``map_feed=True``): ``delta`` to pages
        in sync, ``key`` (when not empty) to pages waiting for one. A page with more than
        ``map_feed_max_queued_bytes`` queued skips the frame and waits for a key frame."""
        self._core.publish_feed(delta, key)

    def feed_wants_key(self) -> bool:
        """Whether some /map/feed page waits for a key frame."""
        return self._core.feed_wants_key()

    def kick_room_member(
        self, room: str | None, address: str, reason: str, *, scene: bool = True, bar_ms: int = 0
    ) -> None:
        """Closes the member ``address`` of ``room`` (None: of any room) with
        ``peer_kicked{reason}`` + 4005, in the scene rooms (``scene=True``) or the island
        rooms; with ``bar_ms`` the address is also refused by that room (None: every
        room of the kind) for that long, so a token issued earlier cannot rejoin."""
        self._core.kick_room_member(scene, room or "", address.lower(), reason, bar_ms)

    def unbar_room_member(self, room: str | None, address: str, *, scene: bool = True) -> None:
        """Lifts the bar :meth:`kick_room_member` set on ``address`` for ``room`` (None:
        the bar on every room of the kind; a room's own bar stays) before it runs out:
        the address may join again (an unban)."""
        self._core.unbar_room_member(scene, room or "", address.lower())

    def scene_room_of(self, address: str) -> str | None:
        """The scene room (``/scene-rooms/<room>``) ``address`` is a member of now, or None."""
        return self._core.scene_room_of(address) or None

    def room_members(self, room: str, *, scene: bool = True) -> list[str]:
        """The addresses in ``room`` (scene or island rooms), in join order."""
        return self._core.room_members(scene, room)

    def set_deny_list(self, addresses: Sequence[str]) -> None:
        """Replaces the deny list (connector and bus; checked at challenge_request and
        after auth: 4004)."""
        self._core.set_deny_list(list(addresses))

    def accept_bridge(self, id: int) -> None:
        """Accepts bridge session ``id`` (its credential checked): stops its auth timer."""
        self._core.accept_bridge(id)

    def send_bridge(self, id: int, text: str) -> None:
        """One text frame to bridge session ``id`` (ignored when gone; over
        ``connector_max_queued_bytes`` queued it is closed 4008 instead)."""
        self._core.send_bridge(id, text)

    def close_bridge(self, id: int, code: int, reason: str) -> None:
        """Closes bridge session ``id`` (a :class:`BridgeClosed` follows); codes as
        :meth:`close_bus`."""
        self._core.close_bridge(id, code, reason)

    def set_room_tap(self, room: str, on: bool, scene: bool = False) -> None:
        """While on, every update relayed in ``room`` (and every injected one) is also a
        :class:`RoomMessage` event; untapped rooms cost nothing. ``scene``: the scene room
        ``/scene-rooms/<room>`` (the gatekeeper's registry), else ``/rooms/<room>``; the
        two registries are tapped, injected and released independently."""
        self._core.set_room_tap(room, on, scene)

    def inject_room(
        self, room: str, identity: str, body: bytes, unreliable: bool, scene: bool = False
    ) -> None:
        """Broadcasts ``body`` to every member of ``room`` as a ``peer_update`` from
        ``identity``: an alias of its own, announced with ``peer_join`` on first use and
        listed in later welcomes until :meth:`release_room_identity` or the room empties.
        Dropped (counted ``injected_no_room`` / ``injected_too_big``) when the room has no
        members or the body is over ``max_frame_bytes``."""
        self._core.inject_room(room, identity, body, unreliable, scene)

    def release_room_identity(self, room: str, identity: str, scene: bool = False) -> None:
        """``peer_leave`` for an injecting identity; its alias is forgotten."""
        self._core.release_room_identity(room, identity, scene)

    def stats(self) -> dict[str, Any]:
        """``{"connector": {"sessions", ...}, "rooms": {"users", "rooms", "details", ...},
        "bus": {"sessions", ...}, "bridge": {"sessions", "taps", ...},
        "feed": {"pages", ...}}``."""
        return cast(dict[str, Any], self._core.stats())

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# Prometheus help text of every counter the server exports (docs/ws.md lists them).
_GAUGES = {
    ("connector", "sessions"): "Connector sessions past the handshake",
    ("rooms", "users"): "Members of RFC-5 rooms",
    ("rooms", "rooms"): "Non-empty RFC-5 rooms",
    ("rooms", "scene_users"): "Members of scene rooms (/scene-rooms/<room>)",
    ("rooms", "scene_rooms"): "Non-empty scene rooms",
    ("bus", "sessions"): "Bus sessions past the handshake",
    ("bridge", "sessions"): "Open /bridge sessions (authenticated or not yet)",
    ("bridge", "taps"): "Rooms whose traffic is copied to the bridge",
    ("feed", "pages"): "Live map pages open on /map/feed",
    ("server", "connections"): "Open TCP connections (admitted, reserve included)",
    ("server", "unauthenticated"): "Open connections that have not completed a handshake",
    ("server", "idle_http"): "Open plain HTTP connections waiting for their next request",
    ("server", "max_connections"): "Connections served on every path (then the reserve)",
    ("server", "fd_limit"): "RLIMIT_NOFILE of the process after start raised it",
}


def server_metrics(
    stats: Mapping[str, Any],
    *,
    areas: Sequence[str] = ("connector", "rooms", "bus", "bridge", "feed", "server"),
) -> dict[str, tuple[str, str, float]]:
    """The server's metrics (``dcl_ws_*``) of :meth:`Server.stats`, as a
    :meth:`dclcomms.metrics.Registry.collector` returns them: ``{name: (kind, help, value)}``.

    No per-peer or per-room labels: gauges and monotonic counters only. An area
    absent from stats is skipped.
    """
    out: dict[str, tuple[str, str, float]] = {}
    for area in areas:
        if area not in stats:
            continue
        for key, value in stats[area].items():
            if key == "details":
                continue
            if (area, key) in _GAUGES:
                out[f"dcl_ws_{area}_{key}"] = ("gauge", _GAUGES[(area, key)], int(value))
            else:
                name = f"dcl_ws_{area}_{key}_total"
                out[name] = ("counter", f"{area} {key.replace('_', ' ')}", int(value))
    return out


def metrics_text(
    stats: Mapping[str, Any],
    *,
    areas: Sequence[str] = ("connector", "rooms", "bus", "bridge", "feed", "server"),
) -> str:
    """Prometheus text exposition of :func:`server_metrics` (through a
    :class:`~dclcomms.metrics.Registry`, the one way metrics are defined and rendered)."""
    registry = Registry()
    registry.collector(lambda: server_metrics(stats, areas=areas))
    return registry.render()
