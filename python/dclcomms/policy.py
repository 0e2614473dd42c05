"""Island transports and the realm policy that picks one per island.

A :class:`Transport` turns ``(island_id, peer_ids)`` into one connection string
per peer (archipelago.md 6.2): LiveKit rooms (HS256 JWT minted locally), the
realm's own RFC-5 WebSocket rooms (JWT with ``sub``/``room``/``exp``), or a
fixed string. A :class:`RealmPolicy` chooses the transport of an island; the
core asks it **once per changed island per tick** (never per peer) and, when
the answer differs from the island's current transport, re-issues
``island_changed`` to every member (same island id, new ``conn_str``).

Policies are plain Python classes loaded with ``--policy package.module:Class``
(or a built-in by name: ``--policy p2p``, ``--policy tiered``, see
:data:`BUILTIN_POLICIES`); the constructor receives the :class:`Transports` of
the realm::

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

from dclcomms import _core
from dclcomms.config import BUILTIN_POLICY_NAMES, RealmConfig
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

    def native_issuer(self) -> NativeIssuer | None:
        """How :meth:`issue` mints, for the core's C++ tick to mint the same strings
        without Python per peer; None (the default) when it cannot: the core then calls
        :meth:`issue`. The built-in transports describe themselves, unless a subclass
        overrides :meth:`issue` (its own method is always the one called)."""
        return None

    def _own_issue(self, cls: type[Transport]) -> bool:
        """:meth:`issue` is ``cls``'s, not a subclass's override."""
        return type(self).issue is cls.issue


#: ``(kind, text, api_key, secret, ttl_s, now_s)`` of :meth:`Transport.native_issuer`:
#: kind ``fixed`` (text for everyone), ``p2p``, ``ws-room`` (text ``ws-room:<base>``; a
#: token when there is a secret) or ``livekit`` (text ``livekit:<host>?access_token=``).
NativeIssuer = tuple[str, str, str, str | bytes, int, int]


def _mint(spec: NativeIssuer, island_id: str, peer_ids: Sequence[str]) -> dict[str, str]:
    """A built-in transport's strings for ``peer_ids`` minted in one C++ call."""
    peers = list(peer_ids)
    return dict(zip(peers, _core.mint_connection_strings(*spec, island_id, peers), strict=True))


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
            given = {
                "livekit_host": host,
                "livekit_api_key": api_key,
                "livekit_api_secret": api_secret,
            }
            raise ConfigError(
                "LiveKit needs host, API key and API secret",
                code="bad_value",
                field=next(name for name, v in given.items() if not v),
            )
        self.host = host if "://" in host else "wss://" + host
        self.api_key = api_key
        self._secret = api_secret
        self.ttl_s = ttl_s
        self.max_island_size = max_island_size

    def native_issuer(self) -> NativeIssuer | None:
        return self._spec() if self._own_issue(LiveKitTransport) else None

    def _spec(self) -> NativeIssuer:
        text = f"livekit:{self.host}?access_token="
        return ("livekit", text, self.api_key, self._secret, self.ttl_s, int(time.time()))

    def issue(self, island_id: str, peer_ids: Sequence[str]) -> dict[str, str]:
        # Every token in one C++ call (the key's HMAC set up once): the tokens of
        # dclcomms.auth.livekit_token (tests/test_policy.py compares them).
        return _mint(self._spec(), island_id, peer_ids)


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

    def native_issuer(self) -> NativeIssuer | None:
        return self._spec() if self._own_issue(WsRoomTransport) else None

    def _spec(self) -> NativeIssuer:
        secret = self._secret or ""
        return ("ws-room", f"ws-room:{self.base_url}", "", secret, self.ttl_s, int(time.time()))

    def issue(self, island_id: str, peer_ids: Sequence[str]) -> dict[str, str]:
        base = f"ws-room:{self.base_url}/rooms/{island_id}"
        if self._secret is None:
            return dict.fromkeys(peer_ids, base)
        # Every token in one C++ call (the key's HMAC set up once): the tokens of
        # dclcomms.auth.ws_room_token (tests/test_policy.py compares them).
        return _mint(self._spec(), island_id, peer_ids)


class FixedTransport(Transport):
    """Every peer gets the same configured string (``offline:offline`` for no comms)."""

    name = "fixed"

    def __init__(self, conn_str: str, *, max_island_size: int = 100) -> None:
        protocol = conn_str.split(":", 1)[0]
        if ":" not in conn_str or not protocol[:1].isalpha():
            raise ConfigError(
                f"fixed adapter {conn_str!r} is not a connection string (PROTOCOL:PARAMETERS)",
                code="bad_value",
                field="fixed_adapter",
            )
        self.conn_str = conn_str
        self.max_island_size = max_island_size

    def native_issuer(self) -> NativeIssuer | None:
        if not self._own_issue(FixedTransport):
            return None
        return ("fixed", self.conn_str, "", "", 0, 0)

    def issue(self, island_id: str, peer_ids: Sequence[str]) -> dict[str, str]:
        return dict.fromkeys(peer_ids, self.conn_str)


