"""Island transports and the realm policy that picks one per island.

A :class:`Transport` turns ``(island_id, peer_ids)`` into one connection string
per peer (archipelago.md 6.2): LiveKit rooms (HS256 JWT minted locally), the
realm's own RFC-5 WebSocket rooms (JWT with ``sub``/``room``/``exp``), or a
fixed string. A :class:`RealmPolicy` chooses the transport of an island; the
core asks it **once per changed island per tick** (never per peer) and, when
the answer differs from the island's current transport, re-issues
``island_changed`` to every member (same island id, new ``conn_str``).

Policies are plain Python classes loaded with ``--policy package.module:Class``;
the constructor receives the :class:`Transports` of the realm::

    class MyPolicy(RealmPolicy):
        def transport_for(self, island: IslandView) -> Transport:
            return self.transports.livekit if len(island.peers) > 20 else self.transports.ws_room

Policies run on the event loop inside the tick: keep them fast and non-blocking.
"""

from __future__ import annotations

import importlib
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from dclcomms.auth import jwt_encode, livekit_token
from dclcomms.config import RealmConfig
from dclcomms.errors import ConfigError


@dataclass(frozen=True)
class IslandView:
    """What a policy sees of an island after the tick's clustering."""

    id: str
    peers: tuple[str, ...]  # member order
    center: tuple[float, float, float]
    radius: float
    max_peers: int
    transport: str | None  # name of its current transport (None: new island)


class Transport(ABC):
    """Issues connection strings for the members of one island."""

    #: stable short name (``livekit``, ``ws-room``, ``fixed``...) used in logs and metrics
    name: str = "transport"
    #: capacity this transport supports (islands above it are not eligible)
    max_island_size: int = 100

    @abstractmethod
    def issue(self, island_id: str, peer_ids: Sequence[str]) -> dict[str, str]:
        """One connection string per admitted peer.

        An omitted peer is rejected: the core evicts it from the island (which hears
        ``peer_left``) and does not re-admit it for 30 s (archipelago.md 2.6 rule 4).
        """


def _ws_scheme(url: str) -> str:
    """http(s) -> ws(s); ws(s) kept."""
    if url.startswith("https://"):
        return "wss://" + url[len("https://") :]
    if url.startswith("http://"):
        return "ws://" + url[len("http://") :]
    return url


class LiveKitTransport(Transport):
    """``livekit:<host>?access_token=<jwt>``: room = island id, identity = address.

    Grants as the reference minter (transports.md 2.2: microphone-only publishing,
    roomList false, canUpdateOwnMetadata true), ``nbf`` = now, ``exp`` = now + ttl.
    """

    name = "livekit"

    def __init__(
        self,
        host: str,
        api_key: str,
        api_secret: str,
        *,
        ttl_s: int = 300,
        max_island_size: int = 100,
    ) -> None:
        if not (host and api_key and api_secret):
            raise ConfigError("LiveKit needs host, API key and API secret", code="bad_value")
        self.host = host if "://" in host else "wss://" + host
        self.api_key = api_key
        self._secret = api_secret
        self.ttl_s = ttl_s
        self.max_island_size = max_island_size

    def issue(self, island_id: str, peer_ids: Sequence[str]) -> dict[str, str]:
        now = int(time.time())
        return {
            p: f"livekit:{self.host}?access_token="
            + livekit_token(
                self.api_key, self._secret, identity=p, room=island_id, ttl_s=self.ttl_s, now_s=now
            )
            for p in peer_ids
        }


class WsRoomTransport(Transport):
    """``ws-room:<base>/rooms/<island>?access_token=<jwt>`` (transports.md 1.3).

    The JWT carries ``sub`` (address), ``room`` (island id), ``iat`` and ``exp``.

    ``base_url`` is the rooms server (this realm by default), ``ws://`` or ``wss://``
    (``http(s)`` is converted). Without a secret no token is attached.
    """

    name = "ws-room"

    def __init__(
        self, base_url: str, secret: str | None, *, ttl_s: int = 300, max_island_size: int = 100
    ) -> None:
        self.base_url = _ws_scheme(base_url).rstrip("/")
        self._secret = secret or None
        self.ttl_s = ttl_s
        self.max_island_size = max_island_size

    def with_base(self, base_url: str, *, max_island_size: int) -> WsRoomTransport:
        """The same secret and token lifetime for another rooms server (a transport node)."""
        return WsRoomTransport(
            base_url, self._secret, ttl_s=self.ttl_s, max_island_size=max_island_size
        )

    def issue(self, island_id: str, peer_ids: Sequence[str]) -> dict[str, str]:
        base = f"ws-room:{self.base_url}/rooms/{island_id}"
        if self._secret is None:
            return dict.fromkeys(peer_ids, base)
        now = int(time.time())
        out = {}
        for p in peer_ids:
            claims = {"sub": p, "room": island_id, "iat": now, "exp": now + self.ttl_s}
            out[p] = f"{base}?access_token={jwt_encode(claims, self._secret)}"
        return out


