"""The connector relay in C++: the core's island messages over NATS to real WebSocket
sessions (a real nats-server, real clients, each scheme).

A "core" bus publishes hand-made ticks through the core's own publish calls; a
connector (``ws.Server`` + :class:`~dclcomms.realm.connector.Connector` on a
:class:`~dclcomms.nats.pubsub.NatsPubSub` with the C++ client) relays them. Each
client must receive exactly the frames the connector rules give (archipelago.md 1.5:
no ``fromIslandId`` before a session has an island, no join/left for sessions that
entered the island this tick, nothing for peers not connected here), byte for byte,
in order and once: every sequence ends with a marker frame that must be the next one.
"""

from __future__ import annotations

import asyncio
import random

import pytest

from dclcomms import ws
from dclcomms.metrics import Registry
from dclcomms.nats.pubsub import NatsPubSub
from dclcomms.pubsub import IslandChanged, IslandMembers
from dclcomms.realm.connector import Connector
from tests.helpers.common import run
from tests.helpers.island_relay import (
    changed,
    end_tick,
    frames_until,
    joined,
    relay,
    relay_two_ticks,
)
from tests.helpers.nats_fixtures import NatsServer, nats_server  # noqa: F401 - fixture
from tests.helpers.realm_client import eventually
from tests.helpers.ws_wire import (
    Identity,
    RawWs,
    client_challenge_request,
    client_signed_challenge,
    decode_server,
)


@pytest.mark.parametrize("subjects", ["native", "workers", "v3"])
def test_relay_delivers_each_tick_exactly(nats_server: NatsServer, subjects: str) -> None:  # noqa: F811
    async def body() -> None:
        async with relay(nats_server.url, subjects) as s:
            a, b = await joined(s, 701), await joined(s, 702)
            await relay_two_ticks(s, a, b)
            text = s.registry.render()
            assert 'dcl_connector_island_messages_total{kind="island_changed"} 3' in text
            assert 'dcl_connector_island_messages_total{kind="left_island"} 3' in text
            assert s.conn_bus.handler_errors == 0
            await a.close()
            await b.close()

    run(body)


@pytest.mark.parametrize("subjects", ["native", "workers"])
def test_undecodable_and_misaddressed_messages_are_dropped_and_counted(
    nats_server: NatsServer,  # noqa: F811
    subjects: str,
) -> None:
    async def body() -> None:
        async with relay(nats_server.url, subjects) as s:
            a = await joined(s, 711)
            raw = s.core_bus.c_client
            assert raw is not None
            if subjects == "native":
                raw.publish("dclcomms.v1.island.I1.changed", b"\x0a\x09I1")  # truncated
                raw.publish("dclcomms.v1.island.b!d.changed", b"")  # a bad island token
                bad_code = "bad_subject"
            else:
                raw.publish(f"engine.peer.{a.address}.island_changed", b"\x1a\x07I1")
                raw.publish("engine.island.b!d.peer_join", b"")
                bad_code = "bad_island_id"
            members = IslandMembers([(a.address, (1.0, 0.0, 1.0))])
            s.core_bus.publish_island_changed(
                [(a.address, IslandChanged("I1", "c", None, members))]
            )
            want = changed("I1", "c", None, members)
            assert await frames_until(a, want) == [want]  # only the good one
            bus = s.conn_bus

            def counted() -> bool:
                bus._sync_c()
                return (
                    bus.m_dropped.get(reason="decode") == 1
                    and bus.m_subject_errors.get(code=bad_code, direction="receive") == 1
                )

            await eventually(counted)
            await a.close()

    run(body)


