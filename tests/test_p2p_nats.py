"""P2P signalling across two connector processes over NATS (``v3`` subjects).

One ``nats-server``, one core process (``--policy p2p``) and two connector
processes, all real. Signals travel ``client-proto.peer.<from>.<to>.offer`` between
the connectors, and the relay rule holds on both sides: the sender's connector
refuses a signal to another island, and the addressee's connector drops one that
reached NATS anyway. Then real clients on the two connectors build a WebRTC mesh
through that signalling and exchange packets.
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from dclcomms import codec
from dclcomms.auth import Identity
from dclcomms.client import CommunicationsDirector, Message, P2PAdapter, P2POptions
from tests.helpers.nats_fixtures import (
    NatsServer,
    first_line,
    nats_server,  # noqa: F401 - fixture
    spawn,
    stop_all,
)
from tests.helpers.realm_client import ArchipelagoClient, BusClient, assigned

SECRET = "p2p-nats-ws-room-secret-0123456789"
BASE = ["--host", "127.0.0.1", "--port", "0", "--log-level", "WARNING"]
REALM = [*BASE, "--flush-interval-s", "0.1", "--ws-room-secret", SECRET, "--policy", "p2p"]
REALM += ["--discovery-interval-ms", "500"]  # the connectors' /about is healthy soon
SDP = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
OFFER = json.dumps({"type": "offer", "sdp": SDP}).encode()


async def until(check: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def metric(http: aiohttp.ClientSession, base: str, line: str) -> float:
    async with http.get(base + "/metrics") as r:
        for row in (await r.text()).splitlines():
            if row.startswith(line + " "):
                return float(row.split()[-1])
    return 0.0


async def relay_rule(connectors: list[str], nats_url: str) -> None:
    import nats

    ws = [c.replace("http://", "ws://") for c in connectors]
    nc = await nats.connect(nats_url)
    wire: list[Any] = []

    async def on_wire(msg: Any) -> None:
        wire.append(msg)

    await nc.subscribe("client-proto.peer.*.*.offer", cb=on_wire)
    await nc.flush()
    # a on connector 0, b and far on connector 1; a and b share an island
    a, b, far = ArchipelagoClient(1701), ArchipelagoClient(1702), ArchipelagoClient(1703)
    for c, url in ((a, ws[0]), (b, ws[1]), (far, ws[1])):
        await c.connect(url)
        await c.handshake()
    ia = await assigned(a, 0.0, 0.0)
    ib = await assigned(b, 6.0, 0.0)
    ifar = await assigned(far, 3000.0, 3000.0)
    assert ib["islandId"] == ia["islandId"] != ifar["islandId"]
    assert ia["connStr"] == f"p2p:{ia['islandId']}:{a.address}"
    bus_a, bus_b, bus_far = BusClient(1701), BusClient(1702), BusClient(1703)
    for c, url in ((bus_a, ws[0]), (bus_b, ws[1]), (bus_far, ws[1])):
        await c.connect(url)
        await c.handshake()
    await bus_a.subscribe(f"{a.address}.offer")
    await bus_b.subscribe(f"{b.address}.offer")  # "subscribed": the interest is on the server

    # across connectors, on the v3 subject
    await bus_a.publish(f"{b.address}.offer", OFFER)
    got = await bus_b.message(f"{b.address}.offer", sender=a.address, timeout=5)
    assert base64.b64decode(got["payload"]) == OFFER
    await until(lambda: wire, "the raw NATS subscriber")
    assert wire[0].subject == f"client-proto.peer.{a.address}.{b.address}.offer"
    assert wire[0].data == OFFER

    # the sender's connector refuses another island's peer
    await bus_far.publish(f"{a.address}.offer", OFFER)
    err = await bus_far.frame(type="error")
    assert err["code"] == "not_same_island" and err["topic"] == f"{a.address}.offer"
    # and the addressee's connector drops what reached NATS anyway (a rogue publisher)
    await nc.publish(f"client-proto.peer.{far.address}.{a.address}.offer", OFFER)
    await nc.publish(f"client-proto.peer.{b.address}.{a.address}.offer", b"not json")
    await nc.flush()
    async with aiohttp.ClientSession() as http:
        base = connectors[0]
        dropped = 'dcl_bus_dropped_total{reason="not_same_island"}'
        bad = 'dcl_bus_dropped_total{reason="bad_signal"}'
        deadline = time.monotonic() + 5
        while (await metric(http, base, dropped), await metric(http, base, bad)) != (1.0, 1.0):
            assert time.monotonic() < deadline, "the addressee's connector did not drop both"
            await asyncio.sleep(0.05)
    try:
        msg = await bus_a.message(f"{a.address}.offer", timeout=0.3)
        raise AssertionError(f"delivered: {msg}")
    except TimeoutError:
        pass
    for c in (bus_a, bus_b, bus_far, a, b, far):
        await c.close()
    await nc.close()


async def mesh_across_connectors(connectors: list[str]) -> None:
    """Four clients, two per connector, mesh through the NATS-carried signalling."""
    got: dict[str, list[str]] = {}
    ds: list[CommunicationsDirector] = []
    for i in range(4):
        ident = Identity.generate(1710 + i)
        got[ident.address.lower()] = []
        d = CommunicationsDirector(
            connectors[i % 2],
            ident,
            position=lambda i=i: (3.0 * i, 0.0, 0.0),
            heartbeat_interval_s=0.2,
            p2p_options=P2POptions(host_addresses=("127.0.0.1",), seed=1710 + i),
        )
        me = ident.address.lower()

        def on_message(m: Message, me: str = me) -> None:
            got[me].append(codec.decode(codec.RFC4_PACKET, m.data)["chat"]["message"])

        d.on("message", on_message)
        ds.append(d)
    try:
        await asyncio.gather(*(d.start() for d in ds))

        def meshed() -> bool:
            ads = [d.adapter for d in ds]
            return (
                all(isinstance(a, P2PAdapter) and len(a.members) == 3 for a in ads)
                and len({a.island_id for a in ads if isinstance(a, P2PAdapter)}) == 1
                and all(isinstance(a, P2PAdapter) and a.mesh_open for a in ads)
            )

        await until(meshed, "a mesh across the two connectors", timeout=30)
        for i, d in enumerate(ds):
            for k in range(10):
                packet = {"chat": {"message": f"{i}:{k}", "timestamp": 1.0}}
                assert await d.send(codec.encode(codec.RFC4_PACKET, packet), reliable=True)
        want = {
            me: sorted(f"{i}:{k}" for i in range(4) for k in range(10) if i != j)
            for j, me in enumerate(got)
        }
        await until(lambda: {m: sorted(v) for m, v in got.items()} == want, "every chat")
        for j, me in enumerate(got):  # in order per sender
            for i in range(4):
                if i != j:
                    assert [c for c in got[me] if c.startswith(f"{i}:")] == [
                        f"{i}:{k}" for k in range(10)
                    ]
        assert all(d.bus is not None for d in ds)
    finally:
        await asyncio.gather(*(d.stop() for d in ds), return_exceptions=True)


def test_p2p_signalling_across_two_connectors_over_nats(
    nats_server: NatsServer,  # noqa: F811
) -> None:
    nats = ["--nats", nats_server.url, "--subjects", "v3"]
    procs: list[subprocess.Popen[str]] = []
    try:
        procs.append(spawn("core", *REALM, *nats))
        procs += [spawn("connector", *REALM, *nats) for _ in range(2)]
        first_line(procs[0], "dclcomms core running (v3 subjects")
        conns = [first_line(p, "dclcomms connector running").split()[-1] for p in procs[1:]]

        async def body() -> None:
            await relay_rule(conns, nats_server.url)
            await mesh_across_connectors(conns)

        asyncio.run(asyncio.wait_for(body(), 90))
    finally:
        codes = stop_all(procs)
    assert codes == [0] * 3, [p.stderr.read() if p.stderr else "" for p in procs]
