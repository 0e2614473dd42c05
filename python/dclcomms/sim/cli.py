"""``dclcomms sim``: run a simulation from the command line and print a JSON summary.

    dclcomms sim --peers 100000 --seconds 120 --policy threshold --threshold 20
    dclcomms sim --world crowd --peers 2000 --csv flushes.csv
    dclcomms sim --world crowd --peers 2000 --save crowd.html   # watch it on the live map

Worlds: ``waypoint`` (parties of 4 roaming Genesis City with sessions), ``commuters``
(five plazas), ``crowd`` (an event at Genesis Plaza amid 80 % roaming peers) and
``mixed`` (70 % waypoint, 30 % commuters). Exit status 2 on invalid parameters.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dclcomms.errors import ConfigError
from dclcomms.sim.mobility import Commuters, Composite, CrowdEvent, MobilityModel, RandomWaypoint
from dclcomms.sim.policy import Fixed, Hysteresis, SimPolicy, SizeThreshold
from dclcomms.sim.simulation import Simulation

WORLDS = ("mixed", "waypoint", "commuters", "crowd")
POLICIES = ("none", "threshold", "hysteresis", "livekit")


def build_world(name: str, peers: int) -> MobilityModel:
    """One of the named worlds with ``peers`` slots."""
    if peers < 1:
        raise ConfigError(f"--peers must be >= 1, got {peers}", code="invalid_parameter")
    if name == "waypoint":
        return RandomWaypoint(peers, group_size=4, session_s=1800.0, offline_s=600.0)
    if name == "commuters":
        return Commuters(peers)
    if name == "crowd":
        n_crowd = max(peers // 5, 1)
        return Composite(
            [
                RandomWaypoint(peers - n_crowd, group_size=3),
                CrowdEvent(n_crowd, arrival_rate=max(n_crowd / 120.0, 0.1), gather_s=120.0),
            ]
        )
    if name == "mixed":
        n_walk = int(peers * 0.7)
        return Composite(
            [
                RandomWaypoint(n_walk, group_size=4, session_s=1800.0, offline_s=600.0),
                Commuters(peers - n_walk),
            ]
        )
    raise ConfigError(f"unknown world {name!r}; one of {WORLDS}", code="invalid_parameter")


def build_policy(name: str, threshold: int) -> SimPolicy | None:
    if name == "none":
        return None
    if name == "threshold":
        return SizeThreshold(threshold)
    if name == "hysteresis":
        return Hysteresis(up_at=threshold, down_at=max(threshold * 3 // 5, 1))
    if name == "livekit":
        return Fixed("livekit")
    raise ConfigError(f"unknown policy {name!r}; one of {POLICIES}", code="invalid_parameter")


def summary(sim: Simulation, wall_s: float) -> dict[str, Any]:
    f = sim.result.flushes
    return {
        "simulated_s": sim.t_s,
        "flushes": len(f),
        "wall_s": round(wall_s, 3),
        "peers_last": int(f["peers"].iloc[-1]) if len(f) else 0,
        "islands_last": int(f["islands"].iloc[-1]) if len(f) else 0,
        "islands_mean": float(f["islands"].mean()) if len(f) else 0.0,
        "p90_size_mean": float(f["p90_size"].mean()) if len(f) else 0.0,
        "churn_mean": float(f["churn"].mean()) if len(f) else 0.0,
        "split_fraction_mean": float(f["split_fraction"].mean()) if len(f) else 0.0,
        "transport_switches": int(f["transport_switches"].sum()) if len(f) else 0,
        "total_cost": sim.result.total_cost,
        "currency": sim.cost_model.currency,
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="dclcomms sim",
        description="Run the offline island simulator and print a JSON summary.",
    )
    ap.add_argument("--world", choices=WORLDS, default="mixed")
    ap.add_argument("--peers", type=int, default=10_000)
    ap.add_argument("--seconds", type=float, default=60.0, help="simulated seconds")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--join-distance", type=float, default=64.0)
    ap.add_argument("--leave-distance", type=float, default=80.0)
    ap.add_argument("--max-island-size", type=int, default=100)
    ap.add_argument("--policy", choices=POLICIES, default="threshold")
    ap.add_argument("--threshold", type=int, default=20, help="island size for LiveKit")
    ap.add_argument("--heartbeat", type=float, default=1.0, help="heartbeat period, s")
    ap.add_argument("--flush", type=float, default=2.0, help="flush period, s")
    ap.add_argument("--csv", help="also write the per-flush table to this CSV file")
    ap.add_argument(
        "--save",
        metavar="FILE",
        help="also save the run for the live map: FILE.html is a self-contained page that "
        "replays it; any other name gets JSON lines (open them on any /map page)",
    )
    ap.add_argument("--progress", action=argparse.BooleanOptionalAction, default=False)
    a = ap.parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        if a.seconds <= 0:
            raise ConfigError("--seconds must be > 0", code="invalid_parameter")
        if a.save and not Path(a.save).resolve().parent.is_dir():
            raise ConfigError(f"--save: no directory for {a.save}", code="invalid_parameter")
        sim = Simulation(
            build_world(a.world, a.peers),
            seed=a.seed,
            join_distance=a.join_distance,
            leave_distance=a.leave_distance,
            max_island_size=a.max_island_size,
            policy=build_policy(a.policy, a.threshold),
            heartbeat_s=a.heartbeat,
            flush_s=a.flush,
        )
        t0 = time.perf_counter()
        if a.save:
            from dclcomms.livemap.record import SimMapRecorder

            recorder = SimMapRecorder(sim)
            end_ms = round(a.seconds * 1000)
            while sim.now_ms + sim.flush_ms <= end_ms:  # flush by flush: one frame each
                sim.run(sim.flush_ms / 1000, progress=False)
                recorder.capture()
            if sim.now_ms < end_ms:
                sim.run((end_ms - sim.now_ms) / 1000, progress=False)
        else:
            sim.run(a.seconds, progress=a.progress)
        wall = time.perf_counter() - t0
    except ConfigError as e:
        print(f"dclcomms sim: error [{e.code}]: {e}", file=sys.stderr)
        return 2
    if a.csv:
        sim.result.flushes.to_csv(a.csv, index=False)
    if a.save:
        try:
            recorder.save(a.save, world=a.world, peers=a.peers, seed=a.seed, policy=a.policy)
        except OSError as e:
            print(f"dclcomms sim: error [save_failed]: {e}", file=sys.stderr)
            return 1
    print(json.dumps(summary(sim, wall), indent=2))
    return 0
