"""Engines and a scripted mobility model shared by the simulator tests."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from dclcomms.sim import (
    MobilityModel,
)
from tests.helpers.sim_oracle import OracleEngine


def _oracle() -> Any:
    return OracleEngine()


def _cpp() -> Any:
    from dclcomms.archipelago import Engine

    return Engine()


ENGINES = [
    pytest.param(_oracle, id="oracle"),
    pytest.param(_cpp, id="cpp"),
]


class Scripted(MobilityModel):
    """Positions (x, z) per peer, switched at given times; ``None`` = disconnected."""

    def __init__(
        self,
        script: dict[float, list[tuple[float, float] | None]],
        groups: list[int] | None = None,
    ) -> None:
        first = script[0.0]
        super().__init__(len(first))
        self.script = script
        self.fixed_groups = np.array(groups if groups is not None else [-1] * len(first))

    @property
    def n_groups(self) -> int:
        return int(self.fixed_groups.max()) + 1

    def _apply(self, t: float) -> None:
        key = max(k for k in self.script if k <= t)
        for i, p in enumerate(self.script[key]):
            self.active[i] = p is not None
            if p is not None:
                self.positions[i] = (p[0], 0.0, p[1])
        self.groups = np.where(self.active, self.fixed_groups, -1).astype(np.int64)

    def reset(self, rng: np.random.Generator) -> None:
        self._apply(0.0)

    def step(self, t_s: float, dt_s: float, rng: np.random.Generator) -> None:
        self._apply(t_s)
