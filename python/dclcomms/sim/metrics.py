"""Pure, vectorised metric functions used by the simulator (and usable on their own).

Definitions (also in docs/simulator.md):

* **churn** — island changes of peers that already had an island (``from``
  present), per peer-minute: ``moved / (peers * interval_s / 60)``. First
  assignments of newcomers and leaves are counted separately, they are arrivals
  and departures, not instability of the clustering.
* **split peers** — for every ground-truth group (a party, a crowd, the people
  standing in one plaza) the *majority island* is the island holding most of its
  members; a member in any other island is split from its group. Ties do not
  change the count.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from dclcomms.errors import ConfigError


def churn_per_peer_minute(moved: int, peers: int, interval_s: float) -> float:
    """Island changes per peer-minute over one interval; 0.0 with no peers."""
    if interval_s <= 0:
        raise ConfigError(f"interval_s must be > 0, got {interval_s}", code="invalid_parameter")
    if peers <= 0:
        return 0.0
    return moved / (peers * interval_s / 60.0)


def group_split(
    groups: NDArray[np.int64], island: NDArray[np.integer], n_islands: int
) -> tuple[int, int, int]:
    """``(grouped, split, n_groups)`` for peers with ground-truth ``groups`` (-1 = none).

    ``island`` holds the island index (0..n_islands-1) of each peer, aligned with
    ``groups``. ``grouped`` counts peers with a group, ``split`` those outside their
    group's majority island, ``n_groups`` the distinct groups present.
    """
    if groups.shape != island.shape:
        raise ConfigError("groups and island must have the same shape", code="invalid_parameter")
    m = groups >= 0
    g = groups[m].astype(np.int64)
    if g.size == 0:
        return (0, 0, 0)
    isl = island[m].astype(np.int64)
    if np.any(isl < 0) or np.any(isl >= max(n_islands, 1)):
        raise ConfigError("island index out of range", code="invalid_parameter")
    key = g * np.int64(max(n_islands, 1)) + isl
    uk, cnt = np.unique(key, return_counts=True)
    ug = uk // np.int64(max(n_islands, 1))
    # Per group: its size and its largest island share.
    gid, inverse = np.unique(ug, return_inverse=True)
    size = np.zeros(gid.size, dtype=np.int64)
    np.add.at(size, inverse, cnt)
    best = np.zeros(gid.size, dtype=np.int64)
    np.maximum.at(best, inverse, cnt)
    return (int(g.size), int((size - best).sum()), int(gid.size))


def size_percentiles(
    sizes: NDArray[np.integer], qs: tuple[float, ...] = (50, 90, 99)
) -> list[float]:
    """Peer-weighted percentiles of island size: the size of the island a random peer is in."""
    if sizes.size == 0:
        return [0.0 for _ in qs]
    per_peer = np.repeat(sizes.astype(np.int64), sizes.astype(np.int64))
    if per_peer.size == 0:
        return [0.0 for _ in qs]
    return [float(v) for v in np.percentile(per_peer, qs, method="lower")]
