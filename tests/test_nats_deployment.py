"""Acceptance: a whole scaled-out realm as separate processes on one NATS server.

2 connectors + 1 core + stats + 2 rooms nodes, each a real ``dclcomms`` process,
under both subject schemes. Real clients (eth-account keys) on both connectors:
islands are consistent across connectors, each island lives on its own rooms node
(the core balances them from the nodes' announcements) and its connection string
admits the island's members there, stats sees everyone, the core's /status
reports both nodes, and /bus sessions on the two connectors exchange island chat
through NATS on the scheme's application-data subject.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from tests.helpers.common import free_port
from tests.helpers.nats_fixtures import (
    NatsServer,
    first_line,
    nats_server,  # noqa: F401 - fixture
    spawn,
    stop_all,
)
from tests.helpers.realm_client import ArchipelagoClient, BusClient, RoomClient, assigned

SECRET = "deployment-ws-room-secret-0123456789"
BASE = ["--host", "127.0.0.1", "--port", "0", "--log-level", "WARNING"]
REALM = [*BASE, "--flush-interval-s", "0.1", "--ws-room-secret", SECRET]


async def get_json(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url) as r:
        assert r.status == 200, await r.text()
        return await r.json()


async def until(
    check: Callable[[], Awaitable[Any]], what: str, timeout: float = 15.0, pause: float = 0.05
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(pause)


def node_base(conn_str: str) -> str:
    assert conn_str.startswith("ws-room:ws://127.0.0.1:"), conn_str
    return conn_str[len("ws-room:") :].split("/rooms/")[0]


async def bus_across_connectors(
    connectors: list[str], nats_url: str, subjects: str, island: str, seeds: tuple[int, int]
) -> None:
    """/bus sessions on different connectors talk through NATS, on the scheme's subject."""
    import nats

    wire_prefix = "client-proto.peer" if subjects == "v3" else "client.peer"
    nc = await nats.connect(nats_url)
    seen: list[Any] = []

    async def on_wire(msg: Any) -> None:
        seen.append(msg)

    await nc.subscribe(f"{wire_prefix}.*.island.{island}.chat", cb=on_wire)
    await nc.flush()
    x, y = BusClient(seeds[0]), BusClient(seeds[1])
    await x.connect(connectors[0].replace("http://", "ws://"))
    await y.connect(connectors[1].replace("http://", "ws://"))
    await x.handshake()
    await y.handshake()
    topic = f"island.{island}.chat"
    await y.subscribe(topic)  # "subscribed": y's connector's NATS interest is on the server
    await x.publish(topic, b"hello from the other connector")
    got = await y.message(topic, sender=x.address, timeout=5)
    assert got["payload"] == "aGVsbG8gZnJvbSB0aGUgb3RoZXIgY29ubmVjdG9y"

    async def wire_seen() -> int:
        return len(seen)

    await until(wire_seen, "the raw NATS subscriber")
    assert seen[0].subject == f"{wire_prefix}.{x.address}.{topic}"
    assert seen[0].data == b"hello from the other connector"
    await x.close()
    await y.close()
    await nc.close()


async def scenario(
    core: str,
    stats: str,
    connectors: list[str],
    nodes: dict[str, str],
    nats_url: str,
    subjects: str,
) -> None:
    async with aiohttp.ClientSession() as http:

        async def both_nodes_live() -> bool:
            status = await get_json(http, core + "/status")
            return {n["nodeId"] for n in status.get("transportNodes", [])} == set(nodes)

        await until(both_nodes_live, "the core to hear both rooms nodes")

        # two groups far apart, each spanning both connectors
        clients = [ArchipelagoClient(800 + i) for i in range(4)]
        for i, c in enumerate(clients):
            await c.connect(connectors[i % 2].replace("http://", "ws://"))
            assert await c.handshake() == c.address
        a1, b1, a2, b2 = clients  # a* on connector 0, b* on connector 1
        first = await assigned(a1, 0.0, 0.0)
        second = await assigned(a2, 900.0, 900.0)
        joined1 = await assigned(b1, 8.0, 8.0)
        joined2 = await assigned(b2, 905.0, 905.0)
        # consistent across connectors: same island ids, same member maps
        assert joined1["islandId"] == first["islandId"]
        assert joined2["islandId"] == second["islandId"]
        assert first["islandId"] != second["islandId"]
        assert set(joined1["peers"]) == {a1.address, b1.address}
        assert set(joined2["peers"]) == {a2.address, b2.address}
        await a1.expect("joinIsland", peerId=b1.address)
        await a2.expect("joinIsland", peerId=b2.address)

        # balanced: one island per rooms node, and both members get in
        used = {node_base(joined1["connStr"]), node_base(joined2["connStr"])}
        assert used == set(nodes.values())
        for (x, cx), (y, cy) in (((a1, first), (b1, joined1)), ((a2, second), (b2, joined2))):
            rx, ry = RoomClient(x.wallet), RoomClient(y.wallet)
            await rx.join(cx["connStr"])  # each member with the token minted for it
            welcome = await ry.join(cy["connStr"])
            assert list(welcome["peerIdentities"].values()) == [x.address]
            await rx.close()
            await ry.close()

        # stats sees everyone, with both islands
        want = {c.address for c in clients}

        async def stats_complete() -> Any:
            peers = await get_json(http, stats + "/peers")
            islands = await get_json(http, stats + "/islands")
            got = {p["address"] for p in peers["peers"]}
            return got == want and len(islands["islands"]) == 2 and islands

        islands = await until(stats_complete, "stats to see all four peers and both islands")
        members = {i["id"]: {p["address"] for p in i["peers"]} for i in islands["islands"]}
        assert members == {
            first["islandId"]: {a1.address, b1.address},
            second["islandId"]: {a2.address, b2.address},
        }
        status = await get_json(http, core + "/status")
        assert status["peers"] == 4 and status["islands"] == 2
        assert sorted(n["islands"] for n in status["transportNodes"]) == [1, 1]
        # application data between island members on different connectors
        await bus_across_connectors(connectors, nats_url, subjects, first["islandId"], (800, 801))
        for c in clients:
            await c.close()


