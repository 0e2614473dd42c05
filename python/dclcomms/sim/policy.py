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

from dclcomms.errors import ConfigError


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


def _default_participant_minute() -> dict[str, float]:
    return {"livekit": 0.0005, "ws-room": 0.0001, "p2p": 0.0, "offline": 0.0}


def _default_room_minute() -> dict[str, float]:
    return {"livekit": 0.0, "ws-room": 0.0, "p2p": 0.0, "offline": 0.0}


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
