"""The island clustering engine (spec archipelago.md §2, ``converge`` mode §2.6).

Peers report positions; :meth:`Engine.flush` groups them into *islands* on the
X/Z plane: islands merge when a member pair is within ``join_distance`` and the
merged island fits ``max_island_size``; they split into components that are
connected under ``leave_distance``. The heavy work runs in C++ with the GIL
released.

Thread safety: every method may be called from any thread; an internal mutex
serialises them (an update racing a flush is clustered by that flush or the
next one). See docs/archipelago.md.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import numpy as np
import numpy.typing as npt

from dclcomms import _core
from dclcomms.archipelago.reference import ReferenceCore
from dclcomms.errors import ConfigError
from dclcomms.heartbeats import UNSET, PreferenceOp, Unset, preference_op

__all__ = [
    "UNSET",
    "Engine",
    "Island",
    "IslandChange",
    "PreferenceOp",
    "Snapshot",
    "Unset",
    "monotonic_ms",
]

_EMPTY_POSITIONS = np.zeros((0, 3), dtype=np.float32)
_EMPTY_POSITIONS.flags.writeable = False
_MODES = ("converge", "reference")
_MAX_U32 = 2**32 - 1


def monotonic_ms() -> int:
    """The default clock of :meth:`Engine.update` (``time.monotonic`` in ms)."""
    return time.monotonic_ns() // 1_000_000


class IslandChange(NamedTuple):
    """One peer's island change in a flush (a named tuple: cheap in bulk).

    ``kind == "changed"``: the peer is now in ``island_id``; ``from_island_id``
    is its island at the start of the flush (``None`` on a first assignment).
    ``kind == "left"``: the peer disconnected or expired from ``island_id``.
    """

    peer_id: str
    kind: Literal["changed", "left"]
    island_id: str
    from_island_id: str | None


@dataclass(frozen=True, slots=True)
class Island:
    """An island: members in join order, X/Z centre (y = 0) and radius in metres.

    ``positions``: each member's last reported position, a (len(peers), 3) float32
    array in member order (not compared by ``==``).
    """

    id: str
    peers: tuple[str, ...]
    center: tuple[float, float, float]
    radius: float
    max_peers: int
    positions: npt.NDArray[np.float32] = field(
        default_factory=lambda: _EMPTY_POSITIONS, compare=False
    )


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Struct-of-arrays copy of the engine state, for analysis without per-object cost.

    Peer rows: ``peer_ids`` (object array of str), ``positions`` (n, 3) float32,
    ``island_index`` int32 row into the island table (-1: pending, not placed
    yet). Island rows (creation order): ``island_ids``, ``centers`` (k, 3)
    float64, ``radii`` float64, ``sizes`` and ``max_peers`` uint32.
    """

    peer_ids: npt.NDArray[np.object_]
    positions: npt.NDArray[np.float32]
    island_index: npt.NDArray[np.int32]
    island_ids: npt.NDArray[np.object_]
    centers: npt.NDArray[np.float64]
    radii: npt.NDArray[np.float64]
    sizes: npt.NDArray[np.uint32]
    max_peers: npt.NDArray[np.uint32]


