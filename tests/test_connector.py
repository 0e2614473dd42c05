"""The Archipelago ws-connector session (archipelago.md 1.3-1.5) over real sockets.

Python only sees events (PeerConnected, Heartbeats, PeerDisconnected,
HttpRequest); every reject asserts the exact close code and reason.
"""

from __future__ import annotations

import asyncio
import functools
import math
import random
import time
from typing import Any

import aiohttp
import pytest

from dclcomms import archipelago, codec, errors
from dclcomms.heartbeats import HeartbeatBatch
from dclcomms.pubsub import IslandChanged, IslandMembers
from dclcomms.ws import (
    UNSET,
    Heartbeats,
    HttpRequest,
    PeerConnected,
    PeerDisconnected,
    Server,
    ServerConfig,
)
from tests.helpers.ws_events import events_until, heartbeats, rejected, replaced_session
from tests.helpers.ws_wire import (
    Identity,
    RawWs,
    client_challenge_request,
    client_heartbeat,
    client_signed_challenge,
    connector_handshake,
    decode_server,
    f32,
    ld,
    recv_bin,
    recv_close,
    run_async,
)
from tests.helpers.ws_wire import serving as ws_serving

SEED = 7331


serving = functools.partial(ws_serving, rooms=False)


async def still_serving(server: Server, rng: random.Random) -> None:
    me = Identity.random(rng)
    async with aiohttp.ClientSession() as s:
        ws, welcome = await connector_handshake(s, server.port, me)
        assert welcome["peer_id"] == me.lower
        await ws.close()


# --- handshake and events ---------------------------------------------------------------


@pytest.mark.parametrize("path", ["/ws", "/archipelago/ws"])
@run_async
async def test_handshake_welcome_and_events(path: str, rng: random.Random) -> None:
    with serving() as server:
        me = Identity.random(rng)
        async with aiohttp.ClientSession() as s:
            ws, welcome = await connector_handshake(s, server.port, me, path)
            assert welcome == {"peer_id": me.lower}
            evs = await events_until(server, lambda e: len(e) >= 1)
            assert evs == [PeerConnected(me.lower)]
            assert server.stats()["connector"]["sessions"] == 1
            await ws.send_bytes(client_heartbeat((1.5, -2.0, 3.25), "room-a"))
            await ws.send_bytes(client_heartbeat((0.0, 0.0, 0.0)))
            await ws.send_bytes(client_heartbeat((4.0, 5.0, 6.0), ""))
            evs = await events_until(server, lambda e: len(heartbeats(e)) >= 3)
            assert heartbeats(evs) == [
                (me.lower, (1.5, -2.0, 3.25), "room-a"),
                (me.lower, (0.0, 0.0, 0.0), UNSET),
                (me.lower, (4.0, 5.0, 6.0), ""),
            ]
            # the polled batch is the one the engine ingests: UNSET is the engine's too
            batches = [e for e in evs if isinstance(e, Heartbeats)]
            assert all(type(b) is HeartbeatBatch for b in batches)
            assert [r for b in batches for r in b.desired_rooms][1] is archipelago.UNSET
            await ws.close()
            evs = await events_until(server, lambda e: len(e) >= 1)
            assert evs == [PeerDisconnected(me.lower)]
            assert server.stats()["connector"]["sessions"] == 0


@run_async
async def test_heartbeat_right_after_signed_challenge_is_accepted(rng: random.Random) -> None:
    with serving() as server:
        me = Identity.random(rng)
        raw = await RawWs.connect(server.port, "/ws")
        await raw.send(client_challenge_request(me.address))
        _, ch = decode_server((await raw.recv())[1])
        # One TCP write: the heartbeat arrives while the chain is being verified.
        await raw.send(
            client_signed_challenge(me.chain(ch["challenge"])), client_heartbeat((7, 8, 9))
        )
        assert decode_server((await raw.recv())[1]) == ("welcome", {"peer_id": me.lower})
        evs = await events_until(server, lambda e: len(heartbeats(e)) >= 1)
        assert evs[0] == PeerConnected(me.lower)
        assert heartbeats(evs) == [(me.lower, (7.0, 8.0, 9.0), UNSET)]
        # More than 8 frames during verification: protocol violation.
        other = Identity.random(rng)
        raw2 = await RawWs.connect(server.port, "/ws")
        await raw2.send(client_challenge_request(other.address))
        _, ch = decode_server((await raw2.recv())[1])
        await raw2.send(
            client_signed_challenge(other.chain(ch["challenge"])),
            *[client_heartbeat((1, 1, 1))] * 9,
        )
        assert await raw2.recv_close() == (
            4000,
            "protocol violation: too many frames during authentication",
        )
        raw.close()
        raw2.close()


