"""The /bus session transport (control-plane.md section 4) over real sockets.

The C++ server only authenticates (the connector's handshake, real eth-account
signatures), moves text frames in and out and enforces limits; the JSON is the
embedder's. Every reject asserts the exact close code and reason.
"""

from __future__ import annotations

import asyncio
import functools
import json
import random
import time
from typing import Any

import aiohttp
import pytest

from dclcomms import errors
from dclcomms.ws import (
    BusClosed,
    BusFrame,
    BusOpened,
    Event,
    Heartbeats,
    PeerConnected,
    PeerDisconnected,
    Server,
    ServerConfig,
)
from tests.helpers.ws_events import events_until, heartbeats, rejected
from tests.helpers.ws_wire import (
    Identity,
    RawWs,
    client_challenge_request,
    client_frame,
    client_heartbeat,
    client_signed_challenge,
    connector_handshake,
    decode_server,
    recv_bin,
    run_async,
)
from tests.helpers.ws_wire import serving as ws_serving

SEED = 4242
TEXT, BINARY, CLOSE = 1, 2, 8


serving = functools.partial(ws_serving, rooms=False, bus=True)


async def bus_handshake(
    s: aiohttp.ClientSession, port: int, me: Identity
) -> aiohttp.ClientWebSocketResponse:
    """The connector handshake on /bus; returns the socket after the welcome."""
    ws, welcome = await connector_handshake(s, port, me, "/bus")
    assert welcome == {"peer_id": me.lower}
    return ws


async def raw_bus_handshake(port: int, me: Identity, *, rcvbuf: int | None = None) -> RawWs:
    raw = await RawWs.connect(port, "/bus", rcvbuf=rcvbuf)
    await raw.send(client_challenge_request(me.address))
    _, ch = decode_server(await raw.recv_data())
    await raw.send(client_signed_challenge(me.chain(ch["challenge"])))
    assert decode_server(await raw.recv_data()) == ("welcome", {"peer_id": me.lower})
    return raw


async def close_of(ws: aiohttp.ClientWebSocketResponse) -> tuple[int, str]:
    """The very next message must be the close frame: (code, reason)."""
    msg = await ws.receive(timeout=10)
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), (msg.type, msg.data)
    return int(ws.close_code or 0), str(msg.extra or "")


def frames(events: list[Event]) -> list[tuple[str, str]]:
    return [(e.address, e.text) for e in events if isinstance(e, BusFrame)]


def bus_stats(server: Server) -> dict[str, int]:
    return dict(server.stats()["bus"])