class P2PTransport(Transport):
    """``p2p:<island>:<peer>`` (transports.md 4): the members connect to each other.

    The clients build a WebRTC mesh among themselves, signalling through the realm's
    ``/bus`` (offer/answer/candidate addressed topics, relayed only between members of
    one island); no media touches the server. The cost grows with the island (each
    peer sends to its mesh neighbours and relays), so ``max_island_size`` is small.
    """

    name = "p2p"

    def __init__(self, *, max_island_size: int = 16) -> None:
        if max_island_size < 2:
            raise ConfigError(
                "P2P islands need max_island_size >= 2",
                code="bad_value",
                field="p2p_max_island_size",
            )
        self.max_island_size = max_island_size

    def native_issuer(self) -> NativeIssuer | None:
        if not self._own_issue(P2PTransport):
            return None
        return ("p2p", "", "", "", 0, 0)

    def issue(self, island_id: str, peer_ids: Sequence[str]) -> dict[str, str]:
        return {p: f"p2p:{island_id}:{p}" for p in peer_ids}


@dataclass(frozen=True)
class Transports:
    """The transports a realm offers its policy; ``default`` is the built-in choice.

    ``p2p`` is offered when the realm serves ``/bus`` (the mesh signals through it);
    it is never the default.
    """

    ws_room: WsRoomTransport
    livekit: LiveKitTransport | None = None
    fixed: FixedTransport | None = None
    p2p: P2PTransport | None = None

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
        if self.p2p is not None:
            out["p2p"] = self.p2p
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
        raise ConfigError(
            f"ws_room_url {ws_base!r} must be http(s) or ws(s)",
            code="bad_value",
            field="ws_room_url",
        )
    size = config.max_island_size
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
        p2p=P2PTransport(max_island_size=min(config.p2p_max_island_size, size))
        if config.bus
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


def _need_p2p(transports: Transports, who: str) -> P2PTransport:
    if transports.p2p is None:
        raise ConfigError(
            f"{who} needs the P2P transport, which signals through /bus (set bus = true)",
            code="bad_policy",
            field="bus",
        )
    return transports.p2p


