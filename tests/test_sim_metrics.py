"""Metrics (churn, split peers, sizes), policies and the cost model, with hand-computed answers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dclcomms.errors import ConfigError
from dclcomms.sim import (
    CostModel,
    Fixed,
    Hysteresis,
    SimIsland,
    SimPolicy,
    Simulation,
    SizeThreshold,
    Tiered,
    churn_per_peer_minute,
    group_split,
    size_percentiles,
)
from tests.helpers.sim import ENGINES, Scripted
from tests.helpers.sim_oracle import OracleEngine

# -- churn -------------------------------------------------------------------


def test_churn_formula() -> None:
    # 3 moves among 10 peers in a 2 s flush: 3 / (10 * 2/60) = 9 per peer-minute.
    assert churn_per_peer_minute(3, 10, 2.0) == pytest.approx(9.0)
    assert churn_per_peer_minute(0, 0, 2.0) == 0.0
    with pytest.raises(ConfigError) as info:
        churn_per_peer_minute(1, 1, 0.0)
    assert info.value.code == "invalid_parameter"


@pytest.mark.parametrize("make_engine", ENGINES)
def test_churn_on_a_hand_built_world(make_engine: Callable[[], Any]) -> None:
    # Two pairs 1 km apart. At t=3 s peer 1 walks over to the other pair (a
    # teleport in the script), at t=7 s peer 3 disconnects.
    a, b = (0.0, 0.0), (1000.0, 0.0)
    script: dict[float, list[tuple[float, float] | None]] = {
        0.0: [a, (10.0, 0.0), b, (1010.0, 0.0)],
        3.0: [a, (1005.0, 0.0), b, (1010.0, 0.0)],
        7.0: [a, (1005.0, 0.0), b, None],
    }
    sim = Simulation(Scripted(script, groups=[0, 0, 1, 1]), seed=0, engine=make_engine())
    f = sim.run(12, progress=False).flushes
    assert f["t_s"].tolist() == [2.0, 4.0, 6.0, 8.0, 10.0, 12.0]
    assert f["assigned"].tolist() == [4, 0, 0, 0, 0, 0]
    assert f["moved"].tolist() == [0, 1, 0, 0, 0, 0]
    assert f["left"].tolist() == [0, 0, 0, 1, 0, 0]
    assert f["islands"].tolist() == [2, 2, 2, 2, 2, 2]
    assert f["peers"].tolist() == [4, 4, 4, 3, 3, 3]
    # One move among 4 peers in 2 s: 1 / (4 * 2/60) = 7.5 changes per peer-minute.
    assert f["churn"].tolist() == [0.0, 7.5, 0.0, 0.0, 0.0, 0.0]
    # Peer 1 (group 0) left its group's island: split from t=4 s; once peer 3 is
    # gone, group 1 is peer 2 alone, so still one split peer.
    assert f["split"].tolist() == [0, 1, 1, 1, 1, 1]
    assert f["grouped"].tolist() == [4, 4, 4, 3, 3, 3]
    sizes = sim.result.sizes
    assert sizes[sizes["flush"] == 1][["size", "islands"]].values.tolist() == [[1, 1], [3, 1]]


# -- split peers and sizes ----------------------------------------------------


def test_group_split_hand_built() -> None:
    groups = np.array([0, 0, 0, 1, 1, -1, 2, 2, 2, 2])
    island = np.array([0, 0, 1, 2, 2, 0, 3, 3, 1, 0])
    # group 0: majority island 0 (2 of 3) -> 1 split; group 1: 0 split;
    # group 2: island 3 holds 2, islands 1 and 0 one each -> 2 split.
    assert group_split(groups, island, 4) == (9, 3, 3)
    assert group_split(np.array([-1, -1]), np.array([0, 1]), 2) == (0, 0, 0)
    # A tie does not change the count: 2 + 2 in two islands -> 2 split.
    assert group_split(np.array([5, 5, 5, 5]), np.array([0, 1, 0, 1]), 2) == (4, 2, 1)
    with pytest.raises(ConfigError):
        group_split(np.array([0]), np.array([3]), 2)
    with pytest.raises(ConfigError):
        group_split(np.array([0, 1]), np.array([0]), 2)


def test_size_percentiles_are_peer_weighted() -> None:
    # 9 singletons and one island of 91: a random peer is in the big island 91% of the time.
    sizes = np.array([1] * 9 + [91])
    assert size_percentiles(sizes, (5, 50, 99)) == [1.0, 91.0, 91.0]
    assert size_percentiles(np.array([], dtype=np.int64)) == [0.0, 0.0, 0.0]


# -- policies ------------------------------------------------------------------


def _island(size: int, kind: str | None = None) -> SimIsland:
    return SimIsland(id="I1", size=size, center=(0.0, 0.0), radius=1.0, max_peers=100, kind=kind)


def test_size_threshold_and_fixed() -> None:
    p = SizeThreshold(20, "livekit", "ws-room")
    assert p.transport_for(_island(19)) == "ws-room"
    assert p.transport_for(_island(20)) == "livekit"
    assert Fixed("p2p").transport_for(_island(50)) == "p2p"
    assert isinstance(p, SimPolicy) and isinstance(Fixed(), SimPolicy)


def test_hysteresis() -> None:
    p = Hysteresis(up_at=7, down_at=4, large="livekit", small="p2p")
    assert p.transport_for(_island(6)) == "p2p"
    assert p.transport_for(_island(7)) == "livekit"
    assert p.transport_for(_island(5, "livekit")) == "livekit"
    assert p.transport_for(_island(4, "livekit")) == "p2p"
    assert p.transport_for(_island(6, "p2p")) == "p2p"
    for bad in (
        {"up_at": 3, "down_at": 4},
        {"up_at": 0, "down_at": 0},
        {"up_at": 3, "down_at": -1},
    ):
        with pytest.raises(ConfigError) as info:
            Hysteresis(**bad)
        assert info.value.code == "invalid_parameter"
    with pytest.raises(ConfigError):
        SizeThreshold(0)


# -- cost model ------------------------------------------------------------------


def test_cost_model_hand_computed() -> None:
    m = CostModel(participant_minute={"a": 0.01, "b": 0.001}, room_minute={"a": 0.1})
    # (10 participants * 0.01 + 2 rooms * 0.1) * 0.5 min = 0.15
    assert m.cost("a", 10, 2, 0.5) == pytest.approx(0.15)
    assert m.cost("b", 10, 2, 0.5) == pytest.approx(0.005)
    assert m.kinds == ("a", "b")
    for bad in ("c", None, 3):
        with pytest.raises(ConfigError) as info:
            m.check_kind(bad)
        assert info.value.code == "invalid_parameter"
    with pytest.raises(ConfigError):
        CostModel(participant_minute={"a": -1.0})
    with pytest.raises(ConfigError):
        CostModel(participant_minute={"a": float("nan")})
    with pytest.raises(ConfigError):
        CostModel(participant_minute={"a": 1.0}, room_minute={"b": 1.0})


@pytest.mark.parametrize("make_engine", ENGINES)
def test_transport_mix_and_cost_through_the_simulation(make_engine: Callable[[], Any]) -> None:
    # 5 peers together, 2 alone far away: islands of 5, 1, 1.
    script: dict[float, list[tuple[float, float] | None]] = {
        0.0: [
            (0.0, 0.0),
            (5.0, 0.0),
            (10.0, 0.0),
            (15.0, 0.0),
            (20.0, 0.0),
            (900.0, 0.0),
            (-900.0, 0.0),
        ]
    }
    cost = CostModel(
        participant_minute={"big": 0.06, "small": 0.0}, room_minute={"big": 0.0, "small": 0.6}
    )
    sim = Simulation(
        Scripted(script),
        seed=0,
        engine=make_engine(),
        policy=SizeThreshold(3, "big", "small"),
        cost_model=cost,
    )
    r = sim.run(6, progress=False)
    t = r.transport
    assert t[t["flush"] == 0][["kind", "rooms", "participants"]].values.tolist() == [
        ["big", 1, 5],
        ["small", 2, 2],
    ]
    # Per 2 s flush (1/30 min): big 5 * 0.06 / 30 = 0.01; small 2 rooms * 0.6 / 30 = 0.04.
    assert t[t["kind"] == "big"]["cost"].tolist() == pytest.approx([0.01] * 3)
    assert t[t["kind"] == "small"]["cost"].tolist() == pytest.approx([0.04] * 3)
    f = r.flushes
    assert f["cost"].tolist() == pytest.approx([0.05] * 3)
    assert f["cost_per_hour"].tolist() == pytest.approx([90.0] * 3)
    assert r.total_cost == pytest.approx(0.15)
    # The policy is asked for new islands only, then never again while nothing changes.
    assert f["policy_calls"].tolist() == [3, 0, 0]


@pytest.mark.parametrize("make_engine", ENGINES)
def test_policy_is_asked_again_on_membership_change_and_switches_count(
    make_engine: Callable[[], Any],
) -> None:
    near = [(float(i), 0.0) for i in range(4)]
    script: dict[float, list[tuple[float, float] | None]] = {
        0.0: [*near, (500.0, 0.0)],
        3.0: [*near, (4.0, 0.0)],  # the fifth walks in: island of 5 -> big
    }
    sim = Simulation(
        Scripted(script),
        seed=0,
        engine=make_engine(),
        policy=SizeThreshold(5, "livekit", "ws-room"),
    )
    f = sim.run(6, progress=False).flushes
    assert f["policy_calls"].tolist() == [2, 1, 0]
    assert f["transport_switches"].tolist() == [0, 1, 0]
    assert f["reissued"].tolist() == [0, 5, 0]


def test_a_policy_returning_an_unknown_kind_is_a_typed_error() -> None:
    class Typo:
        def transport_for(self, island: SimIsland) -> str:
            return "livekti"

    sim = Simulation(Scripted({0.0: [(0.0, 0.0)]}), seed=0, engine=OracleEngine(), policy=Typo())
    with pytest.raises(ConfigError) as info:
        sim.run(2, progress=False)
    assert info.value.code == "invalid_parameter"
    assert "livekti" in str(info.value)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(-1, 5), st.integers(0, 6)), min_size=0, max_size=60),
)
def test_group_split_matches_a_naive_count(pairs: list[tuple[int, int]]) -> None:
    groups = np.array([g for g, _ in pairs], dtype=np.int64)
    island = np.array([i for _, i in pairs], dtype=np.int64)
    naive_split = 0
    present = sorted({g for g, _ in pairs if g >= 0})
    for g in present:
        members = [i for gg, i in pairs if gg == g]
        naive_split += len(members) - max(members.count(i) for i in set(members))
    grouped = sum(1 for g, _ in pairs if g >= 0)
    assert group_split(groups, island, 7) == (grouped, naive_split, len(present))


@pytest.mark.parametrize("make_engine", ENGINES)
def test_a_realm_style_policy_runs_in_the_simulator(make_engine: Callable[[], Any]) -> None:
    # Written like the realm's RealmPolicy: reads island.peers and island.transport,
    # returns transport objects with a name, and hears about removed islands.
    class Named:
        def __init__(self, name: str) -> None:
            self.name = name

    class RealmLike:
        def __init__(self) -> None:
            self.seen: list[tuple[str, tuple[str, ...], str | None]] = []
            self.removed: list[str] = []

        def transport_for(self, island: SimIsland) -> Named:
            self.seen.append((island.id, island.peers, island.transport))
            return Named("livekit" if len(island.peers) >= 3 else "ws-room")

        def island_removed(self, island_id: str) -> None:
            self.removed.append(island_id)

    script: dict[float, list[tuple[float, float] | None]] = {
        0.0: [(0.0, 0.0), (5.0, 0.0), (500.0, 0.0)],
        3.0: [(0.0, 0.0), (5.0, 0.0), (10.0, 0.0)],  # the third joins the pair
    }
    policy = RealmLike()
    sim = Simulation(Scripted(script), seed=0, engine=make_engine(), policy=policy)
    r = sim.run(4, progress=False)
    first = sorted(policy.seen[:2], key=lambda s: len(s[1]))
    assert [sorted(p) for _, p, _ in first] == [["p2"], ["p0", "p1"]]
    assert [t for _, _, t in first] == [None, None]
    big_id, members, current = policy.seen[2]
    assert sorted(members) == ["p0", "p1", "p2"] and current == "ws-room"
    assert len(policy.removed) == 1 and policy.removed[0] != big_id
    t = r.transport
    assert t[t["flush"] == 1][["kind", "rooms", "participants"]].values.tolist() == [
        ["livekit", 1, 3]
    ]


def test_tiered_matches_the_realm_policy() -> None:
    """The simulator's Tiered and the realm's TieredPolicy decide alike (one rule)."""
    from dclcomms.config import RealmConfig
    from dclcomms.policy import IslandView, TieredPolicy, build_transports

    cfg = RealmConfig(livekit_host="lk.example", livekit_api_key="k", livekit_api_secret="s" * 32)
    realm = TieredPolicy(
        build_transports(cfg, bound_port=1, ws_room_secret="x"),
        p2p_up_at=5,
        p2p_down_at=2,
        livekit_up_at=12,
        livekit_down_at=8,
    )
    sim = Tiered(p2p_up_at=5, p2p_down_at=2, livekit_up_at=12, livekit_down_at=8)
    rng = np.random.default_rng(11)
    kind_sim: str | None = None
    kind_realm: str | None = None
    for n in rng.integers(1, 20, size=300).tolist():
        view = IslandView("I", tuple(f"p{i}" for i in range(n)), (0, 0, 0), 0.0, 100, kind_realm)
        kind_realm = realm.transport_for(view).name
        island = SimIsland("I", n, (0.0, 0.0), 0.0, 100, kind_sim)
        kind_sim = sim.transport_for(island)
        assert kind_sim == kind_realm, n
    assert Tiered(livekit=False).transport_for(SimIsland("I", 90, (0, 0), 0, 100, None)) == (
        "ws-room"
    )
    with pytest.raises(ConfigError):
        Tiered(p2p_up_at=3, p2p_down_at=3)


def test_bandwidth_model() -> None:
    m = CostModel(update_hz=10.0, packet_bytes=100.0, overhead_bytes={"p2p": 20.0, "ws-room": 0.0})
    # P2P: every member uploads (n - 1) packets per update on average; rooms: one
    assert m.peer_upstream_bytes_per_s("p2p", [1, 2, 6]).tolist() == [0.0, 1200.0, 6000.0]
    assert m.peer_upstream_bytes_per_s("ws-room", [1, 2, 6]).tolist() == [0.0, 1000.0, 1000.0]
    assert m.peer_upstream_bytes_per_s("offline", [6]).tolist() == [0.0]
    # the operator sends n (n - 1) packets per update for rooms, nothing for P2P
    assert m.server_egress_bytes_per_s("ws-room", [1, 6]).tolist() == [0.0, 30000.0]
    assert m.server_egress_bytes_per_s("p2p", [6]).tolist() == [0.0]


@pytest.mark.parametrize("make_engine", ENGINES)
def test_p2p_columns_through_the_simulation(make_engine: Callable[[], Any]) -> None:
    # islands of 5 (rooms: 5 >= p2p_up_at 4) and 2 (P2P) and a singleton (P2P)
    script: dict[float, list[tuple[float, float] | None]] = {
        0.0: [
            *((5.0 * i, 0.0) for i in range(5)),
            *((900.0, 0.0), (905.0, 0.0), (-900.0, 0.0)),
        ]
    }
    cost = CostModel(update_hz=10.0, packet_bytes=100.0, overhead_bytes={"p2p": 0.0})
    sim = Simulation(
        Scripted(script),
        seed=0,
        engine=make_engine(),
        policy=Tiered(p2p_up_at=4, p2p_down_at=2, livekit_up_at=50, livekit_down_at=30),
        cost_model=cost,
    )
    t = sim.run(2, progress=False).transport
    first = t[t["flush"] == 0].set_index("kind")
    assert first.loc["p2p", ["rooms", "participants"]].tolist() == [2, 3]
    assert first.loc["p2p", "cost"] == 0.0 and first.loc["p2p", "server_egress_Bps"] == 0.0
    # members of the pair upload 1000 B/s each, the singleton nothing: mean 2000 / 3
    assert first.loc["p2p", "peer_upstream_Bps"] == pytest.approx(2000.0 / 3)
    assert first.loc["p2p", "max_peer_upstream_Bps"] == pytest.approx(1000.0)
    assert first.loc["ws-room", "server_egress_Bps"] == pytest.approx(5 * 4 * 1000.0)
    assert first.loc["ws-room", "peer_upstream_Bps"] == pytest.approx(1000.0)
