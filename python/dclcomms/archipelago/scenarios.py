"""Replay runner for ``archipelago-conformance/v1`` scenario files.

The file (``tests/data/conformance/archipelago-scenarios.json``) holds the
reference engine's DSL fixtures and unit cases as data: ``steps`` of ops
(``move``, ``disconnect``, ``flush``, ``expect_*`` ...). :func:`replay` runs
one scenario against :class:`dclcomms.archipelago.Engine` and raises
:class:`ScenarioFailure` naming the first step whose expectation does not hold.

``reference_trace`` entries (the reference's exact ids and update order) are
informative only and never checked. Legacy-only ops are rejected unless the
scenario applies to the current engine (they never do in v1 ``current`` files).
A caller may replace steps (documented exceptions) through ``overrides``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

from dclcomms.archipelago import UNSET, Engine, IslandChange, Unset

__all__ = ["FORMAT", "ScenarioFailure", "ScenarioResult", "replay"]

FORMAT = "archipelago-conformance/v1"

_SKIPPED_OPS = frozenset({"dsl_self_check", "dsl_define"})


class ScenarioFailure(AssertionError):
    """An expectation of a scenario step did not hold."""

    def __init__(self, scenario: str, index: int, step: Mapping[str, Any], detail: str) -> None:
        super().__init__(f"{scenario} step {index} ({step.get('op')}): {detail}")
        self.scenario = scenario
        self.index = index
        self.step = step
        self.detail = detail


@dataclass
class ScenarioResult:
    """What a replay did: steps run/skipped and the changes of every flush."""

    name: str
    steps_run: int = 0
    steps_skipped: int = 0
    flushes: list[list[IslandChange]] = field(default_factory=list)
    engine: Engine | None = None


def _groups(engine: Engine) -> list[frozenset[str]]:
    return [frozenset(i.peers) for i in engine.islands()]


def _fmt(groups: list[frozenset[str]]) -> str:
    return str(sorted(sorted(g) for g in groups))


def _compare_trace(
    engine: Engine,
    changes: list[IslandChange],
    trace: Mapping[str, Any],
    fail: Callable[[str], NoReturn],
) -> None:
    want_updates = [
        (
            u["peer"],
            {"change_to": "changed", "leave": "left"}[u["action"]],
            u["island"],
            u.get("from_island"),
        )
        for u in trace.get("updates", [])
    ]
    got_updates = [(c.peer_id, c.kind, c.island_id, c.from_island_id) for c in changes]
    if got_updates != want_updates:
        fail(f"trace updates differ: got {got_updates}, want {want_updates}")
    if "islands" not in trace:
        return
    got = {i.id: i for i in engine.islands()}
    want_ids = [i["id"] for i in trace["islands"]]
    if sorted(got) != sorted(want_ids):
        fail(f"trace islands differ: got {sorted(got)}, want {sorted(want_ids)}")
    for w in trace["islands"]:
        g = got[w["id"]]
        if list(g.peers) != list(w["peers"]) or g.max_peers != w["max_peers"]:
            fail(f"trace island {w['id']}: got {g.peers}, want {w['peers']}")
        geometry_ok = math.isclose(g.radius, w["radius"], abs_tol=1e-6) and all(
            math.isclose(a, float(b), abs_tol=1e-6)
            for a, b in zip(g.center, w["center"], strict=True)
        )
        if not geometry_ok:
            fail(f"trace island {w['id']} geometry: got {g.center} r={g.radius}")


def replay(
    scenario: Mapping[str, Any],
    *,
    default_config: Mapping[str, Any] | None = None,
    overrides: Mapping[int, Mapping[str, Any] | None] | None = None,
    engine_factory: Callable[..., Engine] = Engine,
    check_trace: bool = False,
) -> ScenarioResult:
    """Run one scenario; raise :class:`ScenarioFailure` at the first failed expectation.

    ``overrides`` maps a step index to a replacement step (or ``None`` to skip
    it): the hook for documented exceptions, which callers must justify.
    ``check_trace`` also compares every flush with the step's
    ``reference_trace`` (exact updates in order, islands with members in
    order and geometry): only the reference algorithm is expected to pass it.
    """
    name = str(scenario.get("name", "?"))
    config = {**(default_config or {}), **scenario.get("config", {})}
    result = ScenarioResult(name)
    engine: Engine | None = None
    last: list[IslandChange] | None = None
    now = 0

    def make() -> Engine:
        return engine_factory(
            join_distance=float(config.get("join_distance", 64)),
            leave_distance=float(config.get("leave_distance", 80)),
            max_island_size=int(config.get("max_island_size", 100)),
            id_prefix=str(config.get("island_id_prefix", "I")),
        )

    def flush() -> list[IslandChange]:
        assert engine is not None
        changes = engine.flush()
        result.flushes.append(changes)
        trace = step.get("reference_trace") if step is not None else None
        if check_trace and trace is not None:
            _compare_trace(engine, changes, trace, fail)
        return changes

    for index, original in enumerate(scenario["steps"]):
        step: Mapping[str, Any] | None = original
        if overrides is not None and index in overrides:
            step = overrides[index]
        if step is None or step["op"] in _SKIPPED_OPS:
            result.steps_skipped += 1
            continue
        op = step["op"]

        def fail(detail: str, _index: int = index, _step: Mapping[str, Any] = step) -> NoReturn:
            raise ScenarioFailure(name, _index, _step, detail)

        if op == "configure":
            engine = make()
            last = None
            result.steps_run += 1
            continue
        if engine is None:
            engine = make()  # tolerate files that start without configure
        now += 1000
        if op == "move":
            for ch in step["changes"]:
                pref: str | Unset | None = UNSET
                if "preferred_island" in ch:
                    pref = ch["preferred_island"]
                x, y, z = (float(v) for v in ch["position"])
                engine.update(str(ch["peer"]), (x, y, z), pref, now_ms=now)
            last = flush()
        elif op == "disconnect":
            for peer in step["peers"]:
                engine.disconnect(str(peer))
            last = flush()
            if step.get("expect_leave_update_for_each"):
                left = {c.peer_id for c in last if c.kind == "left"}
                missing = [p for p in step["peers"] if p not in left]
                if missing:
                    fail(f"no leave update for {missing}; got {last}")
        elif op == "flush":
            last = flush()
        elif op == "submit_then_disconnect_then_flush":
            x, y, z = (float(v) for v in step["position"])
            engine.update(str(step["peer"]), (x, y, z), now_ms=now)
            engine.disconnect(str(step["peer"]))
            last = flush()
        elif op == "expect_island_count":
            if engine.island_count != step["count"]:
                fail(f"expected {step['count']} islands, got {_fmt(_groups(engine))}")
        elif op == "expect_island_with":
            want = frozenset(step["peers"])
            if want not in _groups(engine):
                fail(f"no island equal to {sorted(want)}; islands {_fmt(_groups(engine))}")
        elif op == "expect_islands_exactly":
            want_groups = sorted(sorted(g) for g in step["islands"])
            got = sorted(sorted(g) for g in _groups(engine))
            if want_groups != got:
                fail(f"expected partition {want_groups}, got {got}")
        elif op == "expect_island":
            match = [i for i in engine.islands() if i.id == step["id"]]
            if not match:
                fail(f"island {step['id']} does not exist; islands {_fmt(_groups(engine))}")
            elif set(match[0].peers) != set(step["peers"]):
                fail(f"island {step['id']} has {sorted(match[0].peers)}")
        elif op in ("expect_update", "expect_no_update", "expect_update_count"):
            if last is None:
                fail("no flush has run yet")
                continue
            if op == "expect_update_count":
                if len(last) != step["count"]:
                    fail(f"expected {step['count']} updates, got {last}")
                result.steps_run += 1
                continue
            entries = [c for c in last if c.peer_id == step["peer"]]
            if op == "expect_no_update":
                if entries:
                    fail(f"unexpected update {entries[0]}")
            else:
                kind = {"change_to": "changed", "leave": "left"}[step["action"]]
                if not entries:
                    fail(f"no update for {step['peer']} in {last}")
                else:
                    got_change = entries[0]
                    if got_change.kind != kind:
                        fail(f"expected {kind}, got {got_change}")
                    if "island" in step and got_change.island_id != step["island"]:
                        fail(f"expected island {step['island']}, got {got_change}")
                    if "from_island" in step and got_change.from_island_id != step["from_island"]:
                        fail(f"expected from {step['from_island']}, got {got_change}")
        elif op == "expect_geometry":
            match = [i for i in engine.islands() if i.id == step["island"]]
            tol = float(step.get("tolerance", 1e-6))
            if not match:
                fail(f"island {step['island']} does not exist")
            else:
                isl = match[0]
                center_ok = all(
                    math.isclose(a, float(b), abs_tol=tol)
                    for a, b in zip(isl.center, step["center"], strict=True)
                )
                if not center_ok or not math.isclose(isl.radius, step["radius"], abs_tol=tol):
                    fail(f"geometry {isl.center} r={isl.radius}")
        elif op == "expect_peer_position":
            snap = engine.snapshot()
            rows = [i for i, p in enumerate(snap.peer_ids) if p == step["peer"]]
            if not rows:
                fail(f"peer {step['peer']} unknown")
            else:
                got_pos = [float(v) for v in snap.positions[rows[0]]]
                want_pos = [float(v) for v in step["position"]]
                if got_pos != want_pos:
                    fail(f"position {got_pos} != {want_pos}")
        elif op == "expect_transport_calls":
            fail("expect_transport_calls needs a transport hook (not wired in this runner)")
        elif op.startswith("legacy_"):
            fail(f"legacy-only op {op} does not apply to this engine")
        else:
            fail(f"unknown op {op}")
        result.steps_run += 1
    result.engine = engine
    return result