class FixedTransport(Transport):
    """Every peer gets the same configured string (``offline:offline`` for no comms)."""

    name = "fixed"

    def __init__(self, conn_str: str, *, max_island_size: int = 100) -> None:
        protocol = conn_str.split(":", 1)[0]
        if ":" not in conn_str or not protocol[:1].isalpha():
            raise ConfigError(
                f"fixed adapter {conn_str!r} is not a connection string (PROTOCOL:PARAMETERS)",
                code="bad_value",
            )
        self.conn_str = conn_str
        self.max_island_size = max_island_size

    def issue(self, island_id: str, peer_ids: Sequence[str]) -> dict[str, str]:
        return dict.fromkeys(peer_ids, self.conn_str)


@dataclass(frozen=True)
class Transports:
    """The transports a realm offers its policy; ``default`` is the built-in choice."""

    ws_room: WsRoomTransport
    livekit: LiveKitTransport | None = None
    fixed: FixedTransport | None = None

    @property
    def default(self) -> Transport:
        if self.fixed is not None:
            return self.fixed
        if self.livekit is not None:
            return self.livekit
        return self.ws_room

    def by_name(self) -> dict[str, Transport]:
        out: dict[str, Transport] = {"ws-room": self.ws_room}
        if self.livekit is not None:
            out["livekit"] = self.livekit
        if self.fixed is not None:
            out["fixed"] = self.fixed
        return out


def public_base_url(config: RealmConfig, bound_port: int) -> str:
    """The realm's public http(s) URL: ``public_url`` if set, else the bound address."""
    if config.public_url:
        return config.public_url.rstrip("/")
    host = config.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return f"http://{host}:{bound_port}"


def build_transports(config: RealmConfig, *, bound_port: int, ws_room_secret: str) -> Transports:
    """The built-in transports for a running realm (``ws_room_secret`` already resolved)."""
    ws_base = config.ws_room_url or public_base_url(config, bound_port)
    if urlsplit(_ws_scheme(ws_base)).scheme not in ("ws", "wss"):
        raise ConfigError(f"ws_room_url {ws_base!r} must be http(s) or ws(s)", code="bad_value")
    size = config.island_size
    return Transports(
        ws_room=WsRoomTransport(
            ws_base, ws_room_secret, ttl_s=config.island_token_ttl_s, max_island_size=size
        ),
        livekit=LiveKitTransport(
            config.livekit_host,
            config.livekit_api_key,
            config.livekit_api_secret,
            ttl_s=config.island_token_ttl_s,
            max_island_size=size,
        )
        if config.livekit_enabled
        else None,
        fixed=FixedTransport(config.fixed_adapter, max_island_size=size)
        if config.fixed_adapter
        else None,
    )


class RealmPolicy:
    """Picks the transport of an island. The default: fixed > LiveKit > WebSocket rooms.

    Subclasses override :meth:`transport_for`; they may keep state between calls
    (hysteresis) and receive :meth:`island_removed` when an island disappears.
    """

    def __init__(self, transports: Transports) -> None:
        self.transports = transports

    def transport_for(self, island: IslandView) -> Transport:
        return self.transports.default

    def island_removed(self, island_id: str) -> None:
        """Called once when an island no longer exists."""

    def islands_to_recheck(self) -> Iterable[str]:
        """Islands to ask about on this tick although their membership did not change.

        Called once per tick before the policy runs; an island whose answer then differs
        from its current transport is re-issued to every member (e.g. its node died).
        """
        return ()


class CrowdedOnLiveKit(RealmPolicy):
    """Crowded islands on LiveKit, small ones on the realm's WebSocket rooms.

    Hysteresis keeps an island from flapping between transports (each switch
    re-issues every member's connection string): an island moves up to LiveKit
    when it reaches ``up_at`` peers and back down only when it falls to
    ``down_at`` or fewer. A new island starts on the side its size dictates.
    Without LiveKit configured everything stays on WebSocket rooms.
    """

    def __init__(self, transports: Transports, *, up_at: int = 8, down_at: int = 4) -> None:
        super().__init__(transports)
        if not 0 <= down_at < up_at:
            raise ConfigError("CrowdedOnLiveKit needs 0 <= down_at < up_at", code="bad_value")
        self.up_at = up_at
        self.down_at = down_at

    def transport_for(self, island: IslandView) -> Transport:
        livekit = self.transports.livekit
        if livekit is None:
            return self.transports.ws_room
        n = len(island.peers)
        if island.transport == livekit.name:
            return self.transports.ws_room if n <= self.down_at else livekit
        return livekit if n >= self.up_at else self.transports.ws_room


def load_policy(spec: str, transports: Transports) -> RealmPolicy:
    """Instantiate ``package.module:Class`` (empty spec = :class:`RealmPolicy`)."""
    if not spec:
        return RealmPolicy(transports)
    module_name, _, attr = spec.partition(":")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"policy {spec!r} cannot be loaded: {e}", code="bad_policy") from None
    if not (isinstance(obj, type) and issubclass(obj, RealmPolicy)):
        raise ConfigError(f"policy {spec!r} is not a RealmPolicy subclass", code="bad_policy")
    try:
        policy: RealmPolicy = obj(transports)
    except ConfigError:
        raise
    except Exception as e:
        raise ConfigError(f"policy {spec!r} failed to start: {e}", code="bad_policy") from None
    return policy


__all__ = [
    "CrowdedOnLiveKit",
    "FixedTransport",
    "IslandView",
    "LiveKitTransport",
    "RealmPolicy",
    "Transport",
    "Transports",
    "WsRoomTransport",
    "build_transports",
    "load_policy",
    "public_base_url",
]