def test_a_session_moved_to_another_connector_keeps_its_islands_apart(
    nats_server: NatsServer,  # noqa: F811
) -> None:
    """Two connectors relay the same subjects: each sends only to its own sessions, and a
    session replaced on one connector (kicked 4006) starts without an island there."""

    async def body() -> None:
        async with relay(nats_server.url, "native") as s1, relay(nats_server.url, "native") as s2:
            a1 = await joined(s1, 721)
            b2 = await joined(s2, 722)
            core = s1.core_bus
            m = IslandMembers([(a1.address, (1.0, 0.0, 1.0)), (b2.address, (2.0, 0.0, 2.0))])
            core.publish_island_changed(
                [
                    (a1.address, IslandChanged("I1", "ca", None, m)),
                    (b2.address, IslandChanged("I1", "cb", None, m)),
                ]
            )
            await end_tick(core)
            assert await frames_until(a1, changed("I1", "ca", None, m)) == [
                changed("I1", "ca", None, m)
            ]
            assert await frames_until(b2, changed("I1", "cb", None, m)) == [
                changed("I1", "cb", None, m)
            ]
            # a's identity opens a second session on connector 1: the old one is kicked,
            # the new one has no island, so its island_changed has no from.
            again = await joined(s1, 721)
            assert (await a1.closed()).code == 4006
            core.publish_island_changed([(a1.address, IslandChanged("I1", "ca2", "I1", m))])
            want = changed("I1", "ca2", None, m)
            assert await frames_until(again, want) == [want]
            # connector 2 drops the same two messages (nobody there) on its own thread

            def dropped_on_s2() -> int:
                return int(s2.server.stats()["connector"]["relayed_not_connected"])

            await eventually(lambda: dropped_on_s2() >= 2)
            assert dropped_on_s2() == 2
            await asyncio.gather(a1.close(), again.close(), b2.close())

    run(body)


def test_frames_with_a_shared_member_map_survive_a_full_socket(
    nats_server: NatsServer,  # noqa: F811
) -> None:
    """Each relayed island_changed is written as its own head and the message's shared member
    entries: a client whose socket is full gets the rest through the server's write queue
    (frames cut at any byte, then handed over) and still reads every frame whole, byte for
    byte, in order."""

    async def body() -> None:
        conn_bus = await NatsPubSub.connect([nats_server.url], subjects="native", name="connector")
        core_bus = await NatsPubSub.connect([nats_server.url], subjects="native", name="core")
        server = ws.Server(ws.ServerConfig(port=0, rooms=False, connector_max_queued_bytes=1 << 26))
        port = server.start()
        connector = Connector(server, conn_bus, Registry())
        raw: RawWs | None = None
        try:
            assert connector.relayed_in_cpp
            await conn_bus.ready()
            await core_bus.ready()
            me = Identity.random(random.Random(741))
            raw = await RawWs.connect(port, "/ws", rcvbuf=4096)
            await raw.send(client_challenge_request(me.address))
            _, ch = decode_server((await raw.recv())[1])
            await raw.send(client_signed_challenge(me.chain(ch["challenge"])))
            assert decode_server((await raw.recv())[1])[0] == "welcome"
            transport = raw.writer.transport
            transport.pause_reading()  # type: ignore[attr-defined]
            members = IslandMembers(
                [(me.lower, (1.0, 0.0, 1.0))]
                + [(f"0x{i:040x}", (float(i), 0.0, float(i))) for i in range(1, 100)]
            )
            n = 1000  # ~6 KB each: more than the socket takes (its send buffer grows to 4 MiB)
            for i in range(n):
                core_bus.publish_island_changed(
                    [(me.lower, IslandChanged(f"I{i}", f"conn-{i}", None, members))]
                )
            await core_bus.flush()

            def handed() -> bool:
                return int(server.stats()["server"]["writes_handed_over"]) > 0

            await eventually(handed)  # the socket was full: the rest waits in the queue
            transport.resume_reading()  # type: ignore[attr-defined]
            for i in range(n):
                op, data = await asyncio.wait_for(raw.recv(), 10)
                assert op == 2
                assert data == changed(f"I{i}", f"conn-{i}", None, members), i
            assert server.stats()["connector"]["closed_slow"] == 0
        finally:
            if raw is not None:
                raw.close()
            connector.close()
            server.stop()
            await core_bus.aclose()
            await conn_bus.aclose()

    run(body)