def _check_distance(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(
            f"{name} must be a number, got {value!r}", code="invalid_parameter", field=name
        )
    v = float(value)
    if not math.isfinite(v) or v <= 0:
        raise ConfigError(
            f"{name} must be positive and finite, got {value!r}",
            code="invalid_parameter",
            field=name,
        )
    return v


_PARAMS = ("join_distance", "leave_distance", "max_island_size", "id_prefix", "id_epoch")


def _named(e: ConfigError) -> ConfigError:
    """``e`` with ``field`` set to the parameter its message starts with (the cores' errors)."""
    if e.field is None:
        e.field = next((p for p in _PARAMS if str(e).startswith(p)), None)
    return e


def _peer_id(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"peer id must be a non-empty str, got {value!r}", code="invalid_peer_id")
    return value


class Engine:
    """The island clustering engine.

    ``mode="converge"`` (default) is the C++ engine of spec §2.6;
    ``mode="reference"`` runs the reference algorithm of §2.3 with its quirks
    (pure Python, O(islands²) per flush: for notebooks and differential tests).

    Parameters are validated eagerly: ``leave_distance < join_distance``,
    non-positive or non-finite distances, ``max_island_size < 1`` and a
    ``id_prefix`` that is empty or holds ``.``, ``*``, ``>`` or whitespace raise
    :class:`dclcomms.ConfigError` (a ``ValueError``) with code ``invalid_parameter``
    and the parameter's name in ``field``.

    ``id_epoch`` (spec §2.6 rule 5, optional, ``[0-9a-z]+``) makes ids
    ``prefix + epoch + "-" + base36(counter)`` so that island ids, which name
    LiveKit rooms, are not reused after a restart (e.g. ``base36(boot time)``).
    """

    __slots__ = ("_core", "_mode")

    def __init__(
        self,
        join_distance: float = 64.0,
        leave_distance: float = 80.0,
        max_island_size: int = 100,
        id_prefix: str = "I",
        mode: str = "converge",
        *,
        id_epoch: str = "",
    ) -> None:
        join = _check_distance("join_distance", join_distance)
        leave = _check_distance("leave_distance", leave_distance)
        if leave < join:
            raise ConfigError(
                f"leave_distance ({leave}) must be >= join_distance ({join})",
                code="invalid_parameter",
                field="leave_distance",
            )
        if (
            isinstance(max_island_size, bool)
            or not isinstance(max_island_size, int)
            or not 1 <= max_island_size <= _MAX_U32
        ):
            raise ConfigError(
                f"max_island_size must be an int in [1, 2**32), got {max_island_size!r}",
                code="invalid_parameter",
                field="max_island_size",
            )
        if not isinstance(id_prefix, str):
            raise ConfigError(
                "id_prefix must be a str", code="invalid_parameter", field="id_prefix"
            )
        if not isinstance(id_epoch, str):
            raise ConfigError("id_epoch must be a str", code="invalid_parameter", field="id_epoch")
        if mode not in _MODES:
            raise ConfigError(
                f"mode must be one of {_MODES}, got {mode!r}",
                code="invalid_parameter",
                field="mode",
            )
        self._mode = mode
        # Both cores validate id_prefix (the C++ one re-validates the rest too).
        self._core: _core.ArchipelagoEngine | ReferenceCore
        if mode == "reference":
            if id_epoch:
                raise ConfigError(
                    "id_epoch is a converge-mode feature (the reference has none)",
                    code="invalid_parameter",
                    field="id_epoch",
                )
            try:
                self._core = ReferenceCore(join, leave, max_island_size, id_prefix)
            except ConfigError as e:
                raise _named(e) from None
        else:
            try:
                self._core = _core.ArchipelagoEngine(
                    join, leave, max_island_size, id_prefix, id_epoch
                )
            except ConfigError as e:
                raise _named(e) from None

    @property
    def mode(self) -> str:
        return self._mode

    @property
    def peer_count(self) -> int:
        """Known peers, including those waiting for their first flush."""
        return self._core.peer_count

    @property
    def island_count(self) -> int:
        return self._core.island_count

    def update(
        self,
        peer_id: str,
        position: Iterable[float],
        preferred_island: str | Unset | None = UNSET,
        *,
        now_ms: int | None = None,
    ) -> None:
        """Store a position heartbeat (x, y, z in metres; y is ignored by clustering).

        ``preferred_island``: omitted keeps the stored preference, ``None`` (or
        ``""``) clears it, a string sets it. ``now_ms`` (default
        :func:`monotonic_ms`) is the liveness time used by :meth:`expire`.
        Non-finite positions raise ConfigError ``invalid_position``.
        """
        pid = _peer_id(peer_id)
        try:
            x, y, z = (float(v) for v in position)
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"position must be three numbers (x, y, z), got {position!r}",
                code="invalid_position",
            ) from exc
        op, pref = preference_op(preferred_island)
        self._core.update(pid, x, y, z, op, pref, monotonic_ms() if now_ms is None else now_ms)

    def update_many(
        self,
        peer_ids: Sequence[str],
        positions: npt.ArrayLike,
        preferred: Sequence[str | Unset | None] | None = None,
        *,
        now_ms: int | None = None,
    ) -> None:
        """Batch :meth:`update`: ``positions`` is an (n, 3) array (float32 or float64).

        ``preferred`` is ``None`` (keep every stored preference) or one entry
        per peer with :meth:`update`'s meaning (a heartbeat batch's
        ``desired_rooms`` as they are: :data:`UNSET` keeps, ``""`` clears), turned
        into :class:`PreferenceOp` in C++. The batch is validated first and applied
        atomically: on error nothing changes.
        """
        # Type and emptiness of each id are checked in C++ (invalid_peer_id).
        ids = peer_ids if type(peer_ids) is list else list(peer_ids)
        arr = np.asarray(positions)
        if arr.ndim != 2 or arr.shape != (len(ids), 3):
            raise ConfigError(
                f"positions must have shape ({len(ids)}, 3), got {arr.shape}",
                code="invalid_parameter",
            )
        if arr.dtype.kind not in "fiu":
            raise ConfigError(
                f"positions must be numeric, got dtype {arr.dtype}", code="invalid_parameter"
            )
        prefs: list[str | Unset | None] | None = None
        if preferred is not None:
            prefs = preferred if type(preferred) is list else list(preferred)
        if arr.dtype == np.float32 and arr.flags.c_contiguous:
            f32 = arr
        else:
            with np.errstate(over="ignore"):  # float64 beyond float32 -> inf -> invalid_position
                f32 = np.ascontiguousarray(arr, dtype=np.float32)
        self._core.update_many(ids, f32, prefs, monotonic_ms() if now_ms is None else now_ms)

    def disconnect(self, peer_id: str) -> bool:
        """Remove a peer now; a placed peer is reported as ``left`` by the next flush.

        Returns False if the peer is unknown.
        """
        return self._core.disconnect(_peer_id(peer_id))

    def disconnect_many(self, peer_ids: Sequence[str]) -> int:
        """Disconnect each peer in order; returns how many were known."""
        return self._core.disconnect_many([_peer_id(p) for p in peer_ids])

    def expire(self, now_ms: int, timeout_ms: int = 60_000) -> int:
        """Disconnect peers whose last update is older than ``now_ms - timeout_ms``."""
        return self._core.expire(now_ms, timeout_ms)

    def flush(self) -> list[IslandChange]:
        """Run one clustering round; at most one change per peer, deterministic order.

        ``left`` entries come first (disconnect order), then ``changed`` ones in
        the order the peers first moved during the flush.
        """
        peers, kinds, islands, froms = self._core.flush()
        # A cold start yields one entry per peer; these tuples of str cannot form
        # cycles, and pausing the cyclic GC while they are built halves the cost.
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            return list(map(IslandChange, peers, kinds, islands, froms))
        finally:
            if was_enabled:
                gc.enable()

    def islands(self) -> list[Island]:
        """Every island, in creation order, with its members' last positions."""
        return [
            Island(iid, tuple(peers), center, radius, max_peers, positions)
            for iid, peers, center, radius, max_peers, positions in self._core.islands()
        ]

    def island_of(self, peer_id: str) -> str | None:
        """The peer's island id, or None if unknown or not placed yet."""
        return self._core.island_of(_peer_id(peer_id))

    def snapshot(self) -> Snapshot:
        raw: dict[str, Any] = self._core.snapshot()
        peer_ids = np.empty(len(raw["peer_ids"]), dtype=object)
        peer_ids[:] = raw["peer_ids"]
        island_ids = np.empty(len(raw["island_ids"]), dtype=object)
        island_ids[:] = raw["island_ids"]
        return Snapshot(
            peer_ids=peer_ids,
            positions=raw["positions"],
            island_index=raw["island_index"],
            island_ids=island_ids,
            centers=raw["centers"],
            radii=raw["radii"],
            sizes=raw["sizes"],
            max_peers=raw["max_peers"],
        )

    def last_flush_stats(self) -> dict[str, int]:
        """Work counters of the last flush (islands checked, merges, pair tests...)."""
        return self._core.last_flush_stats()

    def __repr__(self) -> str:
        return f"<Engine mode={self._mode} peers={self.peer_count} islands={self.island_count}>"