@pytest.mark.parametrize("subjects", ["native", "workers", "v3"])
def test_two_connectors_core_stats_and_two_rooms_nodes(
    nats_server: NatsServer,  # noqa: F811
    subjects: str,
) -> None:
    nats = ["--nats", nats_server.url, "--subjects", subjects]
    node_ports = {"rooms-a": free_port(), "rooms-b": free_port()}
    procs: list[subprocess.Popen[str]] = []
    try:
        for node, port in node_ports.items():
            procs.append(
                spawn(
                    "rooms",
                    *["--port", str(port), "--ws-room-secret", SECRET, "--ws-room-require-token"],
                    *["--nats", nats_server.url, "--node-id", node],
                    *[
                        "--public-url",
                        f"ws://127.0.0.1:{port}",
                        "--transport-node-interval-s",
                        "0.2",
                    ],
                )
            )
        procs.append(
            spawn(
                "core",
                *REALM,
                *nats,
                *["--policy", "dclcomms.nats.nodes:NodeBalancedWsRooms"],
                *["--transport-node-interval-s", "0.2", "--transport-node-missed", "5"],
            )
        )
        procs.append(spawn("stats", *BASE, *nats))
        procs += [spawn("connector", *REALM, *nats) for _ in range(2)]
        for p in procs[:2]:
            first_line(p, "dclcomms rooms")
        core = first_line(procs[2], f"dclcomms core running ({subjects} subjects").split()[-1]
        stats = first_line(procs[3], "dclcomms stats running").split()[-1]
        conns = [first_line(p, "dclcomms connector running").split()[-1] for p in procs[4:]]
        nodes = {n: f"ws://127.0.0.1:{port}" for n, port in node_ports.items()}
        asyncio.run(
            asyncio.wait_for(scenario(core, stats, conns, nodes, nats_server.url, subjects), 60)
        )
    finally:
        codes = stop_all(procs)
    assert codes == [0] * 6, [p.stderr.read() if p.stderr else "" for p in procs]


def test_core_process_killed_and_restarted(nats_server: NatsServer) -> None:  # noqa: F811
    """SIGKILL (no goodbye on NATS): a new core process re-assigns every peer from the
    heartbeats the connectors keep publishing (the bound of 2 flushes is measured tick by
    tick in test_nats_realm.py::test_core_restart_rebuilds_state_from_heartbeats)."""
    nats = ["--nats", nats_server.url]
    procs = [spawn("connector", *REALM, *nats), spawn("core", *REALM, *nats)]
    try:
        conn = first_line(procs[0], "dclcomms connector running").split()[-1]
        first_line(procs[1], "dclcomms core running")

        async def body() -> None:
            clients = [ArchipelagoClient(861), ArchipelagoClient(862)]
            for c in clients:
                await c.connect(conn.replace("http://", "ws://"))
                await c.handshake()
            before = [await assigned(c, 4.0 * i, 0.0) for i, c in enumerate(clients)]
            assert before[0]["islandId"] == before[1]["islandId"]
            procs[1].kill()
            procs[1].wait()
            procs.append(spawn("core", *REALM, *nats))
            core = await asyncio.to_thread(first_line, procs[-1], "dclcomms core running")
            core_url = core.split()[-1]
            # the clients stayed connected; their next heartbeats reach the new core
            after = [await assigned(c, 4.0 * i, 0.0) for i, c in enumerate(clients)]
            assert after[0]["islandId"] == after[1]["islandId"]
            assert set(after[1]["peers"]) == {c.address for c in clients}
            async with aiohttp.ClientSession() as http:
                status = await get_json(http, core_url + "/status")
                assert status["peers"] == 2 and status["islands"] == 1
                async with http.get(core_url + "/metrics") as r:
                    metrics = await r.text()
            # each peer was assigned exactly once by the new core: no state to reconcile
            assert 'dcl_archipelago_connection_strings_total{transport="ws-room"} 2' in metrics
            for c in clients:
                await c.close()

        asyncio.run(asyncio.wait_for(body(), 60))
    finally:
        codes = stop_all(procs)
    assert codes[0] == 0 and codes[1] == -9 and codes[2] == 0
