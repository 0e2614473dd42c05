# Type stubs for the private compiled module dclcomms._core.
# tests/test_stubs.py checks these against the built module: every public name
# and every parameter name must match.

from typing import Any, Literal

import numpy as np
import numpy.typing as npt

__version__: str

# --- codec -------------------------------------------------------------------

# --- auth --------------------------------------------------------------------

# --- archipelago -------------------------------------------------------------

class ArchipelagoEngine:
    def __init__(
        self, join_distance: float, leave_distance: float, max_island_size: int, id_prefix: str
    ) -> None: ...
    def update(
        self, peer_id: str, x: float, y: float, z: float, op: int, preferred: str, now_ms: int
    ) -> None: ...
    def update_many(
        self,
        peer_ids: list[str],
        positions: npt.NDArray[np.float32],
        ops: list[int] | None,
        preferred: list[str] | None,
        now_ms: int,
    ) -> None: ...
    def disconnect(self, peer_id: str) -> bool: ...
    def disconnect_many(self, peer_ids: list[str]) -> int: ...
    def expire(self, now_ms: int, timeout_ms: int) -> int: ...
    def flush(
        self,
    ) -> tuple[list[str], list[Literal["changed", "left"]], list[str], list[str | None]]: ...
    def islands(
        self,
    ) -> list[tuple[str, list[str], tuple[float, float, float], float, int]]: ...
    def island_of(self, peer_id: str) -> str | None: ...
    @property
    def peer_count(self) -> int: ...
    @property
    def island_count(self) -> int: ...
    def snapshot(self) -> dict[str, Any]: ...
    def last_flush_stats(self) -> dict[str, int]: ...

# --- ws ----------------------------------------------------------------------