@run_async
async def test_invalid_heartbeats_dropped_and_counted(rng: random.Random) -> None:
    with serving() as server:
        me = Identity.random(rng)
        async with aiohttp.ClientSession() as s:
            ws, _ = await connector_handshake(s, server.port, me)
            await ws.send_bytes(client_heartbeat(None, "no-position"))
            await ws.send_bytes(client_heartbeat((math.nan, 0, 0)))
            await ws.send_bytes(client_heartbeat((0, math.inf, 0)))
            await ws.send_bytes(client_heartbeat((1, 2, 3), "r" * 65))
            await ws.send_bytes(client_heartbeat((1, 2, 3), "é" * 64))  # 64 characters: ok
            await ws.send_bytes(client_challenge_request(me.address))  # ignored after handshake
            await ws.send_bytes(ld(3, ld(1, f32(1, 2.0))))  # x only
            evs = await events_until(server, lambda e: len(heartbeats(e)) >= 2)
            assert heartbeats(evs) == [
                (me.lower, (1.0, 2.0, 3.0), "é" * 64),
                (me.lower, (2.0, 0.0, 0.0), UNSET),
            ]
            st = server.stats()["connector"]
            assert st["heartbeats_dropped_no_position"] == 1
            assert st["heartbeats_dropped_invalid"] == 3
            assert st["messages_ignored"] == 1
            assert st["heartbeats_accepted"] == 2


@run_async
async def test_positions_beyond_the_world_bound_dropped_and_counted(rng: random.Random) -> None:
    """Finite but absurd positions (the issue's +-3.4e38) are refused like NaN, not clustered;
    the bound is a setting (0 = finiteness only)."""
    with serving(world_bound_m=100.0) as server:
        me = Identity.random(rng)
        async with aiohttp.ClientSession() as s:
            ws, _ = await connector_handshake(s, server.port, me)
            await ws.send_bytes(client_heartbeat((3.4e38, 0, 0)))
            await ws.send_bytes(client_heartbeat((0, 0, -3.4e38)))
            await ws.send_bytes(client_heartbeat((100.5, 0, 0)))
            await ws.send_bytes(client_heartbeat((0, 101, 0)))
            await ws.send_bytes(client_heartbeat((math.nan, 0, 0)))
            await ws.send_bytes(client_heartbeat((-100, 100, 99.5)))  # on the bound: kept
            evs = await events_until(server, lambda e: len(heartbeats(e)) >= 1)
            assert heartbeats(evs) == [(me.lower, (-100.0, 100.0, 99.5), UNSET)]
            st = server.stats()["connector"]
            assert st["heartbeats_dropped_out_of_bounds"] == 4
            assert st["heartbeats_dropped_invalid"] == 1
            assert st["heartbeats_accepted"] == 1
            assert not ws.closed  # the session is kept
    with serving(world_bound_m=0.0) as server:  # no bound: only finiteness
        me = Identity.random(rng)
        async with aiohttp.ClientSession() as s:
            ws, _ = await connector_handshake(s, server.port, me)
            await ws.send_bytes(client_heartbeat((2.0**127, 0, 0)))
            evs = await events_until(server, lambda e: len(heartbeats(e)) >= 1)
            assert heartbeats(evs) == [(me.lower, (2.0**127, 0.0, 0.0), UNSET)]
            assert server.stats()["connector"]["heartbeats_dropped_out_of_bounds"] == 0


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf])
def test_world_bound_must_be_finite_and_not_negative(bad: float) -> None:
    with pytest.raises(errors.ConfigError) as exc:
        ServerConfig(world_bound_m=bad)
    assert exc.value.code == "invalid_parameter"
    assert str(exc.value).startswith("world_bound_m: must be")
    assert ServerConfig().world_bound_m == 4096.0


