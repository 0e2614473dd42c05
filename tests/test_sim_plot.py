"""Plot helpers draw what they claim (Agg backend, no display)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest

from dclcomms.sim import Bounds, RandomWaypoint, Simulation, SizeThreshold
from dclcomms.sim import plot as simplot
from tests.helpers.sim_oracle import OracleEngine


@pytest.fixture
def sim() -> Simulation:
    s = Simulation(
        RandomWaypoint(150, group_size=3, bounds=Bounds(0.0, 2000.0, 0.0, 2000.0)),
        seed=4,
        engine=OracleEngine(),
        policy=SizeThreshold(6),
    )
    s.run(20, progress=False)
    return s


def test_island_map_samples_and_outlines(sim: Simulation) -> None:
    ax = simplot.island_map(sim, max_points=100, circles=3)
    offsets = ax.collections[0].get_offsets()
    assert len(offsets) == 100
    assert len(ax.patches) == 3
    assert "150 peers" in ax.get_title() and "100 shown" in ax.get_title()
    plt.close("all")


def test_size_histogram_weights(sim: Simulation) -> None:
    r = sim.result
    last = r.sizes[r.sizes["flush"] == r.sizes["flush"].max()]
    ax = simplot.size_histogram(r, weight="peers", log=False)
    heights = sorted(p.get_height() for p in ax.patches)
    assert heights == sorted((last["islands"] * last["size"]).tolist())
    assert sum(heights) == 150
    plt.close("all")


def test_timelines(sim: Simulation) -> None:
    ax = simplot.churn_timeline(sim.result)
    assert len(ax.lines[0].get_xdata()) == 10
    ax = simplot.transport_mix(sim.result)
    assert {t.get_text() for t in ax.get_legend().get_texts()} <= {"livekit", "ws-room"}
    plt.close("all")
    empty = Simulation(RandomWaypoint(5), seed=0, engine=OracleEngine())
    with pytest.raises(ValueError):
        simplot.size_histogram(empty.result)
    empty.run(2, progress=False)
    with pytest.raises(ValueError):
        simplot.transport_mix(empty.result)
