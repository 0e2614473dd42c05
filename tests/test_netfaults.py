"""Network faults between a realm and its NATS, on the machine's own network stack.

``dclcomms realm --nats`` runs in one network namespace, ``nats-server`` in another, and
everything between them crosses a router namespace that impairs it
(:mod:`tests.helpers.netfaults`: ``tc netem`` where the kernel has it, else a TUN
impairment stage; the mode that ran is printed and recorded as the test's ``mode``
property). Twelve clients (real keys, real WebSocket sessions from the host) in three
groups heartbeat at 2 Hz while:

1. the link is clean: three islands;
2. 200 ms more each way and 5 % of packets lost each way: group C walks over to group A
   (one island of eight, and B);
3. a partition (every packet dropped, silently) for 6 s while group C walks back;
4. the heal: three islands again.

Checked: every client session survives (no close, the realm process alive); the islands
converge after the heal; and for every peer, the ``island_changed`` messages its client
received are exactly those the core published on NATS (seen by an observer on an
unimpaired link), each continuing the last (``fromIslandId`` = the previous island), none
lost, none twice.

Skips, with the reason, where network namespaces cannot be made (not root, no iproute2,
no ``ip netns``, neither netem nor TUN).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dclcomms.nats.pubsub import NatsPubSub
from tests.helpers.common import free_port
from tests.helpers.nats_fixtures import NATS_SERVER
from tests.helpers.netfaults import FaultNet, fault_net, sweep_stale, unavailable
from tests.helpers.realm_client import ArchipelagoClient, Closed

HEARTBEAT_S = 0.5
GROUPS = {"A": (0.0, 0.0), "B": (600.0, 0.0), "C": (0.0, 1200.0)}
C_NEAR_A = (30.0, 20.0)


@pytest.fixture
def net() -> Iterator[FaultNet]:
    why = unavailable()
    if why is not None:
        pytest.skip(f"network fault tests need network namespaces: {why}")
    with fault_net(seed=17) as n:
        yield n


class Peer:
    """A client: heartbeats at its target position, records every island_changed."""

    def __init__(self, seed: int, group: str) -> None:
        self.client = ArchipelagoClient(seed)
        self.address = self.client.address
        self.group = group
        self.slot = seed % 4
        self.target = (0.0, 0.0)
        self.changes: list[dict[str, Any]] = []
        self.closed: Closed | None = None
        self.tasks: list[asyncio.Task[None]] = []

    def place(self, origin: tuple[float, float]) -> None:
        self.target = (origin[0] + 4.0 * self.slot, origin[1])

    async def start(self, url: str) -> None:
        await self.client.connect(url)
        assert await self.client.handshake() == self.address
        self.tasks = [asyncio.create_task(self._beat()), asyncio.create_task(self._read())]

    async def _beat(self) -> None:
        while self.closed is None:
            await self.client.heartbeat(self.target[0], 0.0, self.target[1])
            await asyncio.sleep(HEARTBEAT_S)

    async def _read(self) -> None:
        while True:
            try:
                p = await self.client.recv(timeout=3600)
            except Closed as e:
                self.closed = e
                return
            if "islandChanged" in p:
                self.changes.append(p["islandChanged"])

    @property
    def island(self) -> str | None:
        return self.changes[-1]["islandId"] if self.changes else None

    async def stop(self) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.client.close()


def _from(change: dict[str, Any]) -> str | None:
    return change.get("fromIslandId") or None


async def converged(peers: list[Peer], groups: list[set[str]], what: str, timeout: float) -> float:
    """Until the clients' latest islands are exactly ``groups`` (sets of group names)."""
    t0 = time.monotonic()
    want = sorted(sorted(g) for g in groups)
    while True:
        by_island: dict[str | None, set[str]] = {}
        for p in peers:
            by_island.setdefault(p.island, set()).add(p.group)
        per_island = {i: {p.address for p in peers if p.island == i} for i in by_island}
        whole = all(
            per_island[i] == {p.address for p in peers if p.group in g}
            for i, g in by_island.items()
        )
        got = sorted(sorted(g) for g in by_island.values())
        if None not in by_island and whole and got == want:
            return time.monotonic() - t0
        for p in peers:
            assert p.closed is None, f"{p.address} closed {p.closed} while waiting for {what}"
        assert time.monotonic() - t0 < timeout, (
            f"no convergence to {want} ({what}) within {timeout}s: "
            f"{ {i: sorted(g) for i, g in by_island.items()} }"
        )
        await asyncio.sleep(0.1)


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=2) as r:
        return r.read()