@run_async
async def test_heartbeat_rate_limit(rng: random.Random) -> None:
    with serving(heartbeat_max_per_s=10) as server:
        me = Identity.random(rng)
        async with aiohttp.ClientSession() as s:
            ws, _ = await connector_handshake(s, server.port, me)
            t0 = time.monotonic()
            for i in range(15):
                await ws.send_bytes(client_heartbeat((float(i), 0, 0)))
            await ws.send_bytes(client_challenge_request(me.address))  # marker (ignored)
            for _ in range(100):
                if server.stats()["connector"]["messages_ignored"] == 1:
                    break
                await asyncio.sleep(0.01)
            elapsed = time.monotonic() - t0
            evs = await events_until(server, lambda e: len(heartbeats(e)) >= 10)
            st = server.stats()["connector"]
            if elapsed < 0.9:  # all 15 inside one window
                assert [h[1][0] for h in heartbeats(evs)] == [float(i) for i in range(10)]
                assert st["heartbeats_dropped_rate"] == 5
            assert st["heartbeats_accepted"] + st["heartbeats_dropped_rate"] == 15


# --- duplicates and kicks -----------------------------------------------------------------


@run_async
async def test_duplicate_session_kick_bytes_and_registry(rng: random.Random) -> None:
    with serving() as server:
        me = Identity.random(rng)
        async with aiohttp.ClientSession() as s:
            old, _ = await connector_handshake(s, server.port, me)
            new = await replaced_session(s, server, me, old)
            assert server.stats()["connector"]["sessions"] == 1
            await new.close()
            evs = await events_until(server, lambda e: len(e) >= 1)
            assert evs == [PeerDisconnected(me.lower)]


@run_async
async def test_kick_from_python_and_sends(rng: random.Random) -> None:
    with serving() as server:
        me, other = Identity.random(rng), Identity.random(rng)
        async with aiohttp.ClientSession() as s:
            ws, _ = await connector_handshake(s, server.port, me)
            peers = [(me.lower, (1.0, 2.0, 3.0)), (other.lower, (0.0, 0.0, -4.5))]
            server.send_island_changed(me.lower, "I7", "ws-room:h/rooms/I7", None, peers)
            server.send_island_changed(me.lower, "I8", "livekit:x", "I7", peers[:1])
            # the same packet from an encoded IslandChangedMessage: wrapped byte for byte
            encoded = IslandChanged("I8", "livekit:x", "I7", dict(peers[:1])).to_bytes()
            server.send_island_changed_message(me.lower, encoded)
            # ... and from the header fields and the members' encoded entries, in one call
            members = IslandMembers(peers[:1])
            server.send_island_changed(me.lower, "I8", "livekit:x", "I7", members.to_bytes())
            server.send_join_island(me.lower, "I8", other.lower)
            server.send_left_island(me.lower, "I8", other.lower)
            server.send_join_island("0x" + "0" * 40, "I8", other.lower)  # not connected: ignored
            assert decode_server(await recv_bin(ws)) == (
                "island_changed",
                {"island_id": "I7", "conn_str": "ws-room:h/rooms/I7", "peers": peers},
            )
            assert decode_server(await recv_bin(ws)) == (
                "island_changed",
                {
                    "island_id": "I8",
                    "conn_str": "livekit:x",
                    "from_island_id": "I7",
                    "peers": peers[:1],
                },
            )
            wrapped = await recv_bin(ws)
            assert wrapped == codec.encode_island_changed(
                "I8", "livekit:x", "I7", peers[:1], server_packet=True
            )
            assert await recv_bin(ws) == wrapped
            assert decode_server(await recv_bin(ws)) == (
                "join_island",
                {"island_id": "I8", "peer_id": other.lower},
            )
            assert decode_server(await recv_bin(ws)) == (
                "left_island",
                {"island_id": "I8", "peer_id": other.lower},
            )
            server.kick(me.lower, 4005, "banned")
            assert await recv_bin(ws) == b"\x32\x00"
            assert await recv_close(ws) == (4005, "banned")
            ws2, _ = await connector_handshake(s, server.port, other)
            server.kick(other.lower, 4000, "bye")
            assert await recv_close(ws2) == (4000, "bye")  # no kicked message for other codes


# --- rejects ----------------------------------------------------------------------------------


@run_async
async def test_auth_rejects(rng: random.Random) -> None:
    with serving() as server:
        me, other = Identity.random(rng), Identity.random(rng)

        async def attempt(chain_for: Any) -> tuple[int, str]:
            async with aiohttp.ClientSession() as s:
                ws = await s.ws_connect(f"http://127.0.0.1:{server.port}/ws")
                await ws.send_bytes(client_challenge_request(me.address))
                _, ch = decode_server(await recv_bin(ws))
                await ws.send_bytes(client_signed_challenge(chain_for(ch["challenge"])))
                return await recv_close(ws)

        assert await attempt(other.chain) == (4003, "auth failed: address_mismatch")
        assert await attempt(lambda c: me.chain(c, expired=True)) == (
            4003,
            "auth failed: ephemeral_expired",
        )
        assert await attempt(lambda c: me.chain(c, forged=True)) == (
            4003,
            "auth failed: signer_mismatch",
        )
        assert server.stats()["connector"]["auth_failed"] == 3
        await still_serving(server, rng)