async def wait_stat(server: Server, key: str, value: int, part: str = "bus") -> None:
    """Waits for a counter: a client sees its close frame before the server's
    close handler has counted it."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.stats()[part][key] >= value:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{part} {key} never reached {value}: {dict(server.stats()[part])}")


# --- handshake, frames in and out -------------------------------------------------------


@run_async
async def test_handshake_text_frames_both_ways_and_close(rng: random.Random) -> None:
    with serving() as server:
        me = Identity.random(rng)
        async with aiohttp.ClientSession() as s:
            ws = await bus_handshake(s, server.port, me)
            assert await events_until(server, lambda e: len(e) >= 1) == [BusOpened(me.lower)]
            st = bus_stats(server)
            assert (st["sessions"], st["connections"], st["welcomed"]) == (1, 1, 1)
            assert st["auth_verify_us_total"] > 0
            assert server.stats()["connector"]["sessions"] == 0  # a separate registry
            sub = '{"type":"subscribe","kind":"peer","topic":"heartbeat"}'
            odd = 'héllo → 🌍 "quoted" \\ \u0000 end'
            await ws.send_str(sub)
            await ws.send_str(odd)
            await ws.send_str("")
            evs = await events_until(server, lambda e: len(frames(e)) >= 3)
            assert evs == [BusFrame(me.lower, sub), BusFrame(me.lower, odd), BusFrame(me.lower, "")]
            out = json.dumps(
                {"type": "message", "topic": "t", "payload": "é🌍"}, ensure_ascii=False
            )
            server.send_bus(me.lower, out)
            server.send_bus("0x" + "0" * 40, "nobody")  # not connected: ignored
            server.send_bus(me.lower, "second")
            for expected in (out, "second"):
                msg = await ws.receive(timeout=10)
                assert (msg.type, msg.data) == (aiohttp.WSMsgType.TEXT, expected)
            await ws.close()
            assert await events_until(server, lambda e: len(e) >= 1) == [BusClosed(me.lower)]
            st = bus_stats(server)
            assert (st["sessions"], st["frames_received"], st["frames_sent"]) == (0, 3, 2)


@run_async
async def test_frames_queued_during_verification_keep_their_opcode(rng: random.Random) -> None:
    with serving() as server:
        me, other = Identity.random(rng), Identity.random(rng)
        for ident, late, expect_close in (
            (me, client_frame(b'{"type":"subscribe"}', TEXT), None),
            (other, client_frame(b"\x01\x02", BINARY), (1003, "bus frames must be text (JSON)")),
        ):
            raw = await RawWs.connect(server.port, "/bus")
            await raw.send(client_challenge_request(ident.address))
            _, ch = decode_server((await raw.recv())[1])
            # One TCP write: the second frame arrives while the chain is being verified.
            raw.writer.write(
                client_frame(client_signed_challenge(ident.chain(ch["challenge"]))) + late
            )
            await raw.writer.drain()
            assert decode_server((await raw.recv())[1]) == ("welcome", {"peer_id": ident.lower})
            if expect_close is None:
                evs = await events_until(server, lambda e: len(frames(e)) >= 1)
                assert evs == [BusOpened(me.lower), BusFrame(me.lower, '{"type":"subscribe"}')]
                raw.close()
                assert await events_until(server, lambda e: len(e) >= 1) == [BusClosed(me.lower)]
            else:
                assert await raw.recv_close() == expect_close
                raw.close()
                evs = await events_until(server, lambda e: len(e) >= 2)
                assert evs == [BusOpened(other.lower), BusClosed(other.lower)]
        # More than max_pending_frames during verification: protocol violation.
        third = Identity.random(rng)
        raw = await RawWs.connect(server.port, "/bus")
        await raw.send(client_challenge_request(third.address))
        _, ch = decode_server((await raw.recv())[1])
        raw.writer.write(
            client_frame(client_signed_challenge(third.chain(ch["challenge"])))
            + client_frame(b"{}", TEXT) * 9
        )
        await raw.writer.drain()
        assert await raw.recv_close() == (
            4000,
            "protocol violation: too many frames during authentication",
        )
        raw.close()
        assert bus_stats(server)["closed_protocol"] == 2


@run_async
async def test_binary_frame_after_handshake_closes_1003(rng: random.Random) -> None:
    with serving() as server:
        me = Identity.random(rng)
        async with aiohttp.ClientSession() as s:
            ws = await bus_handshake(s, server.port, me)
            await ws.send_bytes(client_heartbeat((1, 2, 3)))  # even a valid ClientPacket
            assert await close_of(ws) == (1003, "bus frames must be text (JSON)")
        evs = await events_until(server, lambda e: len(e) >= 2)
        assert evs == [BusOpened(me.lower), BusClosed(me.lower)]
        st = bus_stats(server)
        assert (st["closed_protocol"], st["frames_received"], st["sessions"]) == (1, 0, 0)
        assert server.stats()["connector"]["closed_protocol"] == 0


@run_async
async def test_invalid_utf8_text_frame_closes_1007(rng: random.Random) -> None:
    with serving() as server:
        raw = await raw_bus_handshake(server.port, Identity.random(rng))
        raw.writer.write(client_frame(b'{"a":"\xff"}', TEXT))
        await raw.writer.drain()
        code, _ = await raw.recv_close()
        assert code == 1007
        raw.close()
        await wait_stat(server, "closed_decode", 1)
        assert bus_stats(server)["frames_received"] == 0


# --- limits -------------------------------------------------------------------------------


@run_async
async def test_frame_size_limits_per_session_kind(rng: random.Random) -> None:
    with serving() as server:  # bus 32 KiB, connector 16 KiB: one endpoint
        me = Identity.random(rng)
        async with aiohttp.ClientSession() as s:
            ws = await bus_handshake(s, server.port, me)
            big = "é" * (15 * 1024)  # 30 KiB of UTF-8
            exact = "x" * 32768
            await ws.send_str(big)
            await ws.send_str(exact)
            evs = await events_until(server, lambda e: len(frames(e)) >= 2)
            assert frames(evs) == [(me.lower, big), (me.lower, exact)]
            await ws.send_str("x" * 32769)
            assert (await close_of(ws))[0] == 1009
        await wait_stat(server, "closed_frame_too_big", 1)
        # The connector keeps max_frame_bytes: 16384 passes the size check (and
        # fails as an invalid address), 16385 is 1009.
        p = server.port
        at_limit = client_challenge_request("0x" + "a" * 16376)
        over = client_challenge_request("0x" + "a" * 16377)
        assert (len(at_limit), len(over)) == (16384, 16385)
        assert await rejected(p, [at_limit]) == (4002, "invalid address", [])
        assert (await rejected(p, [over]))[0] == 1009
        await wait_stat(server, "closed_frame_too_big", 1, part="connector")
        assert server.stats()["connector"]["closed_frame_too_big"] == 1
        assert bus_stats(server)["closed_frame_too_big"] == 1


@run_async
async def test_bus_frame_limit_is_configurable(rng: random.Random) -> None:
    # The bus limit also applies to the handshake frames (an auth chain is ~700 bytes).
    with serving(bus_max_frame_bytes=2000, max_frame_bytes=1000) as server:
        raw = await raw_bus_handshake(server.port, Identity.random(rng))
        raw.writer.write(client_frame(b"x" * 2000, TEXT) + client_frame(b"x" * 2001, TEXT))
        await raw.writer.drain()
        assert (await raw.recv_close())[0] == 1009
        raw.close()
        evs = await events_until(server, lambda e: len(frames(e)) >= 1)
        assert [len(t) for _, t in frames(evs)] == [2000]
        assert (await rejected(server.port, [b"\x0a" * 1001]))[0] == 1009  # connector: 1000


@run_async
async def test_rate_limit_closes_4009(rng: random.Random) -> None:
    with serving(bus_max_frames_per_s=5) as server:
        me = Identity.random(rng)
        raw = await raw_bus_handshake(server.port, me)
        # Five per second are fine, also across a second boundary.
        for i in range(5):
            raw.writer.write(client_frame(f"a{i}".encode(), TEXT))
        await raw.writer.drain()
        await wait_stat(server, "frames_received", 5)
        await asyncio.sleep(1.05)
        # Five more, and a sixth within the same second (one write: however slow the
        # machine, it is): closed at the sixth, which is not delivered.
        raw.writer.write(
            b"".join(client_frame(f"b{i}".encode(), TEXT) for i in range(5))
            + client_frame(b"c0", TEXT)
        )
        await raw.writer.drain()
        assert await raw.recv_close() == (4009, "rate limit: more than 5 frames/s")
        raw.close()
        evs = await events_until(server, lambda e: BusClosed(me.lower) in e)
        assert [t for _, t in frames(evs)] == [f"a{i}" for i in range(5)] + [
            f"b{i}" for i in range(5)
        ]
        st = bus_stats(server)
        assert (st["closed_rate"], st["frames_received"]) == (1, 10)


@run_async
async def test_slow_bus_receiver_closed_4008_never_dropped(rng: random.Random) -> None:
    limit = 64 * 1024
    with serving(connector_max_queued_bytes=limit) as server:
        me = Identity.random(rng)
        raw = await raw_bus_handshake(server.port, me, rcvbuf=4096)
        pad = "p" * 16000  # about a 16 KiB bus message
        sent = 0
        # The client stops reading; frames are queued, never dropped.
        while bus_stats(server)["closed_slow"] == 0:
            for _ in range(20):
                server.send_bus(me.lower, json.dumps({"n": sent, "pad": pad}))
                sent += 1
            await asyncio.sleep(0.01)
            assert sent < 50_000
        got = []
        while True:
            op, data = await raw.recv()
            if op == CLOSE:
                break
            assert op == TEXT
            got.append(json.loads(data)["n"])
        assert got == list(range(len(got))) and got  # in order, no gap before the close
        assert int.from_bytes(data[:2], "big") == 4008
        assert data[2:].decode() == f"receiver too slow: outbound queue over {limit} bytes"
        raw.close()
        assert bus_stats(server)["frames_sent"] == len(got)
        evs = await events_until(server, lambda e: BusClosed(me.lower) in e)
        assert evs == [BusOpened(me.lower), BusClosed(me.lower)]


# --- registry -------------------------------------------------------------------------------


@run_async
async def test_duplicate_bus_session_newest_wins(rng: random.Random) -> None:
    with serving() as server:
        me = Identity.random(rng)
        async with aiohttp.ClientSession() as s:
            old = await bus_handshake(s, server.port, me)
            new = await s.ws_connect(f"http://127.0.0.1:{server.port}/bus")
            await new.send_bytes(client_challenge_request(me.address))
            _, ch = decode_server(await recv_bin(new))
            assert ch["already_connected"] is True
            await new.send_bytes(client_signed_challenge(me.chain(ch["challenge"])))
            assert decode_server(await recv_bin(new)) == ("welcome", {"peer_id": me.lower})
            # No kicked packet: after the handshake the bus speaks text.
            assert await close_of(old) == (
                4006,
                "session replaced: a new bus session for this address connected",
            )
            await new.send_str("still here")
            evs = await events_until(server, lambda e: len(frames(e)) >= 1)
            assert evs == [
                BusOpened(me.lower),
                BusOpened(me.lower),
                BusFrame(me.lower, "still here"),
            ]
            server.send_bus(me.lower, "to the new one")
            msg = await new.receive(timeout=10)
            assert msg.data == "to the new one"
            st = bus_stats(server)
            assert (st["sessions"], st["kicked_duplicate"]) == (1, 1)
            await new.close()
            assert await events_until(server, lambda e: len(e) >= 1) == [BusClosed(me.lower)]


@run_async
async def test_bus_and_connector_sessions_of_one_address_coexist(rng: random.Random) -> None:
    with serving() as server:
        me = Identity.random(rng)
        async with aiohttp.ClientSession() as s:
            conn, _ = await connector_handshake(s, server.port, me)
            bus = await s.ws_connect(f"http://127.0.0.1:{server.port}/bus")
            await bus.send_bytes(client_challenge_request(me.address))
            _, ch = decode_server(await recv_bin(bus))
            assert ch["already_connected"] is False  # only bus sessions count
            await bus.send_bytes(client_signed_challenge(me.chain(ch["challenge"])))
            assert decode_server(await recv_bin(bus))[0] == "welcome"
            assert await events_until(server, lambda e: len(e) >= 2) == [
                PeerConnected(me.lower),
                BusOpened(me.lower),
            ]
            # Events of both kinds interleave in arrival order.
            await conn.send_bytes(client_heartbeat((1, 2, 3)))
            for _ in range(500):
                if server.stats()["connector"]["heartbeats_accepted"] == 1:
                    break
                await asyncio.sleep(0.01)
            await bus.send_str("between")
            await wait_stat(server, "frames_received", 1)
            await conn.send_bytes(client_heartbeat((4, 5, 6)))
            evs = await events_until(server, lambda e: len(heartbeats(e)) >= 2)
            assert [type(e) for e in evs] == [Heartbeats, BusFrame, Heartbeats]
            assert evs[1] == BusFrame(me.lower, "between")
            assert server.stats()["connector"]["sessions"] == 1
            assert bus_stats(server)["sessions"] == 1
            # Closing one kind leaves the other.
            server.close_bus(me.lower, 4000, "bye")
            assert await close_of(bus) == (4000, "bye")
            assert await events_until(server, lambda e: len(e) >= 1) == [BusClosed(me.lower)]
            server.send_join_island(me.lower, "I1", me.lower)
            assert decode_server(await recv_bin(conn))[0] == "join_island"
            server.kick(me.lower, 4005, "banned")
            assert await events_until(server, lambda e: len(e) >= 1) == [PeerDisconnected(me.lower)]
            assert server.stats()["connector"]["kicked_by_server"] == 1
            assert bus_stats(server)["closed_by_server"] == 1


@run_async
async def test_close_bus_from_python(rng: random.Random) -> None:
    with serving() as server:
        me = Identity.random(rng)
        async with aiohttp.ClientSession() as s:
            ws = await bus_handshake(s, server.port, me)
            server.close_bus("0x" + "0" * 40, 4005, "nobody")  # not connected: ignored
            server.close_bus(me.lower, 4005, "banned: é")
            assert await close_of(ws) == (4005, "banned: é")
        evs = await events_until(server, lambda e: len(e) >= 2)
        assert evs == [BusOpened(me.lower), BusClosed(me.lower)]
        assert bus_stats(server)["closed_by_server"] == 1


def test_close_bus_rejects_codes_a_server_may_not_send() -> None:
    server = Server(ServerConfig(bus=True))
    for code in (1003, 1005, 1006, 1015, 999, 5000, 3000):
        with pytest.raises(errors.ConfigError) as exc:
            server.close_bus("0x" + "1" * 40, code, "x")
        assert exc.value.code == "invalid_parameter"
        assert "close_bus" in str(exc.value)


# --- rejects ---------------------------------------------------------------------------------


@run_async
async def test_auth_rejects_and_deny_list(rng: random.Random) -> None:
    with serving() as server:
        me, other = Identity.random(rng), Identity.random(rng)

        async def attempt(chain_for: Any, before_signing: Any = None) -> tuple[int, str]:
            async with aiohttp.ClientSession() as s:
                ws = await s.ws_connect(f"http://127.0.0.1:{server.port}/bus")
                await ws.send_bytes(client_challenge_request(me.address))
                _, ch = decode_server(await recv_bin(ws))
                if before_signing:
                    before_signing()
                await ws.send_bytes(client_signed_challenge(chain_for(ch["challenge"])))
                return await close_of(ws)

        assert await attempt(lambda c: me.chain(c, forged=True)) == (
            4003,
            "auth failed: signer_mismatch",
        )
        assert await attempt(other.chain) == (4003, "auth failed: address_mismatch")
        # Deny-listed after the challenge: checked again once the chain is verified.
        assert await attempt(me.chain, lambda: server.set_deny_list([me.address])) == (
            4004,
            "deny-listed",
        )
        assert await rejected(server.port, [client_challenge_request(me.lower)], "/bus") == (
            4004,
            "deny-listed",
            [],
        )
        st = bus_stats(server)
        assert (st["auth_failed"], st["deny_listed"], st["welcomed"]) == (2, 2, 0)
        assert server.stats()["connector"]["auth_failed"] == 0
        assert server.poll() == []
        server.set_deny_list([])
        async with aiohttp.ClientSession() as s:
            await (await bus_handshake(s, server.port, me)).close()


@run_async
async def test_handshake_protocol_rejects(rng: random.Random) -> None:
    with serving(connector_handshake_timeout_ms=300) as server:
        p, me = server.port, Identity.random(rng)
        assert await rejected(p, [b"\xff\xff\xff"], "/bus") == (
            1007,
            "Cannot decode ClientPacket",
            [],
        )
        assert await rejected(p, [client_heartbeat((1, 2, 3))], "/bus") == (
            4000,
            "protocol violation: expected challenge_request",
            [],
        )
        assert await rejected(p, [client_challenge_request("0xnothex")], "/bus") == (
            4002,
            "invalid address",
            [],
        )
        assert await rejected(p, [client_challenge_request(me.address)], "/bus") == (
            4001,
            "handshake timeout",
            ["challenge_response"],
        )
        st = bus_stats(server)
        assert st["connections"] == 4
        assert (st["closed_decode"], st["closed_protocol"]) == (1, 1)
        assert (st["closed_invalid_address"], st["closed_timeout"]) == (1, 1)
        assert server.stats()["connector"]["connections"] == 0


@run_async
async def test_bus_path_only_when_enabled(rng: random.Random) -> None:
    async with aiohttp.ClientSession() as s:
        with serving(bus=False) as server:
            with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
                await s.ws_connect(f"http://127.0.0.1:{server.port}/bus")
            assert exc.value.status == 404
            assert bus_stats(server)["connections"] == 0
        with serving(connector=False) as server:
            with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
                await s.ws_connect(f"http://127.0.0.1:{server.port}/ws")
            assert exc.value.status == 404
            await (await bus_handshake(s, server.port, Identity.random(rng))).close()


# --- lifecycle ---------------------------------------------------------------------------------


@run_async
async def test_idle_bus_session_closed(rng: random.Random) -> None:
    with serving(idle_timeout_ms=600) as server:
        me = Identity.random(rng)
        t0 = time.monotonic()  # before its last frame: the server's idle timer starts there
        raw = await raw_bus_handshake(server.port, me)  # never answers pings
        assert await raw.recv_close() == (1001, "idle timeout")
        assert 0.5 < time.monotonic() - t0 < 5
        raw.close()
        evs = await events_until(server, lambda e: BusClosed(me.lower) in e)
        assert evs == [BusOpened(me.lower), BusClosed(me.lower)]
        assert bus_stats(server)["closed_idle"] == 1


@run_async
async def test_stop_closes_bus_sessions_with_1001(rng: random.Random) -> None:
    server = Server(ServerConfig(bus=True))
    server.start()
    me = Identity.random(rng)
    try:
        async with aiohttp.ClientSession() as s:
            ws = await bus_handshake(s, server.port, me)
            stopper = asyncio.create_task(asyncio.to_thread(server.stop))
            assert await close_of(ws) == (1001, "server shutting down")
            await stopper
    finally:
        server.stop()
    assert server.poll() == [BusOpened(me.lower), BusClosed(me.lower)]


def test_stats_lists_every_bus_counter() -> None:
    with Server(ServerConfig()) as server:
        assert list(server.stats()["bus"]) == [
            "sessions",
            "connections",
            "welcomed",
            "auth_failed",
            "deny_listed",
            "kicked_duplicate",
            "closed_protocol",
            "closed_decode",
            "closed_timeout",
            "closed_invalid_address",
            "closed_slow",
            "closed_frame_too_big",
            "closed_idle",
            "closed_rate",
            "closed_by_server",
            "frames_received",
            "frames_sent",
            "auth_verify_us_total",
        ]
        server.send_bus("0x" + "1" * 40, "x")  # no bus: ignored


@pytest.mark.parametrize(
    "kw",
    [
        {"bus_max_frames_per_s": 0},
        {"bus_max_frames_per_s": -5, "bus": True},
        {"bus_max_frame_bytes": 0},
        {"bus_max_frame_bytes": 0, "bus": True},
    ],
)
def test_invalid_bus_config(kw: dict[str, int]) -> None:
    with pytest.raises(errors.ConfigError) as exc:
        Server(ServerConfig(**kw))  # type: ignore[arg-type]
    assert exc.value.code == "invalid_parameter"