class P2PPolicy(RealmPolicy):
    """``--policy p2p``: every island on P2P while it fits the P2P transport.

    An island larger than ``p2p_max_island_size`` gets the default transport (a mesh
    of that size would cost its members more than a room); it comes back to P2P when
    it shrinks to ``down_at`` peers (default: three quarters of the P2P capacity), so
    an island at the boundary does not flap.
    """

    def __init__(self, transports: Transports, *, down_at: int | None = None) -> None:
        super().__init__(transports)
        self.p2p = _need_p2p(transports, "the p2p policy")
        cap = self.p2p.max_island_size
        self.down_at = down_at if down_at is not None else max(1, (cap * 3) // 4)
        if not 0 < self.down_at <= cap:
            raise ConfigError("P2PPolicy needs 0 < down_at <= max_island_size", code="bad_value")

    @classmethod
    def from_config(cls, transports: Transports, config: RealmConfig) -> P2PPolicy:
        return cls(transports)

    def transport_for(self, island: IslandView) -> Transport:
        n = len(island.peers)
        if island.transport is None or island.transport == self.p2p.name:
            return self.p2p if n <= self.p2p.max_island_size else self.transports.default
        return self.p2p if n <= self.down_at else self.transports.default


def tier_level(
    n: int,
    current: int | None,
    up: tuple[int, int],
    down: tuple[int, int],
    *,
    p2p_capacity: int,
    top: int = 2,
) -> int:
    """The tier (0 P2P, 1 WebSocket rooms, 2 LiveKit) of an island of ``n`` peers now at
    tier ``current`` (None: new). It climbs boundary ``i`` at ``up[i]`` peers and comes
    down at ``down[i]``; a new island starts where its size puts it. Capped at ``top``
    (1 without LiveKit); P2P only up to ``p2p_capacity`` peers. Shared by
    :class:`TieredPolicy` and the simulator's ``Tiered``."""
    if current is None:
        level = sum(n >= u for u in up)
    else:
        level = current
        while level < 2 and n >= up[level]:
            level += 1
        while level > 0 and n <= down[level - 1]:
            level -= 1
    level = min(level, top)
    if level == 0 and n > p2p_capacity:
        level = 1
    return level


class TieredPolicy(RealmPolicy):
    """``--policy tiered``: P2P for small islands, WebSocket rooms above, LiveKit for
    crowded ones (when LiveKit is configured), with hysteresis at each boundary.

    Levels: P2P < WebSocket rooms < LiveKit. An island moves up one boundary when it
    reaches that boundary's ``up_at`` size and down when it shrinks to its
    ``down_at`` size (``p2p_up_at``/``p2p_down_at``, ``livekit_up_at``/
    ``livekit_down_at``; the ``tiered_*`` settings), so an island at a boundary does
    not flap (every switch re-issues ``island_changed`` to all its members). A new
    island starts at the level its size gives. P2P is used only for islands within
    the P2P transport's capacity; without LiveKit the top level is WebSocket rooms.
    """

    def __init__(
        self,
        transports: Transports,
        *,
        p2p_up_at: int = 7,
        p2p_down_at: int = 4,
        livekit_up_at: int = 50,
        livekit_down_at: int = 30,
    ) -> None:
        super().__init__(transports)
        self.p2p = _need_p2p(transports, "the tiered policy")
        if not (
            0 < p2p_down_at < p2p_up_at <= livekit_up_at and 0 < livekit_down_at < livekit_up_at
        ):
            raise ConfigError(
                "TieredPolicy needs 0 < p2p_down_at < p2p_up_at <= livekit_up_at and "
                "0 < livekit_down_at < livekit_up_at",
                code="bad_value",
            )
        self.up = (p2p_up_at, livekit_up_at)
        self.down = (p2p_down_at, livekit_down_at)

    @classmethod
    def from_config(cls, transports: Transports, config: RealmConfig) -> TieredPolicy:
        return cls(
            transports,
            p2p_up_at=config.tiered_p2p_up_at,
            p2p_down_at=config.tiered_p2p_down_at,
            livekit_up_at=config.tiered_livekit_up_at,
            livekit_down_at=config.tiered_livekit_down_at,
        )

    def level(self, n: int, current: str | None) -> int:
        """0 (P2P), 1 (WebSocket rooms) or 2 (LiveKit) for ``n`` peers now on ``current``."""
        levels = {self.p2p.name: 0, self.transports.ws_room.name: 1}
        if self.transports.livekit is not None:
            levels[self.transports.livekit.name] = 2
        return tier_level(
            n,
            levels.get(current) if current is not None else None,
            self.up,
            self.down,
            p2p_capacity=self.p2p.max_island_size,
            top=2 if self.transports.livekit is not None else 1,
        )

    def transport_for(self, island: IslandView) -> Transport:
        level = self.level(len(island.peers), island.transport)
        if level == 0:
            return self.p2p
        if level == 2 and self.transports.livekit is not None:
            return self.transports.livekit
        return self.transports.ws_room


#: built-in policies selectable by name (``--policy p2p``); each has ``from_config``
BUILTIN_POLICIES: dict[str, type[P2PPolicy] | type[TieredPolicy]] = {
    "p2p": P2PPolicy,
    "tiered": TieredPolicy,
}
assert tuple(BUILTIN_POLICIES) == BUILTIN_POLICY_NAMES


def make_policy(
    arg: RealmPolicy | type[RealmPolicy] | None, transports: Transports, config: RealmConfig
) -> RealmPolicy:
    """The policy a realm or ``dclcomms core`` runs: ``arg`` as given (an instance, or a
    class built on ``transports``), else ``config.policy`` (:func:`load_policy`)."""
    if isinstance(arg, RealmPolicy):
        return arg
    if isinstance(arg, type):
        return arg(transports)
    return load_policy(config.policy, transports, config)


def load_policy(
    spec: str, transports: Transports, config: RealmConfig | None = None
) -> RealmPolicy:
    """Instantiate a policy: ``""`` = :class:`RealmPolicy`, a built-in name (``p2p``,
    ``tiered``: thresholds from ``config``) or ``package.module:Class``."""
    if not spec:
        return RealmPolicy(transports)
    builtin = BUILTIN_POLICIES.get(spec)
    if builtin is not None:
        return builtin.from_config(transports, config if config is not None else RealmConfig())
    module_name, _, attr = spec.partition(":")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise ConfigError(
            f"policy {spec!r} cannot be loaded: {e}", code="bad_policy", field="policy"
        ) from None
    if not (isinstance(obj, type) and issubclass(obj, RealmPolicy)):
        raise ConfigError(
            f"policy {spec!r} is not a RealmPolicy subclass", code="bad_policy", field="policy"
        )
    try:
        policy: RealmPolicy = obj(transports)
    except ConfigError:
        raise
    except Exception as e:
        raise ConfigError(
            f"policy {spec!r} failed to start: {e}", code="bad_policy", field="policy"
        ) from None
    return policy


__all__ = [
    "BUILTIN_POLICIES",
    "CrowdedOnLiveKit",
    "FixedTransport",
    "IslandView",
    "LiveKitTransport",
    "NativeIssuer",
    "P2PPolicy",
    "P2PTransport",
    "RealmPolicy",
    "TieredPolicy",
    "Transport",
    "Transports",
    "WsRoomTransport",
    "build_transports",
    "load_policy",
    "make_policy",
    "public_base_url",
    "tier_level",
]