@run_async
async def test_challenge_is_single_use(rng: random.Random) -> None:
    with serving() as server:
        me = Identity.random(rng)
        async with aiohttp.ClientSession() as s:
            ws = await s.ws_connect(f"http://127.0.0.1:{server.port}/ws")
            await ws.send_bytes(client_challenge_request(me.address))
            _, ch1 = decode_server(await recv_bin(ws))
            await ws.close()
            ws = await s.ws_connect(f"http://127.0.0.1:{server.port}/ws")
            await ws.send_bytes(client_challenge_request(me.address))
            _, ch2 = decode_server(await recv_bin(ws))
            assert ch1["challenge"] != ch2["challenge"]
            assert ch2["challenge"].startswith("dcl-") and len(ch2["challenge"]) == 36
            # A chain for an earlier challenge does not open this session.
            await ws.send_bytes(client_signed_challenge(me.chain(ch1["challenge"])))
            assert await recv_close(ws) == (4003, "auth failed: final_authority_mismatch")


@run_async
async def test_protocol_rejects(rng: random.Random) -> None:
    with serving() as server:
        p = server.port
        me = Identity.random(rng)
        assert await rejected(p, [b"\xff\xff\xff"]) == (1007, "Cannot decode ClientPacket", [])
        assert await rejected(p, [client_heartbeat((1, 2, 3))]) == (
            4000,
            "protocol violation: expected challenge_request",
            [],
        )
        assert await rejected(p, [client_challenge_request(me.address)] * 2) == (
            4000,
            "protocol violation: expected signed_challenge",
            ["challenge_response"],
        )
        assert await rejected(p, [client_challenge_request("0xnothex")]) == (
            4002,
            "invalid address",
            [],
        )
        code, _, _ = await rejected(p, [client_challenge_request("0x" + "a" * 20000)])
        assert code == 1009  # 16 KiB inbound frame cap
        await still_serving(server, rng)


@run_async
async def test_silent_client_times_out(rng: random.Random) -> None:
    with serving(connector_handshake_timeout_ms=300) as server:
        t0 = time.monotonic()
        assert await rejected(server.port, []) == (4001, "handshake timeout", [])
        assert time.monotonic() - t0 < 5
        me = Identity.random(rng)
        assert await rejected(server.port, [client_challenge_request(me.address)]) == (
            4001,
            "handshake timeout",
            ["challenge_response"],
        )
        assert server.stats()["connector"]["closed_timeout"] == 2
        await still_serving(server, rng)


@run_async
async def test_deny_list(rng: random.Random) -> None:
    with serving() as server:
        me = Identity.random(rng)
        server.set_deny_list([me.address])  # any case; lowercased
        assert await rejected(server.port, [client_challenge_request(me.lower)]) == (
            4004,
            "deny-listed",
            [],
        )
        server.set_deny_list([])
        await still_serving(server, rng)


# --- HTTP -----------------------------------------------------------------------------------


@run_async
async def test_http_deferral_and_builtin_routes(rng: random.Random) -> None:
    with serving(http_timeout_ms=400) as server:
        base = f"http://127.0.0.1:{server.port}"
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{base}/health/live") as r:
                assert (r.status, await r.text()) == (200, "alive")
                assert r.headers["Access-Control-Allow-Origin"] == "*"

            async def answer_once() -> None:
                evs = await events_until(server, lambda e: len(e) >= 1)
                (req,) = evs
                assert isinstance(req, HttpRequest)
                assert (req.method, req.path, req.query) == ("POST", "/status", "a=1")
                assert req.body == b"hello" and req.headers["X-Test"] == "yes"
                server.respond(req.request_id, 200, {"Content-Type": "application/json"}, b"{}")
                server.respond(req.request_id, 500, {}, b"again")  # ignored

            task = asyncio.create_task(answer_once())
            async with s.post(f"{base}/status?a=1", data=b"hello", headers={"X-Test": "yes"}) as r:
                assert (r.status, await r.read()) == (200, b"{}")
                assert r.headers["Content-Type"] == "application/json"
            await task
            # Unanswered requests time out with 503.
            async with s.get(f"{base}/metrics") as r:
                assert r.status == 503
            assert isinstance(server.poll()[0], HttpRequest)
            # Upgrades to unknown paths: 404.
            with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
                await s.ws_connect(f"{base}/nope")
            assert exc.value.status == 404


