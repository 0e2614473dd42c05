"""Offline simulator: mobility models drive the C++ clustering engine without sockets.

Needs the ``sim`` extra (pandas, tqdm); :mod:`dclcomms.sim.plot` needs ``plot``
(matplotlib). See docs/simulator.md.

>>> from dclcomms.sim import Simulation, RandomWaypoint, SizeThreshold
>>> sim = Simulation(RandomWaypoint(1000, group_size=4), seed=7, policy=SizeThreshold(20))
>>> result = sim.run(60, progress=False)
>>> result.flushes[["t_s", "islands", "churn", "split"]]  # doctest: +SKIP
"""

from __future__ import annotations

from dclcomms.sim.metrics import churn_per_peer_minute, group_split, size_percentiles
from dclcomms.sim.mobility import (
    DEFAULT_PLAZAS,
    GENESIS_CITY,
    PARCEL_SIZE_M,
    RUN_SPEED_MPS,
    WALK_SPEED_MPS,
    Bounds,
    Commuters,
    Composite,
    CrowdEvent,
    MobilityModel,
    RandomWaypoint,
    parcel_center,
)
from dclcomms.sim.policy import (
    CostModel,
    Fixed,
    Hysteresis,
    SimIsland,
    SimPolicy,
    SizeThreshold,
    Tiered,
)
from dclcomms.sim.simulation import EngineLike, Recording, SimResult, Simulation, Snapshot

__all__ = [
    "DEFAULT_PLAZAS",
    "GENESIS_CITY",
    "PARCEL_SIZE_M",
    "RUN_SPEED_MPS",
    "WALK_SPEED_MPS",
    "Bounds",
    "Commuters",
    "Composite",
    "CostModel",
    "CrowdEvent",
    "EngineLike",
    "Fixed",
    "Hysteresis",
    "MobilityModel",
    "RandomWaypoint",
    "Recording",
    "SimIsland",
    "SimPolicy",
    "SimResult",
    "Simulation",
    "SizeThreshold",
    "Snapshot",
    "Tiered",
    "churn_per_peer_minute",
    "group_split",
    "parcel_center",
    "size_percentiles",
]
