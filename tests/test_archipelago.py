"""dclcomms.archipelago.Engine: API contract, typed errors, converge guarantees,
a brute-force oracle of invariants I1-I4 (archipelago.md §2.6) on seeded random
clouds, Hypothesis properties and thread safety."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dclcomms import ConfigError
from dclcomms.archipelago import UNSET, Engine, Island, IslandChange, Unset

# --- oracle -------------------------------------------------------------------


def invariant_violations(engine: Engine, join: float, leave: float) -> list[str]:
    """Brute-force check of I1-I4 over every peer pair (numpy, chunked)."""
    s = engine.snapshot()
    n, k = len(s.peer_ids), len(s.island_ids)
    problems: list[str] = []
    idx = s.island_index.astype(np.int64)
    if (idx < 0).any():
        problems.append(f"I3: {int((idx < 0).sum())} peers without island")
        return problems
    members_seen = sorted(p for isl in engine.islands() for p in isl.peers)
    if members_seen != sorted(s.peer_ids.tolist()):
        problems.append("I3: island member lists do not cover every peer exactly once")
    counts = np.bincount(idx, minlength=k)
    if not np.array_equal(counts, s.sizes):
        problems.append("size table does not match membership")
    over = np.nonzero(counts > s.max_peers)[0]
    problems += [f"I4: {s.island_ids[i]} has {counts[i]} > {s.max_peers[i]}" for i in over]
    x = s.positions[:, 0].astype(np.float64)
    z = s.positions[:, 2].astype(np.float64)
    order = np.argsort(idx, kind="stable")
    bounds = np.searchsorted(idx[order], np.arange(k + 1))
    for r in range(k):  # I1: each island connected under leave distance
        m = order[bounds[r] : bounds[r + 1]]
        dx = x[m, None] - x[None, m]
        dz = z[m, None] - z[None, m]
        adj = dx * dx + dz * dz <= leave * leave
        seen = np.zeros(len(m), dtype=bool)
        seen[0] = True
        frontier = seen.copy()
        while frontier.any():
            nxt = adj[frontier].any(axis=0) & ~seen
            seen |= nxt
            frontier = nxt
        if not seen.all():
            problems.append(f"I1: {s.island_ids[r]} is not connected")
    cap = s.max_peers.astype(np.int64)
    for start in range(0, n, 256):  # I2: no touching pair of islands that would fit
        rows = np.arange(start, min(n, start + 256))
        dx = x[rows, None] - x[None, :]
        dz = z[rows, None] - z[None, :]
        a, b = np.nonzero(dx * dx + dz * dz <= join * join)
        a = rows[a]
        ia, ib = idx[a], idx[b]
        diff = ia != ib
        # The smaller island (ties: the younger) joins the other: its capacity decides.
        receiver = np.where(
            (counts[ia] > counts[ib]) | ((counts[ia] == counts[ib]) & (ia < ib)), ia, ib
        )
        fits = counts[ia] + counts[ib] <= cap[receiver]
        bad = np.nonzero(diff & fits)[0]
        if len(bad):
            i = bad[0]
            problems.append(
                f"I2: {s.island_ids[ia[i]]} and {s.island_ids[ib[i]]} touch "
                f"({s.peer_ids[a[i]]}, {s.peer_ids[b[i]]}) and would fit"
            )
            break
    return problems


def uniform(rng: np.random.Generator, n: int, half: float) -> np.ndarray:
    pos = np.zeros((n, 3))
    pos[:, 0] = rng.uniform(-half, half, n)
    pos[:, 2] = rng.uniform(-half, half, n)
    return pos


def ids(n: int, prefix: str = "p") -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


@pytest.fixture
def engine() -> Engine:
    return Engine()


def test_oracle_detects_violations() -> None:
    """The oracle is not vacuous: a hand-made bad partition trips I1, I2 and I4."""
    from types import SimpleNamespace

    snap = SimpleNamespace(
        peer_ids=np.array(["a", "b", "c"], dtype=object),
        positions=np.array([[0, 0, 0], [10, 0, 0], [500, 0, 0]], dtype=np.float32),
        island_index=np.array([0, 1, 0], dtype=np.int32),
        island_ids=np.array(["I1", "I2"], dtype=object),
        sizes=np.array([2, 1], dtype=np.uint32),
        max_peers=np.array([1, 5], dtype=np.uint32),
    )
    fake = SimpleNamespace(
        snapshot=lambda: snap,
        islands=lambda: [SimpleNamespace(peers=("a", "c")), SimpleNamespace(peers=("b",))],
    )
    found = " ".join(invariant_violations(fake, 64, 80))  # type: ignore[arg-type]
    assert "I1: I1" in found and "I4: I1" in found
    snap.max_peers = np.array([5, 5], dtype=np.uint32)
    found = " ".join(invariant_violations(fake, 64, 80))  # type: ignore[arg-type]
    assert "I2: " in found


# --- parameters and typed errors ------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"join_distance": 64, "leave_distance": 63},
        {"join_distance": 0},
        {"join_distance": -1},
        {"join_distance": math.nan},
        {"leave_distance": math.inf},
        {"join_distance": "64"},
        {"max_island_size": 0},
        {"max_island_size": 2.5},
        {"max_island_size": True},
        {"id_prefix": ""},
        {"id_prefix": "a.b"},
        {"id_prefix": "a*"},
        {"id_prefix": "a>"},
        {"id_prefix": "a b"},
        {"id_prefix": "a\n"},
        {"mode": "fast"},
    ],
)
def test_invalid_parameters_raise_config_error(kwargs: dict[str, object]) -> None:
    # the error names the offending parameter (the last one given: leave_distance in the
    # first case), in both modes
    field = list(kwargs)[-1]
    for mode in ("converge", "reference"):
        if kwargs.get("mode") is not None and mode == "reference":
            continue
        with pytest.raises(ConfigError) as info:
            Engine(**{"mode": mode, **kwargs})  # type: ignore[arg-type]
        assert info.value.code == "invalid_parameter"
        assert isinstance(info.value, ValueError)
        assert info.value.field == field, (mode, str(info.value))


def test_reference_mode_keeps_the_reference_quirks() -> None:
    """mode="reference": newcomers are transient singletons (Q4) and the 5-peer
    capacity world flaps forever (Q2); converge settles (see test below)."""
    ref = Engine(mode="reference", max_island_size=3)
    assert ref.mode == "reference"
    names = ["a", "b", "c", "d", "e"]
    pos = np.array([[150, 0, 10], [60, 0, 20], [180, 0, 30], [100, 0, 10], [160, 0, 0]])
    ref.update_many(names, pos)
    first = {c.peer_id: c for c in ref.flush()}
    assert first["c"].from_island_id is not None  # merged from its transient singleton
    transient = []
    for _ in range(4):
        ref.update_many(names, pos)
        changes = ref.flush()
        assert [c.peer_id for c in changes] == ["e"]  # re-assigned every flush
        assert changes[0].island_id == ref.island_of("b")  # 102 m from b (Q1)
        transient.append(changes[0].from_island_id)
    assert None not in transient and len(set(transient)) == 4  # a fresh transient id each time
    assert ref.flush() == []  # no heartbeat => nothing dirty => nothing happens


def test_reference_mode_rejects_like_converge() -> None:
    ref = Engine(mode="reference")
    with pytest.raises(ConfigError) as info:
        ref.update("a", (math.nan, 0, 0))
    assert info.value.code == "invalid_position"
    with pytest.raises(ConfigError) as info:
        ref.update_many(["a", ""], np.zeros((2, 3)))
    assert info.value.code == "invalid_peer_id"
    with pytest.raises(ConfigError) as info:
        Engine(mode="reference", id_prefix="a.b")
    assert info.value.code == "invalid_parameter"
    assert ref.peer_count == 0


def test_defaults() -> None:
    e = Engine()
    assert e.mode == "converge"
    assert (e.peer_count, e.island_count) == (0, 0)
    assert e.flush() == []


@pytest.mark.parametrize(
    "bad", [(math.nan, 0, 0), (0, math.inf, 0), (0, 0, -math.inf), (1e39, 0, 0)]
)
def test_non_finite_positions_rejected(engine: Engine, bad: tuple[float, float, float]) -> None:
    with pytest.raises(ConfigError) as info:
        engine.update("a", bad)
    assert info.value.code == "invalid_position"
    assert engine.peer_count == 0


@pytest.mark.parametrize("bad", [(1, 2), (1, 2, 3, 4), ("x", 0, 0), None])
def test_malformed_positions_rejected(engine: Engine, bad: object) -> None:
    with pytest.raises(ConfigError) as info:
        engine.update("a", bad)  # type: ignore[arg-type]
    assert info.value.code == "invalid_position"


@pytest.mark.parametrize("bad", ["", None, 5])
def test_invalid_peer_ids_rejected(engine: Engine, bad: object) -> None:
    with pytest.raises(ConfigError) as info:
        engine.update(bad, (0, 0, 0))  # type: ignore[arg-type]
    assert info.value.code == "invalid_peer_id"


def test_update_many_is_atomic_on_error(engine: Engine) -> None:
    pos = np.array([[0, 0, 0], [1, 0, 1], [np.nan, 0, 0]], dtype=np.float64)
    with pytest.raises(ConfigError, match="row 2") as info:
        engine.update_many(["a", "b", "c"], pos)
    assert info.value.code == "invalid_position"
    big = np.array([[0, 0, 0], [1e300, 0, 0]])  # finite float64, infinite as float32
    with pytest.raises(ConfigError) as info:
        engine.update_many(["a", "b"], big)
    assert info.value.code == "invalid_position"
    assert engine.peer_count == 0


@pytest.mark.parametrize(
    "args",
    [
        (["a", "b"], np.zeros((3, 3))),
        (["a"], np.zeros((1, 2))),
        (["a"], np.zeros(3)),
        (["a"], np.array([["x", "y", "z"]])),
    ],
)
def test_update_many_shape_errors(engine: Engine, args: tuple[list[str], np.ndarray]) -> None:
    with pytest.raises(ConfigError) as info:
        engine.update_many(*args)
    assert info.value.code == "invalid_parameter"


def test_update_many_preferred_length_checked(engine: Engine) -> None:
    with pytest.raises(ConfigError) as info:
        engine.update_many(["a", "b"], np.zeros((2, 3)), ["I1"])
    assert info.value.code == "invalid_parameter"
    with pytest.raises(ConfigError, match="got 7") as info:
        engine.update_many(["a", "b"], np.zeros((2, 3)), [UNSET, 7])  # type: ignore[list-item]
    assert info.value.code == "invalid_parameter"
    assert engine.peer_count == 0  # nothing applied


# --- API behaviour ------------------------------------------------------------------


def test_update_many_float32_and_float64_agree() -> None:
    rng = np.random.default_rng(7)
    pos = uniform(rng, 500, 400)
    a, b = Engine(), Engine()
    a.update_many(ids(500), pos.astype(np.float32))
    b.update_many(ids(500), pos)
    assert a.flush() == b.flush()
    assert a.islands() == b.islands()
    np.testing.assert_array_equal(a.snapshot().positions, pos.astype(np.float32))


def test_flush_reports_first_assignment_without_from(engine: Engine) -> None:
    engine.update("1", (0, 0, 0))
    engine.update("2", (16, 0, 16))
    assert engine.flush() == [
        IslandChange("1", "changed", "I1", None),
        IslandChange("2", "changed", "I1", None),
    ]
    assert engine.islands() == [
        Island("I1", ("1", "2"), (8.0, 0.0, 8.0), math.sqrt(128), 100),
    ]
    assert engine.island_of("1") == "I1"
    assert engine.island_of("nobody") is None


def test_pending_peer_has_no_island_until_flush(engine: Engine) -> None:
    engine.update("a", (0, 0, 0))
    assert engine.peer_count == 1
    assert engine.island_of("a") is None
    snap = engine.snapshot()
    assert snap.island_index.tolist() == [-1]
    assert len(snap.island_ids) == 0


def test_changed_and_left_in_one_flush(engine: Engine) -> None:
    engine.update_many(["a", "b", "c"], np.array([[0, 0, 0], [50, 0, 0], [100, 0, 0]]))
    engine.flush()
    assert engine.disconnect("b") is True
    assert engine.disconnect("b") is False
    changes = engine.flush()  # a-c are 100 m apart: c splits off
    assert changes == [
        IslandChange("b", "left", "I1", None),
        IslandChange("c", "changed", "I2", "I1"),
    ]


def test_disconnect_many_and_expire(engine: Engine) -> None:
    engine.update("old", (0, 0, 0), now_ms=1_000)
    engine.update("x", (5, 0, 0), now_ms=50_000)
    engine.update("y", (9, 0, 0), now_ms=50_000)
    engine.flush()
    assert engine.expire(61_000) == 0
    assert engine.expire(61_001) == 1
    assert engine.disconnect_many(["x", "nobody"]) == 1
    assert [c.peer_id for c in engine.flush()] == ["old", "x"]
    assert engine.peer_count == 1


def test_preferred_island_keep_set_clear() -> None:
    def world() -> Engine:
        e = Engine(max_island_size=3)
        e.update_many(["a1", "a2", "b1"], np.array([[0, 0, 0], [-10, 0, 0], [120, 0, 0]]))
        e.flush()
        return e

    e = world()
    e.update("n", (60, 0, 0), "I2")
    e.flush()
    assert e.island_of("n") == "I2"
    # A reconnected peer is a new peer: its preference does not survive the session.
    e = world()
    e.update("n", (500, 0, 0), "I2")
    e.flush()
    e.disconnect("n")
    e.flush()
    e.update("n", (60, 0, 0))
    e.flush()
    assert e.island_of("n") == "I1"
    e = world()
    e.update("n", (500, 0, 0), "I2")
    e.update("n", (60, 0, 0), UNSET)  # same session, preference kept
    e.flush()
    assert e.island_of("n") == "I2"
    e = world()
    e.update("n", (500, 0, 0), "I2")
    e.update("n", (60, 0, 0), None)  # cleared
    e.flush()
    assert e.island_of("n") == "I1"
    e = world()
    e.update_many(["n"], np.array([[60.0, 0, 0]]), ["I2"])
    e.flush()
    assert e.island_of("n") == "I2"


@pytest.mark.parametrize(
    ("first", "second", "island"),
    [
        ("I2", UNSET, "I2"),  # kept across heartbeats
        ("I2", "", "I1"),  # "" (the wire's clear) clears
        ("I2", None, "I1"),  # None clears
        (UNSET, "I2", "I2"),  # set by the later row
        (UNSET, UNSET, "I1"),  # never set
    ],
)
def test_update_many_preferred_rows_keep_set_clear(
    first: str | Unset | None, second: str | Unset | None, island: str
) -> None:
    """The batch form (a heartbeat batch's desired rooms as they are), row by row, with
    rows of other peers before and after (the binding skips leading UNSET rows)."""
    e = Engine(max_island_size=3)
    e.update_many(["a1", "a2", "b1"], np.array([[0, 0, 0], [-10, 0, 0], [120, 0, 0]]))
    e.flush()  # I1 = a1, a2 (x = 0, -10); I2 = b1 (x = 120): both within 64 m of x = 60
    far = [500.0, 0.0, 0.0]
    e.update_many(["x", "n", "y"], np.array([far, far, far]), [UNSET, first, UNSET])
    e.update_many(["x", "n"], np.array([far, [60.0, 0, 0]]), [UNSET, second])
    e.flush()
    assert e.island_of("n") == island


def test_snapshot_arrays(engine: Engine) -> None:
    rng = np.random.default_rng(3)
    pos = uniform(rng, 300, 500)
    engine.update_many(ids(300), pos)
    engine.flush()
    s = engine.snapshot()
    assert s.positions.dtype == np.float32 and s.positions.shape == (300, 3)
    assert s.island_index.dtype == np.int32
    assert s.centers.shape == (len(s.island_ids), 3)
    assert s.sizes.sum() == 300
    for isl, row in zip(engine.islands(), range(len(s.island_ids)), strict=True):
        assert s.island_ids[row] == isl.id
        members = s.peer_ids[s.island_index == row]
        assert sorted(members) == sorted(isl.peers)
        np.testing.assert_allclose(s.centers[row], isl.center)
        assert s.radii[row] == pytest.approx(isl.radius)


# --- converge guarantees ---------------------------------------------------------


def settle(engine: Engine, peer_ids: list[str], pos: np.ndarray, limit: int = 3) -> int:
    """Heartbeat everyone unchanged until a flush reports nothing; returns flushes used."""
    for used in range(1, limit + 1):
        engine.update_many(peer_ids, pos)
        if not engine.flush():
            return used
    raise AssertionError(f"still changing after {limit} settling flushes")


def test_capacity_flapping_world_settles() -> None:
    e = Engine(max_island_size=3)
    names = ["a", "b", "c", "d", "e"]
    pos = np.array([[150, 0, 10], [60, 0, 20], [180, 0, 30], [100, 0, 10], [160, 0, 0]])
    e.update_many(names, pos)
    e.flush()
    assert sorted(sorted(i.peers) for i in e.islands()) == [["a", "c", "d"], ["b"], ["e"]]
    assert settle(e, names, pos) == 1
    for _ in range(5):
        e.update_many(names, pos)
        assert e.flush() == []


@pytest.mark.slow
@pytest.mark.parametrize("seed", [11, 12])
def test_10k_uniform_world_converges(seed: int) -> None:
    rng = np.random.default_rng(seed)
    names = ids(10_000)
    pos = uniform(rng, 10_000, 2400)
    e = Engine()
    e.update_many(names, pos)
    first = e.flush()
    assert len(first) == 10_000
    assert invariant_violations(e, 64, 80) == [], f"seed={seed}"
    assert settle(e, names, pos) <= 3
    # Move 10% by up to 10 m, then stay: zero changes within 3 flushes and after.
    movers = rng.choice(10_000, 1_000, replace=False)
    pos[movers, 0] += rng.uniform(-10, 10, 1_000)
    pos[movers, 2] += rng.uniform(-10, 10, 1_000)
    e.update_many(names, pos)
    e.flush()
    assert invariant_violations(e, 64, 80) == [], f"seed={seed}"
    assert settle(e, names, pos) <= 3
    for _ in range(3):
        e.update_many(names, pos)
        assert e.flush() == [], f"seed={seed}"


def test_new_peer_joins_directly_no_transient_singleton(engine: Engine) -> None:
    engine.update_many(["a", "b"], np.array([[0, 0, 0], [30, 0, 0]]))
    engine.flush()
    engine.update("n", (90, 0, 0))
    assert engine.flush() == [IslandChange("n", "changed", "I1", None)]
    engine.update("far", (1000, 0, 0))
    assert engine.flush() == [IslandChange("far", "changed", "I2", None)]


def test_transitive_merges_complete_in_one_flush(engine: Engine) -> None:
    names = [f"p{i}" for i in range(6)]
    pos = np.array([[i * 100.0, 0, 0] for i in range(6)])
    engine.update_many(names, pos)
    engine.flush()
    assert engine.island_count == 6
    pos[:, 0] = np.arange(6) * 60.0  # a chain within join distance
    engine.update_many(names, pos)
    engine.flush()
    assert engine.island_count == 1
    assert engine.flush() == []


def test_no_merge_into_bigger_island_it_does_not_touch() -> None:
    # X={x} touches full P but not T; T is bigger than X and has room.
    e = Engine(max_island_size=3)
    e.update_many(
        ["p1", "p2", "p3", "t1", "t2", "x"],
        np.array([[0, 0, 0], [10, 0, 0], [20, 0, 0], [-150, 0, 0], [-160, 0, 0], [80, 0, 0]]),
    )
    e.flush()
    assert sorted(sorted(i.peers) for i in e.islands()) == [["p1", "p2", "p3"], ["t1", "t2"], ["x"]]


# --- oracle on seeded random clouds -------------------------------------------------


def clouds() -> Iterator[tuple[int, int, float, int]]:
    for seed in range(20):
        rng = np.random.default_rng(seed)
        yield (
            seed,
            int(rng.integers(50, 800)),
            float(rng.uniform(50, 1500)),
            int(rng.integers(1, 40)),
        )


@pytest.mark.parametrize(("seed", "n", "half", "cap"), list(clouds()))
def test_oracle_random_clouds(seed: int, n: int, half: float, cap: int) -> None:
    rng = np.random.default_rng(1000 + seed)
    join, leave = float(rng.uniform(20, 70)), 0.0
    leave = join + float(rng.uniform(0, 30))
    e = Engine(join, leave, cap)
    names = ids(n)
    pos = uniform(rng, n, half)
    if seed % 2:  # clustered: most peers around a few hotspots
        centers = uniform(rng, 4, half)
        hot = rng.random(n) < 0.8
        pos[hot] = centers[rng.integers(0, 4, hot.sum())] + uniform(rng, int(hot.sum()), 40)
    e.update_many(names, pos)
    e.flush()
    assert invariant_violations(e, join, leave) == [], f"seed={seed}"
    alive = set(names)
    for step in range(6):
        movers = rng.choice(n, max(1, n // 5), replace=False)
        pos[movers, 0] += rng.uniform(-3 * join, 3 * join, len(movers))
        pos[movers, 2] += rng.uniform(-3 * join, 3 * join, len(movers))
        live = [i for i in movers if names[i] in alive]
        e.update_many([names[i] for i in live], pos[live])
        gone = [names[i] for i in rng.choice(n, 3, replace=False) if names[i] in alive]
        e.disconnect_many(gone)
        alive -= set(gone)
        changes = e.flush()
        assert len({c.peer_id for c in changes}) == len(changes), f"seed={seed} step={step}"
        assert {c.peer_id for c in changes if c.kind == "left"} == set(gone)
        assert invariant_violations(e, join, leave) == [], f"seed={seed} step={step}"
    assert e.flush() == [], f"seed={seed}"


# --- Hypothesis properties ------------------------------------------------------------

coords = st.floats(min_value=-300, max_value=300, allow_nan=False, width=32)
points = st.lists(st.tuples(coords, coords), min_size=1, max_size=40)


@settings(max_examples=60, deadline=None)
@given(
    first=points,
    moves=st.lists(st.tuples(st.integers(0, 39), coords, coords), max_size=20),
    cap=st.integers(1, 8),
)
def test_property_partition_capacity_and_stillness(
    first: list[tuple[float, float]], moves: list[tuple[int, float, float]], cap: int
) -> None:
    e = Engine(max_island_size=cap)
    names = ids(len(first))
    pos = np.array([[x, 0.0, z] for x, z in first])
    e.update_many(names, pos)
    e.flush()
    for i, x, z in moves:
        if i < len(names):
            pos[i] = (x, 0.0, z)
            e.update(names[i], (x, 0.0, z))
    e.flush()
    islands = e.islands()
    members = [p for isl in islands for p in isl.peers]
    assert sorted(members) == sorted(names)  # every peer in exactly one island
    assert all(len(isl.peers) <= cap for isl in islands)  # no island over capacity
    assert invariant_violations(e, 64, 80) == []
    # Nobody moves => nothing changes.
    e.update_many(names, pos)
    assert e.flush() == []
    assert e.islands() == islands


# --- threads --------------------------------------------------------------------------


def test_concurrent_updates_and_flushes_from_threads() -> None:
    e = Engine(max_island_size=20)
    errors: list[BaseException] = []
    stop = threading.Event()

    def writer(seed: int) -> None:
        try:
            rng = np.random.default_rng(seed)
            names = ids(300, prefix=f"w{seed}_")
            for round_ in range(40):
                e.update_many(names, uniform(rng, 300, 600))
                if round_ % 7 == 0:
                    e.disconnect_many(names[:10])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def flusher() -> None:
        try:
            while not stop.is_set():
                for c in e.flush():
                    assert c.kind in ("changed", "left")
                e.islands()
                e.snapshot()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(s,)) for s in range(3)]
    f = threading.Thread(target=flusher)
    f.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    f.join()
    assert errors == []
    e.flush()
    assert e.peer_count == 900
    assert invariant_violations(e, 64, 80) == []
    assert e.flush() == []


@pytest.mark.parametrize("bad", [["a", ""], ["a", 5], ("a", None)])
def test_update_many_rejects_bad_ids(engine: Engine, bad: list[object]) -> None:
    with pytest.raises(ConfigError) as info:
        engine.update_many(bad, np.zeros((2, 3)))  # type: ignore[arg-type]
    assert info.value.code == "invalid_peer_id"
    assert engine.peer_count == 0


def test_lookups_reject_non_string_ids(engine: Engine) -> None:
    for call in (engine.disconnect, engine.island_of, lambda p: engine.disconnect_many([p])):
        with pytest.raises(ConfigError) as info:
            call(5)  # type: ignore[operator]
        assert info.value.code == "invalid_peer_id"


def test_extreme_coordinates(engine: Engine) -> None:
    """Far-away worlds (grid cells clamp at ±2**31) still cluster exactly."""
    big = 3.0e38  # close to the float32 maximum
    engine.update_many(
        ["a", "b", "c", "d"],
        np.array([[big, 0, big], [big, 0, big], [-big, 0, -big], [1e12, 0, 1e12 + 64]]),
    )
    engine.update("e", (1e12, 0, 1e12))
    engine.flush()
    groups = sorted(sorted(i.peers) for i in engine.islands())
    assert groups == [["a", "b"], ["c"], ["d", "e"]]
    assert invariant_violations(engine, 64, 80) == []


def test_boot_epoch_ids() -> None:
    e = Engine(id_epoch="lz3k")
    e.update("a", (0, 0, 0))
    e.update("b", (500, 0, 0))
    assert [c.island_id for c in e.flush()] == ["Ilz3k-1", "Ilz3k-2"]
    for bad in ("LZ", "a-b", "a b", 7):
        with pytest.raises(ConfigError) as info:
            Engine(id_epoch=bad)  # type: ignore[arg-type]
        assert info.value.code == "invalid_parameter"
    with pytest.raises(ConfigError):
        Engine(mode="reference", id_epoch="x1")
