"""RFC-5 WebSocket rooms (transports.md section 1) over real sockets.

Every client is an aiohttp WebSocket on 127.0.0.1 with a real, seeded
eth-account identity; every reject asserts the exact close code and reason and
then checks the server still serves a fresh client.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import json
import random
import time
import urllib.parse
from typing import Any

import aiohttp
import jwt
import pytest

from dclcomms import errors
from dclcomms.ws import RoomMessage, Server, ServerConfig
from tests.helpers.ws_wire import (
    Identity,
    RawWs,
    client_frame,
    decode_ws,
    recv_bin,
    recv_close,
    room_handshake,
    run_async,
    ws_identification,
    ws_signed_challenge,
    ws_update,
)
from tests.helpers.ws_wire import serving as ws_serving

SEED = 5150
SECRET = "room-secret-for-tests-0123456789abcdef"


serving = functools.partial(ws_serving, connector=False)


def token(sub: str, room: str, *, secret: str = SECRET, exp_in: float = 300) -> str:
    now = int(time.time())
    claims = {"sub": sub, "room": room, "iat": now, "exp": int(now + exp_in)}
    return jwt.encode(claims, secret, algorithm="HS256", headers={"typ": "JWT"})


async def still_serving(s: aiohttp.ClientSession, port: int, rng: random.Random) -> None:
    """Two fresh clients join a room and exchange an update."""
    room = f"alive-{rng.randrange(1 << 30)}"
    a, _ = await room_handshake(s, port, room, Identity.random(rng))
    b, wb = await room_handshake(s, port, room, Identity.random(rng))
    kind, join = decode_ws(await recv_bin(a))
    assert kind == "peer_join" and join["alias"] == wb["alias"]
    await b.send_bytes(ws_update(b"ping"))
    kind, upd = decode_ws(await recv_bin(a))
    assert kind == "peer_update" and upd["body"] == b"ping"
    await a.close()
    await b.close()


async def rejected(
    port: int, path: str, frames: list[bytes], *, timeout: float = 10
) -> tuple[int, str, list[tuple[str, dict[str, Any]]]]:
    """Connects, sends frames, returns the close (code, reason) and frames seen."""
    async with aiohttp.ClientSession() as s:
        ws = await s.ws_connect(f"http://127.0.0.1:{port}{path}")
        for f in frames:
            await ws.send_bytes(f)
        seen = []
        while True:
            msg = await ws.receive(timeout=timeout)
            if msg.type == aiohttp.WSMsgType.BINARY:
                seen.append(decode_ws(msg.data))
                continue
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), msg
            return int(ws.close_code or 0), str(msg.extra or ""), seen


# --- membership -------------------------------------------------------------------------


@run_async
async def test_welcome_join_leave_and_aliases(rng: random.Random) -> None:
    with serving() as server:
        ids = [Identity.random(rng) for _ in range(3)]
        async with aiohttp.ClientSession() as s:
            a, wa = await room_handshake(s, server.port, "plaza", ids[0])
            assert wa["peer_identities"] == []
            b, wb = await room_handshake(s, server.port, "plaza", ids[1])
            assert wb["peer_identities"] == [(wa["alias"], ids[0].lower)]
            assert wb["alias"] > wa["alias"] >= 1
            assert decode_ws(await recv_bin(a)) == (
                "peer_join",
                {"alias": wb["alias"], "address": ids[1].lower},
            )
            c, wc = await room_handshake(s, server.port, "plaza", ids[2])
            # Earlier joiners in join order, addresses lowercase.
            assert wc["peer_identities"] == [
                (wa["alias"], ids[0].lower),
                (wb["alias"], ids[1].lower),
            ]
            for ws in (a, b):
                assert decode_ws(await recv_bin(ws))[1]["alias"] == wc["alias"]
            st = server.stats()["rooms"]
            assert (st["users"], st["rooms"]) == (3, 1)
            assert st["details"] == [{"roomName": "plaza", "count": 3}]
            await b.close()
            for ws in (a, c):
                assert decode_ws(await recv_bin(ws)) == ("peer_leave", {"alias": wb["alias"]})
            await a.close()
            await c.close()
            for _ in range(100):
                if server.stats()["rooms"]["rooms"] == 0:
                    break
                await asyncio.sleep(0.02)
            assert server.stats()["rooms"]["rooms"] == 0  # empty rooms vanish


@run_async
async def test_updates_relayed_with_forced_alias_no_echo(rng: random.Random) -> None:
    with serving() as server:
        async with aiohttp.ClientSession() as s:
            a, wa = await room_handshake(s, server.port, "r1", Identity.random(rng))
            b, wb = await room_handshake(s, server.port, "r1", Identity.random(rng))
            await recv_bin(a)  # peer_join
            body = rng.randbytes(300)
            await a.send_bytes(ws_update(body, unreliable=True, from_alias=999_999))
            await a.send_bytes(ws_update(b"second", from_alias=wb["alias"]))
            assert decode_ws(await recv_bin(b)) == (
                "peer_update",
                {"from_alias": wa["alias"], "body": body, "unreliable": True},
            )
            assert decode_ws(await recv_bin(b)) == (
                "peer_update",
                {"from_alias": wa["alias"], "body": b"second", "unreliable": False},
            )
            # No echo: a's next frame is b's update, not its own.
            await b.send_bytes(ws_update(b"from-b"))
            kind, upd = decode_ws(await recv_bin(a))
            assert (kind, upd["from_alias"], upd["body"]) == ("peer_update", wb["alias"], b"from-b")
            # Other members after the handshake are ignored and counted.
            await a.send_bytes(ws_identification(Identity.random(rng).address))
            await a.send_bytes(ws_update(b"after-ignored"))
            assert decode_ws(await recv_bin(b))[1]["body"] == b"after-ignored"
            assert server.stats()["rooms"]["messages_ignored"] == 1


@run_async
async def test_room_isolation(rng: random.Random) -> None:
    with serving() as server:
        async with aiohttp.ClientSession() as s:
            a, _ = await room_handshake(s, server.port, "one", Identity.random(rng))
            b, wb = await room_handshake(s, server.port, "two", Identity.random(rng))
            assert wb["peer_identities"] == []
            a2, _ = await room_handshake(s, server.port, "one", Identity.random(rng))
            await recv_bin(a)  # a2's join
            await b.send_bytes(ws_update(b"only-two"))
            await a2.send_bytes(ws_update(b"only-one"))
            assert decode_ws(await recv_bin(a))[1]["body"] == b"only-one"
            with pytest.raises(asyncio.TimeoutError):
                await b.receive(timeout=0.3)
            assert sorted(d["roomName"] for d in server.stats()["rooms"]["details"]) == [
                "one",
                "two",
            ]


@run_async
async def test_capacity_kick(rng: random.Random) -> None:
    with serving(rooms_max_users=2) as server:
        async with aiohttp.ClientSession() as s:
            keep = [await room_handshake(s, server.port, "small", Identity.random(rng))]
            keep.append(await room_handshake(s, server.port, "small", Identity.random(rng)))
            code, reason, seen = await rejected(
                server.port, "/rooms/small", [ws_identification(Identity.random(rng).address)]
            )
            assert seen == [("peer_kicked", {"reason": "This world is full. Try again later."})]
            assert (code, reason) == (4007, "room full: This world is full. Try again later.")
            keep.append(await room_handshake(s, server.port, "other", Identity.random(rng)))
            assert server.stats()["rooms"]["kicked_full"] == 1
            assert server.stats()["rooms"]["users"] == 3
            await still_serving(s, server.port, rng)


@run_async
async def test_duplicate_session_kicks_the_old_one(rng: random.Random) -> None:
    with serving() as server:
        me, other = Identity.random(rng), Identity.random(rng)
        async with aiohttp.ClientSession() as s:
            old, wold = await room_handshake(s, server.port, "a", me)
            watcher, _ = await room_handshake(s, server.port, "a", other)
            assert decode_ws(await recv_bin(old))[0] == "peer_join"
            # The second session (another room) sees already_connected.
            new = await s.ws_connect(f"http://127.0.0.1:{server.port}/rooms/b")
            await new.send_bytes(ws_identification(me.address))
            kind, ch = decode_ws(await recv_bin(new))
            assert (kind, ch["already_connected"]) == ("challenge", True)
            await new.send_bytes(ws_signed_challenge(me.chain(ch["challenge"])))
            assert decode_ws(await recv_bin(new))[0] == "welcome"
            kind, kicked = decode_ws(await recv_bin(old))
            assert kind == "peer_kicked" and "Already connected" in kicked["reason"]
            assert "This world is full" not in kicked["reason"]
            assert await recv_close(old) == (
                4006,
                "Already connected: a new session for this address replaced this one",
            )
            assert decode_ws(await recv_bin(watcher)) == ("peer_leave", {"alias": wold["alias"]})
            st = server.stats()["rooms"]
            assert st["users"] == 2 and st["kicked_duplicate"] == 1
            await still_serving(s, server.port, rng)


# --- access tokens ----------------------------------------------------------------------


@run_async
async def test_jwt_accepted_and_rejected(rng: random.Random) -> None:
    with serving(ws_room_secret=SECRET) as server:
        me = Identity.random(rng)
        async with aiohttp.ClientSession() as s:
            ws, _ = await room_handshake(
                s, server.port, "tok", me, query=f"?access_token={token(me.lower, 'tok')}"
            )
            await ws.close()
            cases = {
                "wrong_room": token(me.lower, "elsewhere"),
                "expired": token(me.lower, "tok", exp_in=-31),
                "bad_signature": token(
                    me.lower, "tok", secret="not-the-secret-0123456789abcdef0123"
                ),
                "malformed": "not-a-jwt",
                "unsupported_alg": jwt.encode(
                    {"sub": me.lower, "room": "tok", "exp": int(time.time()) + 60},
                    key=None,
                    algorithm="none",
                ),
            }
            for why, tok in cases.items():
                code, reason, _ = await rejected(server.port, f"/rooms/tok?access_token={tok}", [])
                assert (code, reason) == (4010, f"invalid access token: {why}"), why
            # Within the 30 s leeway an expired token is still accepted.
            ws, _ = await room_handshake(
                s,
                server.port,
                "tok",
                me,
                query=f"?access_token={token(me.lower, 'tok', exp_in=-5)}",
            )
            await ws.close()
            # The challenge must prove the token's subject.
            thief = Identity.random(rng)
            tws = await s.ws_connect(
                f"http://127.0.0.1:{server.port}/rooms/tok?access_token={token(me.lower, 'tok')}"
            )
            await tws.send_bytes(ws_identification(thief.address))
            _, ch = decode_ws(await recv_bin(tws))
            await tws.send_bytes(ws_signed_challenge(thief.chain(ch["challenge"])))
            assert await recv_close(tws) == (4003, "auth failed: address_mismatch")
            assert server.stats()["rooms"]["token_rejected"] == len(cases)
            await still_serving(s, server.port, rng)


@run_async
async def test_token_required(rng: random.Random) -> None:
    with serving(ws_room_secret=SECRET, ws_room_require_token=True) as server:
        me = Identity.random(rng)
        code, reason, _ = await rejected(server.port, "/rooms/r", [ws_identification(me.address)])
        assert (code, reason) == (4010, "invalid access token: missing")
        async with aiohttp.ClientSession() as s:
            q = f"?access_token={token(me.lower, 'r')}"
            ws, _ = await room_handshake(s, server.port, "r", me, query=q)
            await ws.close()


def signed_bytes(claims: bytes, secret: str = SECRET) -> str:
    """An HS256 token over exactly these claim bytes (valid JSON or not)."""

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    header = b'{"alg":"HS256","typ":"JWT"}'
    signing_input = f"{b64(header)}.{b64(claims)}"
    mac = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


@run_async
async def test_token_with_a_nul_byte_is_rejected_not_truncated(rng: random.Random) -> None:
    """Claims signed with the room secret but followed by a NUL and more bytes were read up
    to the NUL and the join accepted; a NUL anywhere in the token text (``%00``) too must
    never be cut off. Both: 4010 ``malformed``; the exact bytes without the NUL still join."""
    with serving(ws_room_secret=SECRET, ws_room_require_token=True) as server:
        me = Identity.random(rng)
        claims = json.dumps(
            {"sub": me.lower, "room": "r", "exp": int(time.time()) + 300}, separators=(",", ":")
        ).encode()
        good = signed_bytes(claims)
        for tok in (
            signed_bytes(claims + b"\0"),
            signed_bytes(claims + b'\0{"room":"other"}'),
            urllib.parse.quote(good + "\0", safe=".-_"),
            urllib.parse.quote(good + "\0" + good, safe=".-_"),
        ):
            path = f"/rooms/r?access_token={tok}"
            code, reason, _ = await rejected(server.port, path, [ws_identification(me.address)])
            assert (code, reason) == (4010, "invalid access token: malformed"), tok
        assert server.stats()["rooms"]["token_rejected"] == 4
        async with aiohttp.ClientSession() as s:
            ws, _ = await room_handshake(s, server.port, "r", me, query=f"?access_token={good}")
            await ws.close()


@run_async
async def test_token_without_configured_secret_is_rejected(rng: random.Random) -> None:
    with serving() as server:
        me = Identity.random(rng)
        path = f"/rooms/r?access_token={token(me.lower, 'r')}"
        code, reason, _ = await rejected(server.port, path, [])
        assert (code, reason) == (4010, "invalid access token: no_secret_configured")


# --- rejects ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "room",
    ["bad%20id", "a" * 129, "", "caf%C3%A9", "a/b", "semi;colon"],
)
@run_async
async def test_invalid_room_id(room: str, rng: random.Random) -> None:
    with serving() as server:
        code, reason, _ = await rejected(server.port, f"/rooms/{room}", [])
        assert (code, reason) == (4011, "invalid room id")
        async with aiohttp.ClientSession() as s:
            ws, _ = await room_handshake(
                s, server.port, "A-z0.9_:@x" + "y" * 118, Identity.random(rng)
            )
            await ws.close()
            await still_serving(s, server.port, rng)


@run_async
async def test_frame_cap(rng: random.Random) -> None:
    with serving() as server:
        async with aiohttp.ClientSession() as s:
            a, _ = await room_handshake(s, server.port, "cap", Identity.random(rng))
            b, _ = await room_handshake(s, server.port, "cap", Identity.random(rng))
            await recv_bin(a)
            # A frame of exactly 16384 bytes is accepted and relayed.
            frame = ws_update(b"x" * (16384 - 6))
            assert len(frame) == 16384
            await b.send_bytes(frame)
            assert len(decode_ws(await recv_bin(a))[1]["body"]) == 16384 - 6
            await b.send_bytes(ws_update(b"x" * (16384 - 5)))
            code, _ = await recv_close(b)
            assert code == 1009
            assert decode_ws(await recv_bin(a))[0] == "peer_leave"
            await still_serving(s, server.port, rng)


@run_async
async def test_undecodable_wrong_stage_invalid_address(rng: random.Random) -> None:
    with serving() as server:
        p = server.port
        me = Identity.random(rng)
        assert (await rejected(p, "/rooms/x", [b"\xff\xff\xff"]))[:2] == (
            1007,
            "Cannot decode WsPacket",
        )
        assert (await rejected(p, "/rooms/x", [ws_update(b"early")]))[:2] == (
            4000,
            "protocol violation: expected peer_identification",
        )
        c, r, seen = await rejected(p, "/rooms/x", [ws_identification(me.address)] * 2)
        assert [k for k, _ in seen] == ["challenge"]
        assert (c, r) == (4000, "protocol violation: expected signed_challenge_for_server")
        assert (await rejected(p, "/rooms/x", [ws_identification("0x1234")]))[:2] == (
            4002,
            "invalid address",
        )
        async with aiohttp.ClientSession() as s:
            await still_serving(s, p, rng)


@run_async
async def test_auth_failures(rng: random.Random) -> None:
    with serving() as server:
        me, other = Identity.random(rng), Identity.random(rng)

        async def attempt(chain_for: Any) -> tuple[int, str]:
            async with aiohttp.ClientSession() as s:
                ws = await s.ws_connect(f"http://127.0.0.1:{server.port}/rooms/auth")
                await ws.send_bytes(ws_identification(me.address))
                _, ch = decode_ws(await recv_bin(ws))
                await ws.send_bytes(ws_signed_challenge(chain_for(ch["challenge"])))
                return await recv_close(ws)

        assert await attempt(lambda c: me.chain(c, expired=True)) == (
            4003,
            "auth failed: ephemeral_expired",
        )
        assert await attempt(lambda c: me.chain(c, forged=True)) == (
            4003,
            "auth failed: signer_mismatch",
        )
        assert await attempt(lambda c: me.chain(c + "x")) == (
            4003,
            "auth failed: final_authority_mismatch",
        )
        assert await attempt(lambda c: other.chain(c)) == (4003, "auth failed: address_mismatch")
        assert await attempt(lambda c: "[not json") == (4003, "auth failed: json_invalid")
        assert server.stats()["rooms"]["auth_failed"] == 5
        async with aiohttp.ClientSession() as s:
            await still_serving(s, server.port, rng)


@run_async
async def test_handshake_timeout_per_stage(rng: random.Random) -> None:
    with serving(rooms_handshake_timeout_ms=300) as server:
        t0 = time.monotonic()
        assert (await rejected(server.port, "/rooms/t", []))[:2] == (4001, "handshake timeout")
        assert 0.25 < time.monotonic() - t0 < 5
        me = Identity.random(rng)
        c, r, seen = await rejected(server.port, "/rooms/t", [ws_identification(me.address)])
        assert (c, r, [k for k, _ in seen]) == (4001, "handshake timeout", ["challenge"])
        assert server.stats()["rooms"]["closed_timeout"] == 2
    # A completed session is not subject to the timer. A second server with a
    # longer timer: a whole handshake (two round trips and a signature in this
    # process) must fit in it on a loaded machine, and the sessions then outlive
    # it by half as much again.
    with serving(rooms_handshake_timeout_ms=2_000) as server:
        me = Identity.random(rng)
        async with aiohttp.ClientSession() as s:
            a, _ = await room_handshake(s, server.port, "t", me)
            b, _ = await room_handshake(s, server.port, "t", Identity.random(rng))
            await asyncio.sleep(3.0)
            await b.send_bytes(ws_update(b"late"))
            assert decode_ws(await recv_bin(a))[0] == "peer_join"
            assert decode_ws(await recv_bin(a))[1]["body"] == b"late"
        assert server.stats()["rooms"]["closed_timeout"] == 0


@run_async
async def test_frames_during_auth_are_queued(rng: random.Random) -> None:
    with serving() as server:
        async with aiohttp.ClientSession() as s:
            a, _wa = await room_handshake(s, server.port, "q", Identity.random(rng))
            me = Identity.random(rng)
            b = await s.ws_connect(f"http://127.0.0.1:{server.port}/rooms/q")
            await b.send_bytes(ws_identification(me.address))
            _, ch = decode_ws(await recv_bin(b))
            # Updates sent before the welcome arrives are handled after it.
            await b.send_bytes(ws_signed_challenge(me.chain(ch["challenge"])))
            await b.send_bytes(ws_update(b"eager"))
            assert decode_ws(await recv_bin(b))[0] == "welcome"
            assert decode_ws(await recv_bin(a))[0] == "peer_join"
            assert decode_ws(await recv_bin(a))[1]["body"] == b"eager"
            # More than 8 frames during the async step: protocol violation.
            other = Identity.random(rng)
            raw = await RawWs.connect(server.port, "/rooms/q")
            await raw.send(ws_identification(other.address))
            _, ch = decode_ws((await raw.recv())[1])
            # One TCP write: the 9 updates are read while the chain is verified.
            await raw.send(
                ws_signed_challenge(other.chain(ch["challenge"])), *[ws_update(b"f")] * 9
            )
            assert await raw.recv_close() == (
                4000,
                "protocol violation: too many frames during authentication",
            )
            raw.close()
            await still_serving(s, server.port, rng)


# --- backpressure -----------------------------------------------------------------------


@run_async
async def test_slow_receiver_drops_unreliable_then_closes_4008(rng: random.Random) -> None:
    soft, hard = 16 * 1024, 128 * 1024
    with serving(rooms_soft_limit_bytes=soft, rooms_hard_limit_bytes=hard) as server:
        async with aiohttp.ClientSession() as s:
            # The slow client has a tiny TCP window and stops reading.
            slow = await RawWs.connect(server.port, "/rooms/bp", rcvbuf=4096)
            wslow = await slow.handshake_room(Identity.random(rng))
            fast, _ = await room_handshake(s, server.port, "bp", Identity.random(rng))
            sender, wsend = await room_handshake(s, server.port, "bp", Identity.random(rng))
            await recv_bin(fast)  # sender's join
            body = b"u" * 1000
            burst = 8  # < soft per round: the fast reader never crosses it
            leaves: list[int] = []

            async def read_fast(n: int, unreliable: bool) -> None:
                for _ in range(n):
                    kind, upd = decode_ws(await recv_bin(fast))
                    if kind == "peer_leave":  # the slow one, closed mid-burst
                        leaves.append(upd["alias"])
                        kind, upd = decode_ws(await recv_bin(fast))
                    assert kind == "peer_update" and upd["unreliable"] is unreliable

            rounds = 0
            while server.stats()["rooms"]["unreliable_dropped"] == 0:
                for _ in range(burst):
                    await sender.send_bytes(ws_update(body, unreliable=True))
                await read_fast(burst, True)
                rounds += 1
                assert rounds < 5000
            # Reliable updates are queued for it until the hard limit, then 4008.
            seq = 0
            while server.stats()["rooms"]["closed_slow"] == 0:
                for _ in range(burst):
                    await sender.send_bytes(ws_update(seq.to_bytes(4, "big") + body))
                    seq += 1
                await read_fast(burst, False)
                assert seq < 100_000
            st = server.stats()["rooms"]
            assert st["closed_slow"] == 1 and st["unreliable_dropped"] >= 1
            # The slow client now drains: every reliable update it got is in
            # order without a gap, then the close frame says why.
            got: list[int] = []
            while True:
                op, data = await slow.recv()
                if op == 8:
                    break
                kind, upd = decode_ws(data)
                if kind == "peer_update" and not upd["unreliable"]:
                    got.append(int.from_bytes(upd["body"][:4], "big"))
            assert int.from_bytes(data[:2], "big") == 4008
            assert data[2:].decode() == f"receiver too slow: send queue over {hard} bytes"
            assert got and got == list(range(len(got)))  # nothing silently skipped
            slow.close()
            # The others keep going, and see the slow one leave.
            if not leaves:
                kind, leave = decode_ws(await recv_bin(fast))
                assert kind == "peer_leave"
                leaves.append(leave["alias"])
            assert leaves == [wslow["alias"]] and wsend["alias"] != wslow["alias"]
            await sender.send_bytes(ws_update(b"after"))
            assert decode_ws(await recv_bin(fast))[1]["body"] == b"after"


@run_async
async def test_sender_token_bucket_drops_unreliable_then_closes_4009(rng: random.Random) -> None:
    """transports.md 1.2: over the sender's bucket, unreliable updates are dropped
    (counted) and the first reliable one closes the sender 4009; others go on."""
    with serving(rooms_sender_max_msgs_per_s=5) as server:
        async with aiohttp.ClientSession() as s:
            a, _ = await room_handshake(s, server.port, "tb", Identity.random(rng))
            b, wb = await room_handshake(s, server.port, "tb", Identity.random(rng))
            await recv_bin(a)  # peer_join
            for i in range(8):  # a burst of 8 unreliable updates against a burst of 5
                await b.send_bytes(ws_update(bytes([i]), unreliable=True))
            got = [decode_ws(await recv_bin(a))[1]["body"] for _ in range(5)]
            assert got == [bytes([i]) for i in range(5)]
            stats = await asyncio.to_thread(server.stats)
            deadline = time.monotonic() + 5
            while stats["rooms"]["rate_dropped"] < 3:
                assert time.monotonic() < deadline, stats["rooms"]
                await asyncio.sleep(0.02)
                stats = await asyncio.to_thread(server.stats)
            assert stats["rooms"]["rate_dropped"] == 3
            await b.send_bytes(ws_update(b"reliable"))  # the bucket is still empty
            msg = await b.receive(timeout=5)
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), msg
            assert b.close_code == 4009 and "rate limit" in str(msg.extra)
            kind, leave = decode_ws(await recv_bin(a))
            assert kind == "peer_leave" and leave["alias"] == wb["alias"]
            assert server.stats()["rooms"]["closed_rate"] == 1
            await a.close()
            await still_serving(s, server.port, rng)  # a fresh pair within its own bucket


@run_async
async def test_sender_token_bucket_bytes_and_config_validation(rng: random.Random) -> None:
    with serving(rooms_sender_max_bytes_per_s=1000) as server:
        async with aiohttp.ClientSession() as s:
            a, _ = await room_handshake(s, server.port, "tbb", Identity.random(rng))
            b, _ = await room_handshake(s, server.port, "tbb", Identity.random(rng))
            await recv_bin(a)
            await b.send_bytes(ws_update(b"x" * 900))
            assert decode_ws(await recv_bin(a))[1]["body"] == b"x" * 900
            await b.send_bytes(ws_update(b"y" * 200))  # 100 bytes left: over
            msg = await b.receive(timeout=5)
            assert b.close_code == 4009, msg
            await a.close()
    with pytest.raises(errors.ConfigError):
        Server(ServerConfig(rooms_sender_max_msgs_per_s=-1))


@run_async
async def test_multiple_io_threads(rng: random.Random) -> None:
    with serving(io_threads=2, auth_threads=2) as server:
        async with aiohttp.ClientSession() as s:
            members = [
                await room_handshake(s, server.port, "mt", Identity.random(rng)) for _ in range(6)
            ]
            for i, (ws, _) in enumerate(members):  # joins of the later members
                for _ in range(len(members) - 1 - i):
                    assert decode_ws(await recv_bin(ws))[0] == "peer_join"
            for ws, _ in members:
                for k in range(20):
                    await ws.send_bytes(ws_update(k.to_bytes(2, "big")))
            aliases = {w["alias"] for _, w in members}
            for ws, w in members:
                seen: dict[int, list[int]] = {}
                for _ in range(20 * (len(members) - 1)):
                    kind, upd = decode_ws(await recv_bin(ws))
                    assert kind == "peer_update"
                    seen.setdefault(upd["from_alias"], []).append(
                        int.from_bytes(upd["body"], "big")
                    )
                assert set(seen) == aliases - {w["alias"]}
                assert all(v == list(range(20)) for v in seen.values())  # per-sender order


@run_async
async def test_burst_coalesced_per_turn_arrives_whole_and_in_order(rng: random.Random) -> None:
    """Frames queued to one socket in one I/O loop turn go out as one write (corking): a burst
    of updates of mixed sizes (one frame header form each: 7-bit, 16-bit and 64-bit lengths)
    reaches every receiver whole, in order, with nothing lost."""
    # Limits high enough that a receiver slowed by a loaded machine is never closed 4008.
    with serving(max_frame_bytes=80_000, rooms_hard_limit_bytes=64 << 20) as server:
        async with aiohttp.ClientSession() as s:
            a, wa = await room_handshake(s, server.port, "burst", Identity.random(rng))
            b, _ = await room_handshake(s, server.port, "burst", Identity.random(rng))
            c, _ = await room_handshake(s, server.port, "burst", Identity.random(rng))
            for _ in range(2):
                assert decode_ws(await recv_bin(a))[0] == "peer_join"
            assert decode_ws(await recv_bin(b))[0] == "peer_join"
            sizes = [
                rng.choice([1, 100, 125, 126, 4000, 65_535, 65_536, 70_000]) for _ in range(150)
            ]
            bodies = [i.to_bytes(4, "big") + rng.randbytes(n) for i, n in enumerate(sizes)]
            delivered0 = server.stats()["rooms"]["updates_delivered"]
            await asyncio.gather(*(a.send_bytes(ws_update(body)) for body in bodies))
            for ws in (b, c):
                for body in bodies:
                    kind, upd = decode_ws(await recv_bin(ws))
                    assert (kind, upd["from_alias"], upd["body"]) == (
                        "peer_update",
                        wa["alias"],
                        body,
                    )
            st = server.stats()["rooms"]
            assert st["updates_delivered"] - delivered0 == 2 * len(bodies)
            assert st["unreliable_dropped"] == 0 and st["closed_slow"] == 0


@run_async
async def test_client_pings_answered_in_order_with_updates(rng: random.Random) -> None:
    """A client's ping is answered through the session's own send path (the corked writes):
    each pong carries its ping's payload, pongs and updates interleave on one socket, and
    both arrive whole and in order."""
    with serving() as server:
        async with aiohttp.ClientSession() as s:
            a, _ = await room_handshake(s, server.port, "pp", Identity.random(rng))
            raw = await RawWs.connect(server.port, "/rooms/pp")
            await raw.handshake_room(Identity.random(rng))
            assert decode_ws(await recv_bin(a))[0] == "peer_join"
            for i in range(3):
                await a.send_bytes(ws_update(bytes([i])))
                raw.writer.write(client_frame(b"p" + bytes([i]), opcode=9))  # a ping
                await raw.writer.drain()
            got: list[tuple[int, bytes]] = []
            while len(got) < 6:
                op, data = await raw.recv()
                got.append((op, data if op == 10 else decode_ws(data)[1]["body"]))
            assert [d for op, d in got if op == 10] == [b"p\x00", b"p\x01", b"p\x02"]
            assert [d for op, d in got if op == 2] == [b"\x00", b"\x01", b"\x02"]
            raw.close()


def fragmented(payload: bytes) -> bytes:
    """A binary message in two frames: the first not final (FIN clear), then a continuation."""
    half = len(payload) // 2
    first = client_frame(payload[:half])
    return bytes([first[0] & 0x7F]) + first[1:] + client_frame(payload[half:], opcode=0)


@run_async
async def test_room_frames_read_directly_then_by_websocketpp_in_order(rng: random.Random) -> None:
    """A room session's plain frames (final, masked, binary; pongs) are read by its connection
    (fast_read.hpp): split anywhere across segments, many in one segment, pongs between them.
    From a frame it leaves to websocketpp (a fragmented message; then a ping, a frame bigger than
    the read buffer) websocketpp reads the connection, and every update arrives once, whole, in
    order. A session whose first frame is such a big one is read by websocketpp from there."""
    with serving(max_frame_bytes=80_000, rooms_hard_limit_bytes=64 << 20) as server:
        async with aiohttp.ClientSession() as s:
            a, _ = await room_handshake(s, server.port, "direct", Identity.random(rng))
            raw = await RawWs.connect(server.port, "/rooms/direct")
            await raw.handshake_room(Identity.random(rng))
            assert decode_ws(await recv_bin(a))[0] == "peer_join"
            direct0 = server.stats()["server"]["frames_read_direct"]
            sizes = [rng.choice([0, 98, 123, 124, 3000]) for _ in range(60)]
            sizes[45] = 20_000  # over websocketpp's 16 KiB read buffer
            bodies = [i.to_bytes(2, "big") + rng.randbytes(n) for i, n in enumerate(sizes)]
            frames = [client_frame(ws_update(b)) for b in bodies]
            pong = client_frame(b"pong", opcode=10)

            async def received(n: int) -> list[bytes]:
                return [decode_ws(await recv_bin(a))[1]["body"] for _ in range(n)]

            for byte in b"".join(frames[:10]):  # one byte per write
                raw.writer.write(bytes([byte]))
                await raw.writer.drain()
            raw.writer.write(b"".join(f + pong for f in frames[10:30]))
            await raw.writer.drain()
            assert await received(30) == bodies[:30]
            assert server.stats()["server"]["frames_read_direct"] - direct0 == 30
            rest = frames[30] + fragmented(ws_update(bodies[31])) + frames[32]
            rest += client_frame(b"ping", opcode=9) + b"".join(frames[33:])
            raw.writer.write(rest)
            await raw.writer.drain()
            assert await received(30) == bodies[30:]
            assert server.stats()["server"]["frames_read_direct"] - direct0 == 31
            assert await raw.recv() == (10, b"ping")  # its own updates are not echoed
            raw.close()
            assert decode_ws(await recv_bin(a))[0] == "peer_leave"

            big = await RawWs.connect(server.port, "/rooms/direct")
            await big.handshake_room(Identity.random(rng))
            assert decode_ws(await recv_bin(a))[0] == "peer_join"
            direct0 = server.stats()["server"]["frames_read_direct"]
            big.writer.write(frames[45] + b"".join(frames[:5]))
            await big.writer.drain()
            assert await received(6) == [bodies[45], *bodies[:5]]
            assert server.stats()["server"]["frames_read_direct"] == direct0
            big.close()


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        (bytes([0x82, 0x03]) + b"abc", 1002),  # unmasked
        (bytes([0xC2, 0x83]) + bytes(4) + b"abc", 1002),  # a reserved bit
        # A length not minimally encoded: websocketpp's code for it is 1011.
        (bytes([0x82, 0xFE, 0x00, 0x03]) + bytes(4) + b"abc", 1011),
    ],
    ids=["unmasked", "reserved-bit", "non-minimal-length"],
)
@run_async
async def test_protocol_errors_after_directly_read_frames_close_the_session(
    bad: bytes, code: int, rng: random.Random
) -> None:
    """A frame websocketpp rejects, after frames the connection read itself, still closes the
    session with websocketpp's code, once the frames before it were relayed."""
    with serving() as server:
        async with aiohttp.ClientSession() as s:
            a, _ = await room_handshake(s, server.port, "bad", Identity.random(rng))
            raw = await RawWs.connect(server.port, "/rooms/bad")
            await raw.handshake_room(Identity.random(rng))
            assert decode_ws(await recv_bin(a))[0] == "peer_join"
            raw.writer.write(client_frame(ws_update(b"before")) + bad)
            await raw.writer.drain()
            assert decode_ws(await recv_bin(a))[1]["body"] == b"before"
            assert (await raw.recv_close())[0] == code
            raw.close()
            await still_serving(s, server.port, rng)