@run_async
async def test_stop_closes_sessions_with_1001(rng: random.Random) -> None:
    server = Server(ServerConfig())
    server.start()
    me = Identity.random(rng)
    async with aiohttp.ClientSession() as s:
        ws, _ = await connector_handshake(s, server.port, me)
        stopper = asyncio.create_task(asyncio.to_thread(server.stop))
        assert await recv_close(ws) == (1001, "server shutting down")
        await stopper
    server.stop()  # idempotent
    assert PeerDisconnected(me.lower) in server.poll()


@run_async
async def test_idle_sessions_are_pinged_then_closed(rng: random.Random) -> None:
    with serving(idle_timeout_ms=600, rooms=True) as server:
        me, other = Identity.random(rng), Identity.random(rng)
        async with aiohttp.ClientSession() as s:
            # aiohttp answers pings while a receive() is pending: it stays
            # although it sends nothing.
            alive, _ = await connector_handshake(s, server.port, me)
            reader = asyncio.create_task(alive.receive())
            # A raw client that never answers pings is closed.
            raw = await RawWs.connect(server.port, "/ws")
            await raw.send(client_challenge_request(other.address))
            _, ch = decode_server(await raw.recv_data())
            signed = client_signed_challenge(other.chain(ch["challenge"]))
            t0 = time.monotonic()  # its last frame: the server's idle timer starts from it
            await raw.send(signed)
            assert decode_server(await raw.recv_data())[0] == "welcome"
            assert await raw.recv_close() == (1001, "idle timeout")
            assert 0.5 < time.monotonic() - t0 < 5
            raw.close()
            await asyncio.sleep(0.5)
            await alive.send_bytes(client_heartbeat((1, 2, 3)))
            evs = await events_until(server, lambda e: len(heartbeats(e)) >= 1)
            assert PeerDisconnected(other.lower) in evs
            assert server.stats()["connector"]["closed_idle"] == 1
            assert server.stats()["connector"]["sessions"] == 1
            assert not reader.done()
            reader.cancel()


def test_kick_rejects_codes_a_server_may_not_send() -> None:
    server = Server(ServerConfig())
    for code in (1005, 1006, 1015, 999, 5000, 3000):
        with pytest.raises(errors.ConfigError) as exc:
            server.kick("0x" + "1" * 40, code, "x")
        assert exc.value.code == "invalid_parameter"


@run_async
async def test_slow_connector_client_closed_4008_never_dropped(rng: random.Random) -> None:
    limit = 64 * 1024
    with serving(connector_max_queued_bytes=limit) as server:
        me = Identity.random(rng)
        raw = await RawWs.connect(server.port, "/ws", rcvbuf=4096)
        await raw.send(client_challenge_request(me.address))
        _, ch = decode_server((await raw.recv())[1])
        await raw.send(client_signed_challenge(me.chain(ch["challenge"])))
        assert decode_server((await raw.recv())[1])[0] == "welcome"
        peers = [(f"0x{i:040x}", (float(i), 0.0, float(i))) for i in range(100)]
        sent = 0
        # The client stops reading; island_changed is queued, never dropped.
        while server.stats()["connector"]["closed_slow"] == 0:
            for _ in range(20):
                server.send_island_changed(me.lower, f"I{sent}", "offline:offline", None, peers)
                sent += 1
            await asyncio.sleep(0.01)
            assert sent < 50_000
        # Drain first, decode afterwards: the server waits only its close-handshake
        # timeout (2 s) for the close reply, and decoding 100-member frames while
        # draining is slow on a loaded machine.
        frames = []
        while True:
            op, data = await raw.recv()
            if op == 8:
                break
            frames.append(data)
        got = []
        for frame in frames:
            kind, msg = decode_server(frame)
            assert kind == "island_changed"
            got.append(int(msg["island_id"][1:]))
        assert got == list(range(len(got))) and got  # in order, no gap before the close
        assert int.from_bytes(data[:2], "big") == 4008
        assert data[2:].decode() == f"receiver too slow: outbound queue over {limit} bytes"
        raw.close()
        await still_serving(server, rng)
