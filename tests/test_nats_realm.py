"""Acceptance: real clients through 2 connectors + 1 core + stats, all talking over NATS."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import signal
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from dclcomms.archipelago.core import TickReport
from dclcomms.config import RealmConfig
from dclcomms.nats.processes import CoreService, StatsService
from dclcomms.nats.pubsub import NatsPubSub
from dclcomms.realm import Realm
from tests.helpers.common import realm_config, run
from tests.helpers.nats_fixtures import NatsCluster, NatsServer, nats_cluster, nats_server  # noqa: F401 - fixtures
from tests.helpers.pubsub import addr
from tests.helpers.realm_client import ArchipelagoClient, BusClient, assigned, eventually

FLUSH = 0.2
LIVEKIT = {
    "livekit_host": "livekit.example.org",
    "livekit_api_key": "devkey",
    "livekit_api_secret": "devsecret-0123456789-0123456789-abcdef",
}


def config(**kw: Any) -> RealmConfig:
    return realm_config(**{"flush_interval_s": FLUSH, **LIVEKIT, **kw})


@dataclass
class Deployment:
    urls: Sequence[str]
    subjects: str
    connectors: list[Realm] = field(default_factory=list)
    core: CoreService | None = None
    stats: StatsService | None = None
    buses: list[NatsPubSub] = field(default_factory=list)

    async def bus(self) -> NatsPubSub:
        b = await NatsPubSub.connect(
            list(self.urls), subjects=self.subjects, reconnect_time_wait=0.1
        )
        self.buses.append(b)
        return b

    async def reconnected(self) -> None:
        """Every bus connected again, nats-py and the C++ client alike (the C++ client
        relays the island messages), and the subscriptions they re-sent registered with
        their server."""
        while not all(bus.connected for bus in self.buses):
            await asyncio.sleep(0.05)
        for bus in self.buses:
            await bus.ready()

    async def start_core(self) -> CoreService:
        self.core = await CoreService(config(), await self.bus()).start()
        return self.core

    async def stop_core(self) -> None:
        assert self.core is not None
        await self.core.stop()
        await self.core.pubsub.aclose()  # type: ignore[attr-defined]
        self.core = None


@contextlib.asynccontextmanager
async def deployment(urls: Sequence[str], subjects: str = "workers") -> AsyncIterator[Deployment]:
    d = Deployment(urls, subjects)
    try:
        for _ in range(2):
            r = Realm(config(), pubsub=await d.bus(), run_core=False)
            d.connectors.append(await r.start())
        d.stats = await StatsService(config(), await d.bus()).start()
        await d.start_core()
        yield d
    finally:
        for r in d.connectors:
            await r.stop()
        if d.stats is not None:
            await d.stats.stop()
        if d.core is not None:
            await d.core.stop()
        for b in d.buses:
            await b.aclose()


async def client(realm: Realm, seed: int) -> ArchipelagoClient:
    c = ArchipelagoClient(seed)
    await c.connect(f"ws://127.0.0.1:{realm.port}")
    assert await c.handshake() == c.address
    return c


async def get_json(url: str) -> Any:
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        assert r.status == 200, await r.text()
        return await r.json()


async def share_an_island(d: Deployment, seeds: tuple[int, int]) -> tuple[Any, Any, str]:
    a = await client(d.connectors[0], seeds[0])
    b = await client(d.connectors[1], seeds[1])
    await a.heartbeat(0.0, 0.0, 0.0)
    ia = await a.island()
    await b.heartbeat(8.0, 0.0, 8.0)
    ib = await b.island()
    assert ib["islandId"] == ia["islandId"]
    assert set(ib["peers"]) == {a.address, b.address}
    join = await a.expect("joinIsland", peerId=b.address)
    assert join["joinIsland"]["islandId"] == ia["islandId"]
    return a, b, ia["islandId"]


@pytest.mark.parametrize("subjects", ["native", "workers", "v3"])
def test_islands_are_consistent_across_connectors(
    nats_server: NatsServer,  # noqa: F811
    subjects: str,
) -> None:
    async def body() -> None:
        async with deployment([nats_server.url], subjects) as d:
            a, b, island = await share_an_island(d, (501, 502))
            assert d.stats is not None
            deadline = time.monotonic() + 5
            while True:  # stats sees everyone, from heartbeats and engine.islands over NATS
                peers = await get_json(f"{d.stats.url}/peers")
                islands = await get_json(f"{d.stats.url}/islands")
                ids = {p["address"] for p in peers["peers"]}
                if ids == {a.address, b.address} and islands["islands"]:
                    break
                assert time.monotonic() < deadline, (peers, islands)
                await asyncio.sleep(0.05)
            assert [i["id"] for i in islands["islands"]] == [island]
            assert {p["address"] for p in islands["islands"][0]["peers"]} == {a.address, b.address}
            # b walks away: a new island for b, a told that b left
            await b.heartbeat(500.0, 0.0, 500.0)
            moved = await b.island()
            assert moved["islandId"] != island and moved["fromIslandId"] == island
            left = await a.expect("leftIsland", peerId=b.address)
            assert left["leftIsland"]["islandId"] == island
            # the connectors' /about reports the remote core healthy (its discovery is fresh)
            about = await get_json(f"{d.connectors[0].url}/about")
            assert about["comms"]["healthy"] is True
            for bus in d.buses:
                assert bus.handler_errors == 0
                assert bus.m_subject_errors.get(code="bad_address", direction="receive") == 0
            await a.close()
            await b.close()

    run(body)


def test_peer_moving_to_another_connector_gets_an_island_there(
    nats_server: NatsServer,  # noqa: F811
) -> None:
    """``peer.<addr>.connect`` resets the peer in the core, so a session opened on a
    second connector (the first still open) gets its own ``island_changed``."""

    async def body() -> None:
        async with deployment([nats_server.url]) as d:
            a, b, island = await share_an_island(d, (531, 532))
            again = await client(d.connectors[1], 531)  # a's identity, other connector
            assert again.address == a.address
            moved = await assigned(again, 0.0, 0.0, timeout=5)
            assert moved["islandId"] == island  # back beside b
            assert set(moved["peers"]) == {a.address, b.address}
            assert "fromIslandId" not in moved  # this session never had an island
            for c in (again, a, b):
                await c.close()

    run(body)


def test_core_restart_rebuilds_state_from_heartbeats(nats_server: NatsServer) -> None:  # noqa: F811
    async def body() -> None:
        async with deployment([nats_server.url]) as d:
            a, b, _ = await share_an_island(d, (511, 512))
            await d.stop_core()
            core = await d.start_core()
            reports: list[TickReport] = []
            tick = core.core.tick

            def counted() -> TickReport:
                r = tick()
                reports.append(r)
                return r

            core.core.tick = counted  # type: ignore[method-assign]

            def fed() -> float:  # heartbeats the new core's engine has (C++ feed or not)
                core.core.sync_feed(settle=True)
                return float(core.core.metrics.heartbeats.get())

            # ticks run on this loop: none is in progress while we take the marks
            mark, before = len(reports), fed()
            await a.heartbeat(0.0, 0.0, 0.0)
            await b.heartbeat(8.0, 0.0, 8.0)
            await eventually(lambda: fed() >= before + 2)
            first = len(reports)  # the first tick that sees both heartbeats
            ia = await a.island()
            ib = await b.island()
            # both re-assigned by that tick, from the heartbeats alone (however long they
            # took to cross the connector and NATS on a loaded machine)
            assert sum(r.island_changed for r in reports[mark : first + 1]) == 2, reports
            assert ia["islandId"] == ib["islandId"]
            assert set(ib["peers"]) == {a.address, b.address}
            await a.close()
            await b.close()

    run(body)


def test_cluster_node_killed_mid_test(nats_cluster: NatsCluster) -> None:  # noqa: F811
    async def body() -> None:
        async with deployment(nats_cluster.urls) as d:
            a, b, island = await share_an_island(d, (521, 522))
            await asyncio.to_thread(nats_cluster.nodes[0].kill)

            await asyncio.wait_for(d.reconnected(), 30)
            assert all(bus.nc.connected_url.port != nats_cluster.nodes[0].port for bus in d.buses)
            # clients stayed connected and islands keep updating (b heartbeats until the
            # surviving routes carry the re-sent interest between the nodes, as a client
            # heartbeats anyway)
            moved = await assigned(b, 500.0, 500.0, timeout=30)
            assert moved["islandId"] != island
            await a.expect("leftIsland", peerId=b.address)
            back = await assigned(b, 4.0, 4.0, timeout=30)
            assert back["islandId"] == island
            await a.expect("joinIsland", peerId=b.address)
            await a.close()
            await b.close()

    run(body, 90)


def test_core_readiness_follows_its_nats_connection(nats_server: NatsServer) -> None:  # noqa: F811
    async def body() -> None:
        bus = await NatsPubSub.connect([nats_server.url], reconnect_time_wait=0.1)
        core = await CoreService(config(), bus, http=True).start()
        try:
            async with aiohttp.ClientSession() as s:

                async def ready() -> tuple[int, Any]:
                    async with s.get(core.url + "/health/ready") as r:
                        return r.status, await r.json()

                async def wait_for(status: int) -> Any:
                    deadline = time.monotonic() + 10
                    while True:
                        got, body = await ready()
                        if got == status:
                            return body
                        assert time.monotonic() < deadline, (got, body)
                        await asyncio.sleep(0.05)

                assert await wait_for(200) == {"ready": True}
                await asyncio.to_thread(nats_server.kill)
                refused = await wait_for(503)
                assert refused["ready"] is False and "bus_disconnected" in refused["reasons"]
                status = await get_json(core.url + "/status")
                assert status["busConnected"] is False
                await asyncio.to_thread(nats_server.restart)
                assert await wait_for(200) == {"ready": True}
        finally:
            await core.stop()
            await bus.aclose()

    run(body)


def test_core_reads_node_announcement_timing_from_its_config() -> None:
    from dclcomms.nats.nodes import NodeBalancedWsRooms
    from dclcomms.pubsub import InProcessPubSub

    cfg = config(
        ws_room_secret="x" * 32,
        policy="dclcomms.nats.nodes:NodeBalancedWsRooms",
        transport_node_interval_s=0.5,
        transport_node_missed=4,
    )
    core = CoreService(cfg, InProcessPubSub())
    assert isinstance(core.core.policy, NodeBalancedWsRooms)
    assert core.core.policy.registry.timeout_s == 2.0
    with pytest.raises(AttributeError):
        _ = core.url  # no HTTP unless asked for
    core.core.close()


def test_clients_stay_connected_while_nats_is_briefly_away(nats_server: NatsServer) -> None:  # noqa: F811
    async def body() -> None:
        async with deployment([nats_server.url]) as d:
            a, b, island = await share_an_island(d, (541, 542))
            await asyncio.to_thread(nats_server.kill)
            await asyncio.sleep(1.0)  # the whole bus is gone for a while
            for c in (a, b):  # sessions stay open; heartbeats are still accepted
                await c.heartbeat(0.0, 0.0, 0.0)
                assert c.ws is not None and not c.ws.closed
            await asyncio.to_thread(nats_server.restart)

            await asyncio.wait_for(d.reconnected(), 30)
            # islands resume: b walks away and back, a hears of both
            moved = await assigned(b, 500.0, 500.0, timeout=30)
            assert moved["islandId"] != island
            await a.expect("leftIsland", peerId=b.address)
            await a.close()
            await b.close()

    run(body, 90)


def test_about_and_status_report_unhealthy_while_nats_is_down(nats_server: NatsServer) -> None:  # noqa: F811
    """A realm whose NATS is gone says so: /about 503 (acceptingUsers false), /status
    healthy/busConnected false; both recover when NATS is back."""

    async def body() -> None:
        bus = await NatsPubSub.connect([nats_server.url], reconnect_time_wait=0.1)
        realm = await Realm(config(), pubsub=bus).start()
        try:
            url = f"http://127.0.0.1:{realm.port}"

            async def about() -> tuple[int, Any]:
                async with aiohttp.ClientSession() as s, s.get(url + "/about") as r:
                    return r.status, await r.json()

            async def wait_for(status: int) -> Any:
                deadline = time.monotonic() + 10
                while True:
                    got, doc = await about()
                    if got == status:
                        return doc
                    assert time.monotonic() < deadline, (got, doc)
                    await asyncio.sleep(0.05)

            doc = await wait_for(200)
            assert doc["acceptingUsers"] is True
            await asyncio.to_thread(nats_server.kill)
            doc = await wait_for(503)
            assert doc["comms"]["healthy"] is False and doc["acceptingUsers"] is False
            status = await get_json(url + "/status")
            assert (status["healthy"], status["busConnected"]) == (False, False)
            await asyncio.to_thread(nats_server.restart)
            doc = await wait_for(200)
            assert doc["comms"]["healthy"] is True and doc["acceptingUsers"] is True
            status = await get_json(url + "/status")
            assert status["healthy"] is True and status["coreTicking"] is True
        finally:
            await realm.stop()

    run(body, 60)


def test_about_reports_unhealthy_when_the_core_stops_ticking() -> None:
    """No tick for 3 flush periods: /about 503 and /status coreTicking false."""

    async def body() -> None:
        async with Realm(config(flush_interval_s=0.5)) as realm:
            url = f"http://127.0.0.1:{realm.port}"
            deadline = time.monotonic() + 5
            while not (await get_json(url + "/status"))["healthy"]:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            assert realm._core_task is not None
            realm._core_task.cancel()  # the core's loop dies (a bug, a stuck tick)
            await asyncio.sleep(0.5 * 3 + 0.3)
            async with aiohttp.ClientSession() as s, s.get(url + "/about") as r:
                assert r.status == 503
                assert (await r.json())["acceptingUsers"] is False
            status = await get_json(url + "/status")
            assert (status["healthy"], status["coreTicking"]) == (False, False)

    run(body)


def test_bus_subscribed_comes_once_the_nats_server_has_the_subscription(
    nats_server: NatsServer,  # noqa: F811
) -> None:
    """A /bus ``subscribed`` reply means the connector's NATS subscription is registered
    with the server, so what another connection publishes once the client has read it
    reaches the session. (It came right away, while the subscription was still on its way
    to the server: a message published just after could miss the session.) The server is
    paused (SIGSTOP) while the client subscribes: no reply until it runs again."""

    async def body() -> None:
        import nats

        bus = await NatsPubSub.connect([nats_server.url])
        realm = await Realm(config(bus_global_topics="news"), pubsub=bus).start()
        raw = await nats.connect(nats_server.url)
        c = BusClient(551)
        try:
            await c.connect(f"ws://127.0.0.1:{realm.port}")
            assert await c.handshake() == c.address
            assert nats_server.proc is not None
            nats_server.proc.send_signal(signal.SIGSTOP)
            try:
                await c.send_json({"type": "subscribe", "kind": "peer", "topic": "news"})
                with pytest.raises(TimeoutError):
                    await c.frame(timeout=0.5, type="subscribed")
            finally:
                nats_server.proc.send_signal(signal.SIGCONT)
            await c.frame(timeout=30, type="subscribed", kind="peer", topic="news")
            await raw.publish(f"client.peer.{addr(7)}.news", b"right after")
            got = await c.message("news", timeout=30, sender=addr(7))
            assert base64.b64decode(got["payload"]) == b"right after"
        finally:
            await c.close()
            await raw.close()
            await realm.stop()
            await bus.aclose()

    run(body)