@run_async
async def test_receiver_with_full_socket_gets_everything_in_order(rng: random.Random) -> None:
    """A receiver that stops reading fills its socket: what the socket does not take waits in
    the server's queue and later frames queue behind it. Once it reads again it gets every
    update whole and in order (below the hard limit nothing is dropped or closed)."""
    with serving(rooms_hard_limit_bytes=64 << 20, rooms_soft_limit_bytes=32 << 20) as server:
        async with aiohttp.ClientSession() as s:
            a, _ = await room_handshake(s, server.port, "full", Identity.random(rng))
            slow = await RawWs.connect(server.port, "/rooms/full", rcvbuf=4096)
            await slow.handshake_room(Identity.random(rng))
            assert decode_ws(await recv_bin(a))[0] == "peer_join"
            body = rng.randbytes(3000)
            n = 600  # ~1.8 MB: far over what a 4 KiB window and the send buffer hold
            for i in range(n):
                await a.send_bytes(ws_update(i.to_bytes(4, "big") + body))
            while server.stats()["rooms"]["updates_received"] < n:
                await asyncio.sleep(0.05)
            got = []
            while len(got) < n:
                op, data = await slow.recv()
                kind, upd = decode_ws(data)
                assert op == 2 and kind == "peer_update" and upd["body"][4:] == body
                got.append(int.from_bytes(upd["body"][:4], "big"))
            assert got == list(range(n))
            st = server.stats()["rooms"]
            assert st["closed_slow"] == 0 and st["unreliable_dropped"] == 0
            slow.close()


