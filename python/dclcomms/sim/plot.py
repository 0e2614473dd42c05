"""Plotting helpers for simulator results (needs the ``plot`` extra: matplotlib).

matplotlib is imported lazily, inside each function, so ``import dclcomms.sim``
works without it. Every function draws on ``ax`` (a new figure if ``None``) and
returns the axes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from dclcomms.sim.simulation import SimResult, Simulation, Snapshot

if TYPE_CHECKING:
    from matplotlib.axes import Axes


def _axes(ax: Axes | None, figsize: tuple[float, float] = (6.0, 4.0)) -> Axes:
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, new_ax = plt.subplots(figsize=figsize)
    return new_ax


def island_map(
    source: Simulation | Snapshot,
    ax: Axes | None = None,
    *,
    max_points: int = 20_000,
    seed: int = 0,
    circles: int = 10,
    extent: tuple[float, float, float, float] | None = None,
    title: str | None = None,
) -> Axes:
    """Scatter of peers on X/Z coloured by island, with the ``circles`` largest islands outlined.

    Above ``max_points`` peers a seeded uniform sample is drawn (keeps notebooks
    small). ``extent`` = (x_min, x_max, z_min, z_max) zooms in.
    """
    from matplotlib.patches import Circle

    snap = (source.snapshot() if isinstance(source, Simulation) else source).placed()
    ax = _axes(ax, (6.0, 6.0))
    n = snap.peer_ids.size
    rows = np.arange(n)
    if n > max_points:
        rows = np.sort(np.random.default_rng(seed).choice(n, max_points, replace=False))
    xz = snap.positions[rows][:, [0, 2]]
    colour = snap.island[rows] % 20
    ax.scatter(xz[:, 0], xz[:, 1], c=colour, cmap="tab20", vmin=0, vmax=19, s=6, linewidths=0)
    for row in np.argsort(-snap.sizes, kind="stable")[:circles]:
        cx, cz = snap.centers[row, 0], snap.centers[row, -1]
        r = max(float(snap.radii[row]), 2.0)
        ax.add_patch(Circle((cx, cz), r, fill=False, lw=0.8, color="0.3"))
        ax.annotate(
            f"{snap.island_ids[row]} ({snap.sizes[row]})", (cx, cz + r), fontsize=7, ha="center"
        )
    if extent is not None:
        ax.set_xlim(extent[0], extent[1])
        ax.set_ylim(extent[2], extent[3])
    ax.set_aspect("equal")
    ax.set_xlabel("x (m)")
    ax.set_ylabel("z (m)")
    shown = f", {rows.size:,} shown" if rows.size < n else ""
    ax.set_title(title or f"{n:,} peers in {snap.sizes.size:,} islands{shown}")
    return ax


def size_histogram(
    result: SimResult,
    ax: Axes | None = None,
    *,
    flush: int | None = None,
    weight: str = "islands",
    log: bool = True,
) -> Axes:
    """Island size distribution at one flush (default: the last).

    ``weight="islands"`` counts islands per size; ``"peers"`` counts the peers in
    islands of each size (what a peer experiences).
    """
    sizes = result.sizes
    if sizes.empty:
        raise ValueError("no flushes in this result")
    k = int(sizes["flush"].max()) if flush is None else flush
    at = sizes[sizes["flush"] == k]
    y = at["islands"] * (at["size"] if weight == "peers" else 1)
    ax = _axes(ax)
    ax.bar(at["size"], y, width=1.0, color="tab:blue")
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("island size (peers)")
    ax.set_ylabel("peers" if weight == "peers" else "islands")
    ax.set_title(f"island sizes at t = {float(at['t_s'].iloc[0]):g} s")
    return ax


def churn_timeline(result: SimResult, ax: Axes | None = None) -> Axes:
    """Churn (island changes per peer-minute) over time, with the island count on a twin axis."""
    f = result.flushes
    ax = _axes(ax, (8.0, 3.5))
    ax.plot(f["t_s"], f["churn"], color="tab:red", lw=1.2, label="churn")
    ax.set_xlabel("simulated time (s)")
    ax.set_ylabel("island changes / peer-minute", color="tab:red")
    twin: Any = ax.twinx()
    twin.plot(f["t_s"], f["islands"], color="tab:blue", lw=1.0, label="islands")
    twin.plot(f["t_s"], f["peers"], color="0.5", lw=1.0, ls="--", label="peers")
    twin.set_ylabel("count")
    twin.legend(loc="upper right", fontsize=8)
    return ax


def transport_mix(
    result: SimResult, ax: Axes | None = None, *, value: str = "participants"
) -> Axes:
    """Stacked area of ``participants`` (or ``rooms`` / ``cost``) per transport kind over time."""
    t = result.transport
    if t.empty:
        raise ValueError("no transport rows: run the simulation with a policy")
    wide = t.pivot_table(index="t_s", columns="kind", values=value, aggfunc="sum", fill_value=0)
    ax = _axes(ax, (8.0, 3.5))
    ax.stackplot(wide.index, wide.T.values, labels=[str(c) for c in wide.columns])
    ax.set_xlabel("simulated time (s)")
    ax.set_ylabel(value)
    ax.legend(loc="upper left", fontsize=8)
    return ax