def _wait_http(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            _get(url)
            return
        except OSError:
            assert time.monotonic() < deadline, f"{url} never answered"
            time.sleep(0.1)


def test_skips_with_the_reason_where_namespaces_cannot_be_made(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    why = unavailable()
    assert why is not None and "need root" in why


def test_namespaces_of_a_killed_run_are_swept() -> None:
    why = unavailable()
    if why is not None:
        pytest.skip(f"network fault tests need network namespaces: {why}")
    dead = next(p for p in range(4_000_000, 3_000_000, -1) if not Path(f"/proc/{p}").exists())
    name = f"nf{dead}-rtr"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        assert name in sweep_stale()
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
    assert (
        name not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    )


@pytest.mark.slow
def test_latency_loss_partition_and_heal(
    net: FaultNet, tmp_path: Path, record_property: Any
) -> None:
    record_property("mode", net.mode)
    print(f"\nnetwork impairment: {net.mode}")
    port, http_port = free_port(), free_port()
    nats_log = open(tmp_path / "nats.log", "wb")  # noqa: SIM115 - closed below
    realm_log = open(tmp_path / "realm.log", "wb")  # noqa: SIM115
    try:
        net.run(
            net.nats_ns,
            [NATS_SERVER, "-a", "0.0.0.0", "-p", str(port), "-m", str(http_port)],
            stdout=nats_log,
            stderr=subprocess.STDOUT,
        )
        _wait_http(f"http://{net.nats_host_ip}:{http_port}/healthz")
        realm = net.run(
            net.realm_ns,
            [
                *[sys.executable, "-m", "dclcomms", "realm", "--host", "0.0.0.0", "--port", "0"],
                *["--nats", f"nats://{net.nats_ip}:{port}", "--flush-interval-s", "0.25"],
                *["--log-level", "WARNING"],
            ],
            stdout=subprocess.PIPE,
            stderr=realm_log,
            text=True,
            env=dict(os.environ, LOG_FORMAT="json"),
        )
        assert realm.stdout is not None
        line = realm.stdout.readline()
        assert line.startswith("dclcomms realm running (native subjects"), (
            line,
            (tmp_path / "realm.log").read_text(),
        )
        realm_port = line.rsplit(":", 1)[1].strip()
        realm_url = f"ws://{net.realm_host_ip}:{realm_port}"
        timings = asyncio.run(
            asyncio.wait_for(
                scenario(net, realm_url, f"nats://{net.nats_host_ip}:{port}", realm), 240
            )
        )
        # the realm reports itself healthy again: its bus connected, its core ticking
        status = json.loads(_get(f"http://{net.realm_host_ip}:{realm_port}/status"))
        assert status["healthy"] is True and status["busConnected"] is True, status
        print("phase wall times (s):", timings)
        for k, v in timings.items():
            record_property(k, round(v, 2))
        assert realm.poll() is None, "the realm died"
    finally:
        net.down()
        nats_log.close()
        realm_log.close()


async def scenario(
    net: FaultNet, realm_url: str, nats_url: str, realm: subprocess.Popen[str]
) -> dict[str, float]:
    timings: dict[str, float] = {}
    observer = await NatsPubSub.connect([nats_url], subjects="native", name="observer")
    published: dict[str, list[tuple[str, str | None]]] = {}

    def on_changed(subject: str, msg: Any) -> None:
        published.setdefault(subject.split(".")[2], []).append(
            (msg.island_id, msg.from_island_id or None)
        )

    observer.subscribe("engine.peer.*.island_changed", on_changed)
    await observer.ready()
    peers = [Peer(9100 + i, "ABC"[i // 4]) for i in range(12)]
    try:
        for p in peers:
            p.place(GROUPS[p.group])
            await p.start(realm_url)
        timings["clean"] = await converged(peers, [{"A"}, {"B"}, {"C"}], "clean link", 30)

        net.impair(delay_ms=200, loss=0.05)
        for p in peers:
            if p.group == "C":
                p.place(C_NEAR_A)
        timings["impaired_merge"] = await converged(
            peers, [{"A", "C"}, {"B"}], "200 ms + 5 % loss", 60
        )
        impaired = net.stats()

        net.partition()
        for p in peers:
            if p.group == "C":
                p.place(GROUPS["C"])
        await asyncio.sleep(6.0)
        for p in peers:
            assert p.closed is None, f"session of {p.address} lost in the partition: {p.closed}"
        partitioned = net.stats()
        t_heal = time.monotonic()
        net.heal()
        timings["heal_split"] = await converged(peers, [{"A"}, {"B"}, {"C"}], "after the heal", 60)
        # let anything still in flight land, then compare with what the core published
        await asyncio.sleep(2.0)
        timings["partition_to_converged"] = time.monotonic() - t_heal + 6.0
    finally:
        for p in peers:
            await p.stop()
        await observer.aclose()

    assert realm.poll() is None, "the realm died"
    for p in peers:
        assert p.closed is None, f"{p.address}: session closed {p.closed}"
        got = [(c["islandId"], _from(c)) for c in p.changes]
        assert got == published.get(p.address, []), (p.address, got, published.get(p.address))
        assert _from(p.changes[0]) is None, p.changes[0]
        for prev, cur in zip(p.changes, p.changes[1:], strict=False):
            assert _from(cur) == prev["islandId"], ("a lost island_changed", p.address, got)
            assert cur != prev, ("an island_changed twice", p.address, got)
    # the impairment really acted: packets dropped by loss and by the partition
    if net.mode == "tun":
        assert impaired["dropped_loss"] > 0, impaired
        assert partitioned["dropped_partition"] > 0, partitioned
    else:
        assert impaired["dropped"] > 0 and partitioned["dropped"] > impaired["dropped"]
    print("impairment counters:", impaired, partitioned)
    return timings
