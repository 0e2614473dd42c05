"""Connector sessions spread over the I/O threads (``io_threads`` > 1): each upgrade to a
connector path goes to the next shard in turn, and every connector rule still holds across
them over real sockets: one session per address (the newest wins, kicked 4006 in the other
shard, no disconnect for it), ``already_connected``, kicks and sends from Python, the deny
list, heartbeats into the one event queue, and the C++ relay of the core's island messages
over NATS (each session's frames exactly, in order)."""

from __future__ import annotations

import asyncio
import functools
import random

import aiohttp

from dclcomms import ws
from dclcomms.pubsub import IslandChanged, IslandMembers
from dclcomms.ws import Heartbeats, PeerConnected, PeerDisconnected
from tests.helpers.common import run
from tests.helpers.island_relay import changed, frames_until, joined, relay, relay_two_ticks
from tests.helpers.nats_fixtures import NatsServer, nats_server  # noqa: F401 - fixture
from tests.helpers.ws_events import events_until, heartbeats, rejected, replaced_session
from tests.helpers.ws_wire import (
    Identity,
    client_challenge_request,
    client_heartbeat,
    connector_handshake,
    decode_server,
    recv_bin,
    recv_close,
    run_async,
)
from tests.helpers.ws_wire import serving as ws_serving

serving = functools.partial(ws_serving, rooms=False, io_threads=2, auth_threads=2)


def moved(server: ws.Server) -> int:
    return int(server.stats()["server"]["sockets_moved_to_shards"])


@run_async
async def test_sessions_alternate_over_the_shards_and_keep_every_rule(rng: random.Random) -> None:
    with serving() as server:
        ids = [Identity.random(rng) for _ in range(6)]
        async with aiohttp.ClientSession() as s:
            socks = []
            for me in ids:
                ws_, welcome = await connector_handshake(s, server.port, me)
                assert welcome == {"peer_id": me.lower}
                socks.append(ws_)
            # upgrades 0, 2, 4 stay in shard 0, 1, 3, 5 move to shard 1
            assert moved(server) == 3
            evs = await events_until(server, lambda e: len(e) >= 6)
            assert sorted(evs, key=str) == sorted((PeerConnected(m.lower) for m in ids), key=str)
            assert server.stats()["connector"]["sessions"] == 6
            # heartbeats of both shards reach the one queue the embedder polls
            for i, w in enumerate(socks):
                await w.send_bytes(client_heartbeat((float(i), 0.0, 1.0)))
            evs = await events_until(server, lambda e: len(heartbeats(e)) >= 6)
            assert sorted(heartbeats(evs)) == sorted(
                (m.lower, (float(i), 0.0, 1.0), ws.UNSET) for i, m in enumerate(ids)
            )
            assert all(isinstance(e, Heartbeats) for e in evs)
            # sends and kicks by address find each session's shard
            for i, m in enumerate(ids):  # each told of the next one
                server.send_join_island(m.lower, "I1", ids[(i + 1) % 6].lower)
            for i, w in enumerate(socks):
                assert decode_server(await recv_bin(w)) == (
                    "join_island",
                    {"island_id": "I1", "peer_id": ids[(i + 1) % 6].lower},
                )
            for m in ids:
                server.kick(m.lower, 4005, "banned")
            for w in socks:
                assert await recv_bin(w) == b"\x32\x00"
                assert await recv_close(w) == (4005, "banned")
            evs = await events_until(server, lambda e: len(e) >= 6)
            assert sorted(evs, key=str) == sorted((PeerDisconnected(m.lower) for m in ids), key=str)
            st = server.stats()["connector"]
            assert st["sessions"] == 0 and st["kicked_by_server"] == 6


@run_async
async def test_duplicate_in_another_shard_replaces_the_old_session(rng: random.Random) -> None:
    with serving() as server:
        me = Identity.random(rng)
        async with aiohttp.ClientSession() as s:
            old, _ = await connector_handshake(s, server.port, me)  # shard 0
            new = await replaced_session(s, server, me, old)  # shard 1
            assert moved(server) == 1
            st = server.stats()["connector"]
            assert st["sessions"] == 1 and st["kicked_duplicate"] == 1
            # a third session, back in shard 0, replaces the one in shard 1
            third, _ = await connector_handshake(s, server.port, me)
            assert await recv_bin(new) == b"\x32\x00"
            assert (await recv_close(new))[0] == 4006
            server.kick(me.lower, 4000, "bye")  # the directory names the third's shard
            assert await recv_close(third) == (4000, "bye")
            evs = await events_until(server, lambda e: len(e) >= 2)
            assert evs == [PeerConnected(me.lower), PeerDisconnected(me.lower)]
            st = server.stats()["connector"]
            assert st["sessions"] == 0 and st["kicked_duplicate"] == 2


@run_async
async def test_deny_list_holds_in_every_shard(rng: random.Random) -> None:
    with serving() as server:
        a, b = Identity.random(rng), Identity.random(rng)
        server.set_deny_list([a.address, b.address])
        for me in (a, b):  # one upgrade per shard
            assert await rejected(server.port, [client_challenge_request(me.lower)]) == (
                4004,
                "deny-listed",
                [],
            )
        assert moved(server) == 1
        server.set_deny_list([])
        async with aiohttp.ClientSession() as s:
            for me in (a, b):
                w, welcome = await connector_handshake(s, server.port, me)
                assert welcome == {"peer_id": me.lower}
                await w.close()


def test_relay_to_sessions_in_two_shards(nats_server: NatsServer) -> None:  # noqa: F811
    """The C++ relay with a's and b's sessions in different shards: the same frames as with
    one (tests/test_nats_relay.py), and a session replaced in the other shard starts without
    an island."""

    async def body() -> None:
        async with relay(nats_server.url, "native", io_threads=2, auth_threads=2) as s:
            a, b = await joined(s, 731), await joined(s, 732)
            assert moved(s.server) == 1  # b's
            await relay_two_ticks(s, a, b)
            core = s.core_bus
            # Upgrades alternate (a: shard 0, b: 1): a's and b's identities again, each
            # replaced within its shard, then a's once more in shard 0 and in shard 1 (the
            # last replaces across the shards); every newest session starts without an
            # island, so its island_changed has no from.
            again = await joined(s, 731)  # shard 0
            assert (await a.closed()).code == 4006
            b2 = await joined(s, 732)  # shard 1
            assert (await b.closed()).code == 4006
            a3 = await joined(s, 731)  # shard 0
            assert (await again.closed()).code == 4006
            a4 = await joined(s, 731)  # shard 1
            assert (await a3.closed()).code == 4006
            assert moved(s.server) == 3
            m = IslandMembers([(a.address, (1.0, 0.0, 1.0)), (b.address, (2.0, 0.0, 2.0))])
            core.publish_island_changed(
                [
                    (a.address, IslandChanged("I1", "ca", "I2", m)),
                    (b.address, IslandChanged("I1", "cb", "I1", m)),
                ]
            )
            want_a, want_b = changed("I1", "ca", None, m), changed("I1", "cb", None, m)
            assert await frames_until(a4, want_a) == [want_a]
            assert await frames_until(b2, want_b) == [want_b]
            assert s.server.stats()["connector"]["sessions"] == 2
            await asyncio.gather(a4.close(), b2.close())

    run(body)
