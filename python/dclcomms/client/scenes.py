"""Scenes by parcel: which scene a position stands in.

A Decentraland scene covers a set of parcels (16 m x 16 m squares; parcel
``(x, y)`` spans ``[16x, 16x + 16) x [16y, 16y + 16)`` in world X/Z). The
director asks a *scene resolver* (``parcel -> scene id or None``) which scene the
player stands in; :class:`SceneGrid` is the resolver bots and tests use: a
``columns x rows`` grid of square scenes of ``block x block`` parcels each.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from dclcomms.errors import ConfigError
from dclcomms.sim.mobility import PARCEL_SIZE_M, Bounds

#: ``parcel -> scene id`` (None: no scene there)
SceneResolver = Callable[[tuple[int, int]], str | None]


def parcel_of(x: float, z: float) -> tuple[int, int]:
    """The parcel a world position (metres; X east, Z north) stands on."""
    return (math.floor(x / PARCEL_SIZE_M), math.floor(z / PARCEL_SIZE_M))


@dataclass(frozen=True, slots=True)
class SceneGrid:
    """``columns x rows`` scenes of ``block x block`` parcels from parcel ``origin``.

    Scene ids are ``<prefix><column>-<row>`` (``scene-0-0`` at the origin corner).
    Parcels outside the grid belong to no scene.
    """

    columns: int
    rows: int
    block: int = 2
    origin: tuple[int, int] = (0, 0)
    prefix: str = "scene-"

    def __post_init__(self) -> None:
        if self.columns < 1 or self.rows < 1 or self.block < 1:
            raise ConfigError(
                "a scene grid needs columns, rows and block >= 1", code="invalid_parameter"
            )

    @classmethod
    def square(cls, scenes: int, *, block: int = 2, origin: tuple[int, int] = (0, 0)) -> SceneGrid:
        """``scenes`` scenes as close to a square as possible (16 -> 4 x 4, 12 -> 4 x 3)."""
        if scenes < 1:
            raise ConfigError(f"scenes must be >= 1, got {scenes}", code="invalid_parameter")
        columns = math.ceil(math.sqrt(scenes))
        while scenes % columns:
            columns += 1
        return cls(columns, scenes // columns, block=block, origin=origin)

    @property
    def count(self) -> int:
        return self.columns * self.rows

    def cell(self, parcel: tuple[int, int]) -> tuple[int, int] | None:
        """(column, row) of the scene holding ``parcel``, or None outside the grid."""
        c = (parcel[0] - self.origin[0]) // self.block
        r = (parcel[1] - self.origin[1]) // self.block
        if 0 <= c < self.columns and 0 <= r < self.rows:
            return (c, r)
        return None

    def scene_at(self, parcel: tuple[int, int]) -> str | None:
        """The scene id of ``parcel`` (a :data:`SceneResolver`)."""
        cell = self.cell(parcel)
        return None if cell is None else f"{self.prefix}{cell[0]}-{cell[1]}"

    def __call__(self, parcel: tuple[int, int]) -> str | None:
        return self.scene_at(parcel)

    def scene_ids(self) -> list[str]:
        return [f"{self.prefix}{c}-{r}" for r in range(self.rows) for c in range(self.columns)]

    def bounds(self) -> Bounds:
        """The grid's area in metres (for a mobility model that stays inside it)."""
        x0 = self.origin[0] * PARCEL_SIZE_M
        z0 = self.origin[1] * PARCEL_SIZE_M
        return Bounds(
            x0,
            x0 + self.columns * self.block * PARCEL_SIZE_M,
            z0,
            z0 + self.rows * self.block * PARCEL_SIZE_M,
        )


__all__ = ["SceneGrid", "SceneResolver", "parcel_of"]