@run_async
async def test_split_upgrade_head_is_served_from_the_listening_thread(rng: random.Random) -> None:
    """io_threads 3: an upgrade whose head is not whole in its first segment is read by
    websocketpp on the listening thread (there was no whole request line to route by), so its
    socket does not move to its room's shard; its room still relays (under the shard's lock).
    The same rooms joined with whole heads do move."""
    with serving(io_threads=3, auth_threads=2) as server:
        rooms = [f"split-{i}" for i in range(8)]
        socks = await asyncio.gather(
            *(
                RawWs.connect(server.port, f"/rooms/{r}", split_after=0.5)
                for r in rooms
                for _ in range(2)
            )
        )
        try:
            assert server.stats()["server"]["sockets_moved_to_shards"] == 0
            for i in range(len(rooms)):
                a, b = socks[2 * i], socks[2 * i + 1]
                await a.handshake_room(Identity.random(rng))
                wb = await b.handshake_room(Identity.random(rng))
                kind, join = decode_ws((await a.recv())[1])
                assert kind == "peer_join" and join["alias"] == wb["alias"]
                await b.send(ws_update(f"via-{i}".encode()))
                kind, upd = decode_ws((await a.recv())[1])
                assert (kind, upd["body"]) == ("peer_update", f"via-{i}".encode())
            async with aiohttp.ClientSession() as s:
                for r in rooms:
                    ws, _ = await room_handshake(s, server.port, r, Identity.random(rng))
                    await ws.close()
            assert server.stats()["server"]["sockets_moved_to_shards"] > 0
        finally:
            for w in socks:
                w.close()


