"""Transport policies and the cost model of the simulator.

A policy maps an island to a transport *kind* (``"livekit"``, ``"ws-room"``,
``"p2p"``…), the idea of the realm's ``RealmPolicy.transport_for(island)``
(archipelago.md §6.3) reduced to what an offline study needs: the simulator
asks once per island per flush in which the island was created or changed
membership, exactly when the realm would re-evaluate it, and passes the kind
the island currently has so that policies can apply hysteresis.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from dclcomms.errors import ConfigError
from dclcomms.policy import tier_level


def _no_members() -> tuple[str, ...]:
    return ()


@dataclass(frozen=True)
class SimIsland:
    """What a policy sees of an island (read only).

    ``center`` is (x, z) in metres, ``radius`` in metres; ``kind`` is the
    transport the island has now, ``None`` for a new island. For policies
    written against the realm's ``IslandView``, ``transport`` aliases ``kind``
    and ``peers`` lists the member ids (snapshot order; built on first access,
    so policies that only read ``size`` never pay for it).
    """

    id: str
    size: int
    center: tuple[float, float]
    radius: float
    max_peers: int
    kind: str | None
    members: Callable[[], tuple[str, ...]] = field(default=_no_members, repr=False, compare=False)

    @property
    def transport(self) -> str | None:
        return self.kind

    @property
    def peers(self) -> tuple[str, ...]:
        return self.members()


@runtime_checkable
class SimPolicy(Protocol):
    """Anything with ``transport_for(island) -> kind``.

    The result may also be an object with a ``name`` (the realm's ``Transport``);
    an optional ``island_removed(island_id)`` is called when an island disappears,
    as the realm does, so stateful policies can forget it.
    """

    def transport_for(self, island: SimIsland) -> Any: ...


@dataclass(frozen=True)
class Fixed:
    """Every island on one transport kind."""

    kind: str = "livekit"

    def transport_for(self, island: SimIsland) -> str:
        return self.kind


@dataclass(frozen=True)
class SizeThreshold:
    """``large`` for islands of at least ``min_size`` peers, else ``small``.

    ``SizeThreshold(20, "livekit", "ws-room")`` is the brief's example policy.
    """

    min_size: int = 20
    large: str = "livekit"
    small: str = "ws-room"

    def __post_init__(self) -> None:
        if not self.min_size >= 1:
            raise ConfigError("SizeThreshold needs min_size >= 1", code="invalid_parameter")

    def transport_for(self, island: SimIsland) -> str:
        return self.large if island.size >= self.min_size else self.small


@dataclass(frozen=True)
class Hysteresis:
    """Switch up to ``large`` at ``up_at`` peers, back to ``small`` at ``down_at``.

    The spec's rule ``{max_peers: 6, use: p2p, hysteresis: {up_at: 7, down_at: 4}}``
    is ``Hysteresis(up_at=7, down_at=4, small="p2p", large="livekit")``. A new island
    starts on ``large`` iff it already has ``up_at`` peers. Fewer transport switches
    than a bare threshold for islands hovering around it, at the price of some
    islands staying on the more expensive kind.
    """

    up_at: int = 20
    down_at: int = 15
    large: str = "livekit"
    small: str = "ws-room"

    def __post_init__(self) -> None:
        if not 0 <= self.down_at <= self.up_at or self.up_at < 1:
            raise ConfigError(
                "Hysteresis needs 0 <= down_at <= up_at and up_at >= 1", code="invalid_parameter"
            )

    def transport_for(self, island: SimIsland) -> str:
        if island.kind == self.large:
            return self.small if island.size <= self.down_at else self.large
        return self.large if island.size >= self.up_at else self.small


@dataclass(frozen=True)
class Tiered:
    """P2P for small islands, WebSocket rooms above, LiveKit for crowded ones.

    The realm's ``--policy tiered`` (:class:`dclcomms.policy.TieredPolicy`, the same
    rule through :func:`dclcomms.policy.tier_level`): an island climbs to rooms at
    ``p2p_up_at`` peers and returns to P2P at ``p2p_down_at``; to LiveKit at
    ``livekit_up_at`` and back at ``livekit_down_at``; P2P only up to ``p2p_max``
    peers; ``livekit=False`` keeps rooms on top.
    """

    p2p_up_at: int = 7
    p2p_down_at: int = 4
    livekit_up_at: int = 50
    livekit_down_at: int = 30
    p2p_max: int = 16
    livekit: bool = True

    KINDS = ("p2p", "ws-room", "livekit")

    def __post_init__(self) -> None:
        if not (
            0 < self.p2p_down_at < self.p2p_up_at <= self.livekit_up_at
            and 0 < self.livekit_down_at < self.livekit_up_at
        ):
            raise ConfigError(
                "Tiered needs 0 < p2p_down_at < p2p_up_at <= livekit_up_at and "
                "0 < livekit_down_at < livekit_up_at",
                code="invalid_parameter",
            )

    def transport_for(self, island: SimIsland) -> str:
        current = self.KINDS.index(island.kind) if island.kind in self.KINDS else None
        level = tier_level(
            island.size,
            current,
            (self.p2p_up_at, self.livekit_up_at),
            (self.p2p_down_at, self.livekit_down_at),
            p2p_capacity=self.p2p_max,
            top=2 if self.livekit else 1,
        )
        return self.KINDS[level]


def _default_participant_minute() -> dict[str, float]:
    return {"livekit": 0.0005, "ws-room": 0.0001, "p2p": 0.0, "offline": 0.0}


def _default_room_minute() -> dict[str, float]:
    return {"livekit": 0.0, "ws-room": 0.0, "p2p": 0.0, "offline": 0.0}


def _default_overhead() -> dict[str, float]:
    # Bytes each packet carries on the wire besides its RFC-4 payload:
    # p2p: 32 envelope + 28 SCTP (common header + DATA chunk) + 29 DTLS record + 8 UDP + 20 IPv4;
    # ws-room: ~8 RFC-5 framing + 6 WebSocket (masked) + 32 TCP (timestamps) + 20 IPv4;
    # livekit: ~25 data packet framing + 28 SCTP + 29 DTLS + 8 UDP + 20 IPv4.
    return {"livekit": 110.0, "ws-room": 66.0, "p2p": 117.0, "offline": 0.0}


@dataclass(frozen=True)
class CostModel:
    """A linear transport cost model, in currency units (default USD).

    Cost of a flush interval of ``minutes`` for a kind with ``P`` participants in
    ``R`` rooms: ``P * participant_minute[kind] * minutes + R * room_minute[kind]
    * minutes``. Every island is one room, a singleton included (it holds a
    connection string too).

    The defaults are **illustrative placeholders, not quotes**: a managed SFU
    billed per connection-minute (``livekit``) costs five times a self-hosted
    WebSocket fan-out billed by bandwidth (``ws-room``); ``p2p`` and ``offline``
    cost the operator nothing. Put your own prices in before drawing money
    conclusions; the *ratios* between policies are what the notebook compares.

    Kinds a policy may return are exactly the keys of ``participant_minute``: an
    unknown kind (a typo in a policy) raises ``ConfigError(code="invalid_parameter")``
    instead of silently costing nothing.
    """

    participant_minute: Mapping[str, float] = field(default_factory=_default_participant_minute)
    room_minute: Mapping[str, float] = field(default_factory=_default_room_minute)
    currency: str = "USD"
    #: the traffic model behind the bandwidth columns: every peer sends ``update_hz``
    #: RFC-4 packets of ``packet_bytes`` per second to its island, each with
    #: ``overhead_bytes[kind]`` of framing on the wire
    update_hz: float = 10.0
    packet_bytes: float = 100.0
    overhead_bytes: Mapping[str, float] = field(default_factory=_default_overhead)

    def __post_init__(self) -> None:
        for name, table in (
            ("participant_minute", self.participant_minute),
            ("room_minute", self.room_minute),
        ):
            for kind, price in table.items():
                if not (price >= 0.0):
                    raise ConfigError(
                        f"{name}[{kind!r}] must be a price >= 0, got {price!r}",
                        code="invalid_parameter",
                    )
        extra = set(self.room_minute) - set(self.participant_minute)
        if extra:
            raise ConfigError(
                f"room_minute prices kinds missing from participant_minute: {sorted(extra)}",
                code="invalid_parameter",
            )

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(self.participant_minute)

    def _wire(self, kind: str) -> float:
        return (self.packet_bytes + self.overhead_bytes.get(kind, 0.0)) * self.update_hz

    def peer_upstream_bytes_per_s(self, kind: str, sizes: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Mean upload of a member of islands of ``sizes`` peers, bytes/s.

        ``p2p``: ``size - 1`` packets per update - each member receives every other
        member's packet once, over the source's tree, and the relays share that load
        (the mean is that of a full mesh; tree interiors carry more); WebSocket rooms
        and LiveKit: one packet per update to the server, which fans out; offline: 0.
        """
        s = np.asarray(sizes, dtype=np.float64)
        if kind == "offline":
            return np.zeros_like(s)
        if kind == "p2p":
            return np.maximum(s - 1.0, 0.0) * self._wire(kind)
        return np.where(s > 1, self._wire(kind), 0.0)

    def server_egress_bytes_per_s(self, kind: str, sizes: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """What the operator's servers send per island of ``sizes`` peers, bytes/s:
        ``size * (size - 1)`` packets per update for rooms and LiveKit, nothing for P2P
        (signalling is a few KiB per connection, once)."""
        s = np.asarray(sizes, dtype=np.float64)
        if kind in ("p2p", "offline"):
            return np.zeros_like(s)
        return s * np.maximum(s - 1.0, 0.0) * self._wire(kind)

    def check_kind(self, kind: object) -> str:
        """``kind`` itself, or the ``name`` of a transport object (the realm's ``Transport``)."""
        if not isinstance(kind, str) and isinstance(getattr(kind, "name", None), str):
            kind = kind.name  # type: ignore[attr-defined]
        if not isinstance(kind, str) or kind not in self.participant_minute:
            raise ConfigError(
                f"policy returned transport kind {kind!r}; the cost model prices "
                f"{sorted(self.participant_minute)}",
                code="invalid_parameter",
            )
        return kind

    def cost(self, kind: str, participants: float, rooms: float, minutes: float) -> float:
        """Cost of ``participants`` peers in ``rooms`` rooms of ``kind`` for ``minutes``."""
        self.check_kind(kind)
        per_p = self.participant_minute[kind]
        per_r = self.room_minute.get(kind, 0.0)
        return (participants * per_p + rooms * per_r) * minutes
