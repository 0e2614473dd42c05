"""Smoke test: bench/bench_nats.py still runs end to end (tiny sizes; figures not checked)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow  # a bench smoke run: make test-fast skips it

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_nats.py"


def bench_json(*args: str, script: str = "bench_nats.py", timeout: float = 120) -> Any:
    """The JSON a bench script prints when run with ``args`` (a non-zero exit fails)."""
    out = subprocess.run(
        [sys.executable, str(BENCH.parent / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )
    return json.loads(out.stdout)


def test_bench_nats_smoke() -> None:
    data = bench_json("--quick", "--subjects", "v3")
    assert data["bench"] == "nats" and data["peers"] == 200
    assert data["nats"]["dropped"] == 0
    for part in ("nats", "in_process"):
        assert data[part]["heartbeats_per_s"] > 0 and data[part]["flush_latency_ms"] > 0


def test_bench_nats_load_processes_smoke() -> None:
    """--ingest and --scale: separate load processes, the core in the bench process."""
    out = bench_json(
        *("--ingest", "--peers", "400", "--ingest-repeat", "2"),
        *("--repeats", "1", "--subjects", "native,workers"),
    )
    data = out["ingest"]
    for scheme in ("native", "workers"):
        assert data[scheme]["heartbeats"] == 800 and data[scheme]["dropped"] == 0
        assert data[scheme]["heartbeats_per_s"] > 0
    # the stock server: its subject cache in use, Go's default GOGC; workers: one message
    # per heartbeat, 200 subjects per load connection, each matched in full once at least
    assert out["nats_conf"] is None and out["nats_server_gogc"] is None
    assert data["workers"]["nats_server_cache_entries"] > 0
    assert 0.25 <= data["workers"]["nats_server_matches_per_heartbeat"] <= 1.0
    for scheme in ("native", "workers"):
        assert data[scheme]["cpu_us_per_heartbeat"] > 0 and data[scheme]["cores_busy"] > 0
        assert len(data[scheme]["runs_cores_busy"]) == 1
    s = bench_json(
        *("--scale", "--peers", "600", "--seconds", "3"), *("--ramp-s", "1", "--flush-s", "0.5")
    )["scale"]
    assert s["engine_peers"] == 600 and s["peers_with_island"] == 600
    assert s["heartbeats_ingested"] == s["heartbeats_sent"] > 600
    assert s["island_changed_received"] == s["island_changed_published"] >= 600


def test_bench_nats_ingest_with_the_operator_settings() -> None:
    """--nats-conf / --nats-gogc start the private server with examples/nats-server.conf
    (docs/operations.md, "The NATS server") and GOGC: both compatibility schemes ingest
    every heartbeat through it, and the server ran with them (no subject cache, GOGC in
    its environment)."""
    conf = BENCH.parents[1] / "examples" / "nats-server.conf"
    out = bench_json(
        *("--ingest", "--peers", "400", "--ingest-repeat", "2"),
        *("--repeats", "1", "--subjects", "workers,v3"),
        *("--nats-conf", str(conf), "--nats-gogc", "400"),
    )
    assert out["nats_conf"] == conf.read_text() and "no_sublist_cache: true" in out["nats_conf"]
    assert out["nats_gogc"] == out["nats_server_gogc"] == "400"
    for scheme in ("workers", "v3"):
        data = out["ingest"][scheme]
        assert data["heartbeats"] == 800 and data["dropped"] == 0
        assert data["nats_server_cache_entries"] == 0  # no subject cache
        assert 0.25 <= data["nats_server_matches_per_heartbeat"] <= 1.0


@pytest.mark.parametrize("transport", ["fixed", "ws-room"])
def test_bench_nats_tick_python_and_c_smoke(transport: str) -> None:
    """--tick python (the Python tick) and c (the C++ tick, native scheme): both deliver
    every island_changed, publish as many messages (and bytes) and drop none."""
    runs = {}
    for tick in ("python", "c"):
        runs[tick] = bench_json(
            *("--quick", "--subjects", "native"), *("--tick", tick, "--transport", transport)
        )
        assert runs[tick]["tick"] == tick and runs[tick]["transport"] == transport
        assert runs[tick]["nats"]["dropped"] == 0
        assert runs[tick]["nats"]["flush_latency_ms"] > 0
    published = {t: r["nats"]["nats_messages_published"] for t, r in runs.items()}
    assert published["python"] == published["c"] > 0
    mib = {t: r["nats"]["tick_published_mib"] for t, r in runs.items()}
    assert mib["python"] == mib["c"]


def test_bench_nats_deliver_smoke() -> None:
    """--deliver: real WebSocket sessions (the C++ load client), both connector relays; every
    island_changed the core published reached its session exactly once."""
    data = bench_json(
        *("--deliver", "--peers", "60", "--repeats", "1"),
        *("--subjects", "native,workers", "--relay", "c,python"),
        timeout=900,
    )
    assert data["mode"] == "deliver" and data["peers"] == 60
    for key in ("native_c", "native_python", "workers_c", "workers_python"):
        (r,) = data[key]["rounds"]
        assert r["island_changed_published"] == 60, key
        assert r["island_changed_received"] == 60 and r["sessions_with_island"] == 60, key
        assert not r["timed_out"] and r["delivered_ms"] > 0, key
    c = data["native_c"]["rounds"][0]
    assert c["relay_last_receive_ms"] is not None and c["server_handed_ms"] is not None
    assert data["native_python"]["rounds"][0]["server_handed_ms"] is None


def test_bench_nats_deliver_big_flush_written_by_two_threads() -> None:
    """--deliver with 2,000 sessions: the server writes the tick's big flush from two threads
    (flushes_split) and every session still gets its island_changed exactly once, whole (the
    load client parses each frame)."""
    out = bench_json(
        *("--deliver", "--peers", "2000", "--repeats", "1"),
        *("--subjects", "native", "--relay", "c"),
        timeout=900,
    )
    (r,) = out["native_c"]["rounds"]
    assert r["flushes_split"] >= 1
    assert r["island_changed_published"] == 2000
    assert r["island_changed_received"] == 2000 and r["sessions_with_island"] == 2000
    assert not r["timed_out"]


def test_nats_ingest_instructions_publisher_side_smoke() -> None:
    """bench/nats_ingest_instructions.py --side publisher: a load process under callgrind
    publishes every heartbeat, the core ingests them all, a count per heartbeat comes out."""
    data = bench_json(
        *("--side", "publisher", "--subjects", "v3", "--peers", "200", "--repeat", "2"),
        script="nats_ingest_instructions.py",
        timeout=300,
    )
    assert data["side"] == "publisher" and data["scheme"] == "v3"
    assert data["published"] == data["ingested_by_the_core"] == 400
    assert data["instructions_per_heartbeat"] > 0


def test_nats_subscription_shapes_smoke() -> None:
    """bench/nats_subscription_shapes.py: every shape's reader gets every heartbeat and a
    server CPU figure comes out for each."""
    data = bench_json(
        *("--peers", "200", "--repeat", "2", "--rounds", "1"), script="nats_subscription_shapes.py"
    )["nats_server_us_per_heartbeat"]
    assert set(data) == {
        "peer.*.*",
        "peer.*.heartbeat|connect|disconnect",
        "peer.>",
        "peer.*.* queue group",
    }
    assert all(v["median"] > 0 and len(v["runs"]) == 1 for v in data.values())