@pytest.mark.parametrize("keep_alive_ms", [5000, 0])
@run_async
async def test_rooms_sharded_over_io_threads(rng: random.Random, keep_alive_ms: int) -> None:
    """io_threads 3: rooms are spread over 3 shards (one lock each, a room in one). The
    duplicate rule spans the shards (the older session, wherever it is, gets peer_kicked and
    4006; the newer one's challenge says already_connected), relays stay within their room,
    and stats() sums every shard. With keep-alive on (the default) the socket of a room in
    shard 1 or 2 moves to that shard's own thread before its upgrade is read; with it off
    every socket stays on the listening thread (each room still under its shard's lock)."""
    with serving(io_threads=3, auth_threads=2, http_keep_alive_ms=keep_alive_ms) as server:
        me = Identity.random(rng)
        async with aiohttp.ClientSession() as s:
            rooms = [f"shard-{i}" for i in range(8)]
            idents = [Identity.random(rng) for _ in rooms]
            watchers = [
                await room_handshake(s, server.port, r, idents[i]) for i, r in enumerate(rooms)
            ]
            old: tuple[aiohttp.ClientWebSocketResponse, dict[str, Any]] | None = None
            for i, room in enumerate(rooms):
                ws = await s.ws_connect(f"http://127.0.0.1:{server.port}/rooms/{room}")
                await ws.send_bytes(ws_identification(me.address))
                kind, ch = decode_ws(await recv_bin(ws))
                assert (kind, ch["already_connected"]) == ("challenge", old is not None)
                await ws.send_bytes(ws_signed_challenge(me.chain(ch["challenge"])))
                kind, welcome = decode_ws(await recv_bin(ws))
                assert kind == "welcome"
                watcher = watchers[i][0]
                assert decode_ws(await recv_bin(watcher)) == (
                    "peer_join",
                    {"alias": welcome["alias"], "address": me.address.lower()},
                )
                if old is not None:
                    kind, kicked = decode_ws(await recv_bin(old[0]))
                    assert kind == "peer_kicked" and "Already connected" in kicked["reason"]
                    assert (await recv_close(old[0]))[0] == 4006
                    assert decode_ws(await recv_bin(watchers[i - 1][0])) == (
                        "peer_leave",
                        {"alias": old[1]["alias"]},
                    )
                old = (ws, welcome)
            # Every room relays its own updates only; the embedder's room calls reach the
            # room's shard and its tap events reach the one event queue.
            for r in rooms:
                server.set_room_tap(r, True)
            await asyncio.sleep(0.2)  # the taps are posted to the I/O threads
            for i, (w, _) in enumerate(watchers):
                await w.send_bytes(ws_update(f"room-{i}".encode()))
            kind, upd = decode_ws(await recv_bin(old[0]))
            assert (kind, upd["body"]) == ("peer_update", f"room-{len(rooms) - 1}".encode())
            tapped: dict[str, str] = {}
            deadline = time.monotonic() + 10
            while len(tapped) < len(rooms) and time.monotonic() < deadline:
                for ev in server.poll():
                    if isinstance(ev, RoomMessage):
                        tapped[ev.room] = ev.sender
                await asyncio.sleep(0.05)
            assert tapped == {r: idents[i].address.lower() for i, r in enumerate(rooms)}
            server.inject_room(rooms[0], "0x" + "ab" * 20, b"injected", False)
            kind, join = decode_ws(await recv_bin(watchers[0][0]))
            assert kind == "peer_join" and join["address"] == "0x" + "ab" * 20
            kind, upd = decode_ws(await recv_bin(watchers[0][0]))
            assert (kind, upd["body"], upd["from_alias"]) == (
                "peer_update",
                b"injected",
                join["alias"],
            )
            st = server.stats()["rooms"]
            assert st["users"] == len(rooms) + 1 and st["rooms"] == len(rooms)
            assert st["kicked_duplicate"] == len(rooms) - 1 and st["welcomed"] == 2 * len(rooms)
            assert sorted(d["roomName"] for d in st["details"]) == sorted(rooms)
            moved = server.stats()["server"]["sockets_moved_to_shards"]
            if keep_alive_ms:
                assert 0 < moved < 2 * len(rooms)  # not the rooms of shard 0
            else:
                assert moved == 0
            await still_serving(s, server.port, rng)
