"""dclcomms.client against a real in-process realm on 127.0.0.1 (real keys, real rooms).

Identities derive from fixed seeds (``Identity.generate(seed)``), so failures reproduce.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from dclcomms import codec
from dclcomms.auth import Identity
from dclcomms.client import (
    CommunicationsDirector,
    Disconnection,
    IslandChanged,
    LiveKitAdapter,
    Message,
    OfflineAdapter,
    PeerDisconnected,
    TransportError,
    WsRoomAdapter,
    choose_adapter,
    create_adapter,
    parse_connection_string,
    ws_url,
)
from dclcomms.config import RealmConfig
from dclcomms.realm import Realm
from tests.helpers.common import free_port, realm_config, run, start_app


def config(**kw: Any) -> RealmConfig:
    # these tests open rooms directly (room()), not through an island's token:
    # the compatibility mode
    return realm_config(**{"ws_room_allow_missing_token": True, **kw})


async def eventually(predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.02)


def room(realm: Realm, name: str) -> str:
    return f"ws-room:ws://127.0.0.1:{realm.port}/rooms/{name}"


def record(adapter: Any) -> dict[str, list[Any]]:
    seen: dict[str, list[Any]] = {"message": [], "PEER_DISCONNECTED": [], "DISCONNECTION": []}
    seen["error"] = []
    for name, items in seen.items():
        adapter.on(name, items.append)
    return seen


# --- connection strings -----------------------------------------------------------


def test_prefix_dispatch_picks_the_adapter_and_keeps_the_url() -> None:
    me = Identity.generate(1)
    a = create_adapter("ws-room:rooms.example.org/rooms/I7?access_token=abc.def", me)
    assert isinstance(a, WsRoomAdapter)
    assert a.url == "wss://rooms.example.org/rooms/I7?access_token=abc.def"
    b = create_adapter("ws-room:ws://127.0.0.1:9/rooms/x", me)
    assert isinstance(b, WsRoomAdapter) and b.url == "ws://127.0.0.1:9/rooms/x"
    lk = create_adapter("livekit:wss://lk.example.org?access_token=tok.en.x", me)
    assert isinstance(lk, LiveKitAdapter)
    assert (lk.host, lk.token) == ("wss://lk.example.org", "tok.en.x")
    lk2 = create_adapter("livekit:lk.example.org?access_token=t", me)
    assert isinstance(lk2, LiveKitAdapter) and lk2.host == "wss://lk.example.org"
    assert isinstance(create_adapter("offline:offline", me), OfflineAdapter)
    fixed = create_adapter("fixed-adapter:ws-room:r.example/rooms/lobby", me)
    assert isinstance(fixed, WsRoomAdapter) and fixed.url == "wss://r.example/rooms/lobby"
    assert parse_connection_string("LiveKit:x") == ("livekit", "x")


@pytest.mark.parametrize(
    ("conn_str", "code"),
    [
        ("carrier-pigeon:coop/7", "unknown_protocol"),
        ("no connection string", "bad_connection_string"),
        ("1abc:x", "bad_connection_string"),
        ("signed-login:https://worlds.example/get-comms-adapter/w", "unsupported_protocol"),
        ("p2p:I1:0xabc", "bus_unavailable"),  # P2P signals through a /bus session
        ("livekit:wss://lk.example.org", "bad_connection_string"),
        ("ws-room:", "bad_connection_string"),
    ],
)
def test_bad_and_unknown_connection_strings_raise_typed_errors(conn_str: str, code: str) -> None:
    with pytest.raises(TransportError) as e:
        create_adapter(conn_str, Identity.generate(2))
    assert e.value.code == code


def test_choose_adapter_follows_the_client_rule() -> None:
    arch = "archipelago:archipelago:ws://h/ws"
    assert choose_adapter({"comms": {"adapter": arch, "fixedAdapter": "x:y"}}) == arch
    assert choose_adapter({"comms": {"fixedAdapter": "ws-room:h/rooms/a"}}) == "ws-room:h/rooms/a"
    assert choose_adapter({"comms": {"adapter": "fixed-adapter:offline:offline"}}) == (
        "offline:offline"
    )
    assert choose_adapter({"comms": {}}) == "offline:offline"
    assert choose_adapter({}) == "offline:offline"
    unhealthy = {"comms": {"protocol": "v3", "healthy": False, "adapter": arch}}
    assert choose_adapter(unhealthy) == "offline:offline"


def test_livekit_with_nothing_listening_is_a_typed_error() -> None:
    async def body() -> None:
        port = free_port()
        lk = create_adapter(
            f"livekit:ws://127.0.0.1:{port}?access_token=x.y.z", Identity.generate(3)
        )
        with pytest.raises(TransportError) as e:
            await lk.connect()
        assert e.value.code == "livekit_unreachable"
        assert not lk.connected
        with pytest.raises(TransportError) as e2:
            await lk.send(b"x", reliable=True)
        assert e2.value.code == "not_connected"

    run(body)


def test_livekit_answering_without_webrtc_is_a_distinct_error() -> None:
    """A WebSocket endpoint at /rtc (a stand-in LiveKit signal server) answers."""

    async def body() -> None:
        tokens: list[str] = []

        async def rtc(request: web.Request) -> web.WebSocketResponse:
            tokens.append(request.query.get("access_token", ""))
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            await ws.close()
            return ws

        app = web.Application()
        app.router.add_get("/rtc", rtc)
        runner, port = await start_app(app)
        try:
            lk = create_adapter(
                f"livekit:ws://127.0.0.1:{port}?access_token=a.b.c", Identity.generate(5)
            )
            with pytest.raises(TransportError) as e:
                await lk.connect()
            assert e.value.code == "livekit_unsupported"
            assert tokens == ["a.b.c"]
        finally:
            await runner.cleanup()

    run(body)


def test_offline_adapter_accepts_sends_and_disconnects_cleanly() -> None:
    async def body() -> None:
        off = create_adapter("offline:offline", Identity.generate(4))
        seen = record(off)
        await off.connect()
        assert off.connected
        await off.send(b"into the void", reliable=True)
        assert off.messages_sent == 1
        await off.disconnect()
        await off.disconnect()  # once only
        assert seen["DISCONNECTION"] == [Disconnection(kicked=False, error=None)]
        assert seen["message"] == []

    run(body)


# --- ws-room ----------------------------------------------------------------------


def test_ws_room_maps_aliases_relays_and_reports_leaves() -> None:
    async def body() -> None:
        async with Realm(config()) as realm:
            ida, idb, idc = (Identity.generate(s) for s in (10, 11, 12))
            a = WsRoomAdapter(room(realm, "plaza"), ida)
            await a.connect()
            seen_a = record(a)
            assert a.peers == [] and a.alias is not None
            b = WsRoomAdapter(room(realm, "plaza"), idb)
            await b.connect()
            seen_b = record(b)
            assert b.peers == [ida.address.lower()]  # from welcome
            await eventually(lambda: a.peers == [idb.address.lower()])  # from peer_join
            c = WsRoomAdapter(room(realm, "plaza"), idc)
            await c.connect()
            assert sorted(c.peers) == sorted([ida.address.lower(), idb.address.lower()])
            assert b.alias not in (a.alias, c.alias)

            await b.send(b"\x00hello", reliable=True)
            await c.send(b"unreliable", reliable=False)
            await eventually(lambda: len(seen_a["message"]) == 2)
            assert sorted(seen_a["message"], key=lambda m: m.data) == [
                Message(idb.address.lower(), b"\x00hello"),
                Message(idc.address.lower(), b"unreliable"),
            ]
            await eventually(lambda: len(seen_b["message"]) == 1)
            assert seen_b["message"] == [Message(idc.address.lower(), b"unreliable")]

            await c.disconnect()
            await eventually(lambda: seen_a["PEER_DISCONNECTED"])
            assert seen_a["PEER_DISCONNECTED"] == [PeerDisconnected(idc.address.lower())]
            await eventually(lambda: seen_b["PEER_DISCONNECTED"])
            assert a.peers == [idb.address.lower()]
            assert seen_a["error"] == [] and a.protocol_errors == 0
            await a.disconnect()
            await b.disconnect()
            assert seen_a["DISCONNECTION"] == [Disconnection(kicked=False, error=None)]

    run(body)


def test_ws_room_kick_on_duplicate_session_emits_disconnection_kicked() -> None:
    async def body() -> None:
        async with Realm(config()) as realm:
            me = Identity.generate(20)
            first = WsRoomAdapter(room(realm, "one"), me)
            await first.connect()
            seen = record(first)
            second = WsRoomAdapter(room(realm, "two"), me)
            await second.connect()
            await eventually(lambda: seen["DISCONNECTION"])
            [gone] = seen["DISCONNECTION"]
            assert gone.kicked is True
            assert isinstance(gone.error, TransportError)
            assert gone.error.close_code == 4006 and gone.error.code == "connect_failed"
            assert not first.connected and second.connected
            with pytest.raises(TransportError) as e:
                await first.send(b"x", reliable=True)
            assert e.value.code == "not_connected"
            await second.disconnect()

    run(body)


def test_ws_room_full_room_is_a_handshake_error_with_the_close_code() -> None:
    async def body() -> None:
        async with Realm(config(rooms_max_users=1)) as realm:
            a = WsRoomAdapter(room(realm, "tiny"), Identity.generate(30))
            await a.connect()
            b = WsRoomAdapter(room(realm, "tiny"), Identity.generate(31))
            with pytest.raises(TransportError) as e:
                await b.connect()
            assert (e.value.code, e.value.close_code) == ("handshake_failed", 4007)
            assert "full" in str(e.value)
            await a.disconnect()

    run(body)


def test_ws_room_bad_token_and_nothing_listening() -> None:
    async def body() -> None:
        async with Realm(config(ws_room_require_token=True)) as realm:
            a = WsRoomAdapter(room(realm, "locked") + "?access_token=forged", Identity.generate(40))
            with pytest.raises(TransportError) as e:
                await a.connect()
            assert (e.value.code, e.value.close_code) == ("handshake_failed", 4010)
        nobody = WsRoomAdapter(
            f"ws-room:ws://127.0.0.1:{free_port()}/rooms/x", Identity.generate(41)
        )
        with pytest.raises(TransportError) as e2:
            await nobody.connect()
        assert e2.value.code == "connect_failed"

    run(body)


def test_ws_room_protocol_errors_are_reported_not_fatal() -> None:
    """A misbehaving room server (aiohttp stand-in): unknown alias, garbage, text frame."""

    async def body() -> None:
        async def rooms(request: web.Request) -> web.WebSocketResponse:
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            await ws.receive()  # peer_identification
            await ws.send_bytes(
                codec.encode(codec.WS_PACKET, {"challengeMessage": {"challengeToSign": "dcl-x"}})
            )
            await ws.receive()  # signed challenge (not verified by this stand-in)
            welcome = {"alias": 2, "peerIdentities": {"1": "0xaa"}}
            await ws.send_bytes(codec.encode(codec.WS_PACKET, {"welcomeMessage": welcome}))
            await ws.send_bytes(
                codec.encode(codec.WS_PACKET, {"peerUpdateMessage": {"fromAlias": 9, "body": b"?"}})
            )
            await ws.send_bytes(b"\xff\xff\xff")  # undecodable
            await ws.send_str("text")
            await ws.send_bytes(
                codec.encode(
                    codec.WS_PACKET, {"peerUpdateMessage": {"fromAlias": 1, "body": b"ok"}}
                )
            )
            await ws.receive()  # until the client leaves
            return ws

        app = web.Application()
        app.router.add_get("/rooms/{room}", rooms)
        runner, port = await start_app(app)
        try:
            a = WsRoomAdapter(f"ws-room:ws://127.0.0.1:{port}/rooms/r", Identity.generate(45))
            seen = record(a)
            await a.connect()
            await eventually(lambda: seen["message"])
            assert seen["message"] == [Message("0xaa", b"ok")]
            codes = [getattr(e, "code", None) for e in seen["error"]]
            assert codes == ["protocol_error", "truncated", "protocol_error"], seen["error"]
            assert a.protocol_errors == 3 and a.connected
            await a.disconnect()
        finally:
            await runner.cleanup()

    run(body)


def test_ws_room_undecodable_or_wrong_handshake_frames_are_handshake_failed() -> None:
    async def body() -> None:
        async def rooms(request: web.Request) -> web.WebSocketResponse:
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            await ws.receive()  # peer_identification
            if request.match_info["room"] == "garbage":
                await ws.send_bytes(b"\x0a\xff")  # truncated length-delimited field
            else:  # a welcome before any challenge
                await ws.send_bytes(codec.encode(codec.WS_PACKET, {"welcomeMessage": {"alias": 1}}))
            await ws.receive()
            return ws

        app = web.Application()
        app.router.add_get("/rooms/{room}", rooms)
        runner, port = await start_app(app)
        try:
            for name in ("garbage", "early-welcome"):
                a = WsRoomAdapter(
                    f"ws-room:ws://127.0.0.1:{port}/rooms/{name}", Identity.generate(46)
                )
                with pytest.raises(TransportError) as e:
                    await a.connect()
                assert e.value.code == "handshake_failed", name
                assert not a.connected
        finally:
            await runner.cleanup()

    run(body)


def test_ws_room_delivers_nothing_after_disconnect_starts() -> None:
    """Frames already buffered in the socket when disconnect() begins are dropped."""

    async def body() -> None:
        async with Realm(config()) as realm:
            a = WsRoomAdapter(room(realm, "flood"), Identity.generate(50))
            b = WsRoomAdapter(room(realm, "flood"), Identity.generate(51))
            await a.connect()
            await b.connect()
            got: list[tuple[bool, Message]] = []
            a.on("message", lambda m: got.append((a_closing[0], m)))
            a_closing = [False]
            for i in range(200):
                await b.send(i.to_bytes(2, "big"), reliable=True)
            await eventually(lambda: len(got) >= 1)
            a_closing[0] = True
            await a.disconnect()
            n = len(got)
            await asyncio.sleep(0.2)
            assert len(got) == n
            assert all(not closing for closing, _ in got)
            await b.disconnect()

    run(body)


# --- director ---------------------------------------------------------------------


class Walker:
    """A mutable position source."""

    def __init__(self, x: float, z: float) -> None:
        self.pos = (x, 0.0, z)

    def __call__(self) -> tuple[float, float, float]:
        return self.pos


def test_director_end_to_end_swaps_transport_without_leaks() -> None:
    async def body() -> None:
        # Tokens required: the director must pass ?access_token= through untouched.
        async with Realm(config(ws_room_require_token=True)) as realm:
            ida, idb = Identity.generate(60), Identity.generate(61)
            wa, wb = Walker(0.0, 0.0), Walker(2.0, 2.0)
            opts = {"heartbeat_interval_s": 0.1}
            async with (
                CommunicationsDirector(realm.url, ida, position=wa, **opts) as da,
                CommunicationsDirector(realm.url, idb, position=wb, **opts) as db,
            ):
                assert da.realm_adapter is not None
                assert da.realm_adapter.startswith("archipelago:archipelago:ws://127.0.0.1")
                assert da.peer_id == ida.address.lower()
                got_b: list[tuple[str | None, Message]] = []
                db.on("message", lambda m: got_b.append((db.island_id, m)))
                changes_b: list[IslandChanged] = []
                db.on("island_changed", changes_b.append)
                left_a: list[PeerDisconnected] = []
                da.on("PEER_DISCONNECTED", left_a.append)
                await eventually(
                    lambda: (
                        da.island_id is not None
                        and da.island_id == db.island_id
                        and isinstance(db.adapter, WsRoomAdapter)
                        and isinstance(da.adapter, WsRoomAdapter)
                        and db.adapter.peers == [ida.address.lower()]
                    )
                )
                shared = da.island_id
                assert set(db.peers) >= {ida.address.lower(), idb.address.lower()}
                pkt = codec.encode(codec.RFC4_PACKET, {"chat": {"message": "hi", "timestamp": 1.0}})
                assert await da.send(pkt, reliable=True)
                await eventually(lambda: got_b)
                assert got_b[0] == (shared, Message(ida.address.lower(), pkt))

                # b walks away: new island, new room; a keeps talking all the while
                wb.pos = (1500.0, 0.0, 1500.0)
                sending = True

                async def chatter() -> None:
                    i = 0
                    while sending:
                        await da.send(i.to_bytes(4, "big"), reliable=False)
                        i += 1
                        await asyncio.sleep(0.005)

                task = asyncio.create_task(chatter())
                await eventually(lambda: db.island_id not in (None, shared), timeout=10)
                await eventually(lambda: isinstance(db.adapter, WsRoomAdapter))
                await eventually(lambda: left_a == [PeerDisconnected(idb.address.lower())])
                await asyncio.sleep(0.3)
                sending = False
                await task
                assert db.island_changes >= 2 and changes_b[-1].from_island_id == shared
                leaked = [(isl, m) for isl, m in got_b if isl != shared]
                assert leaked == []
                assert db.protocol_errors == 0 and da.protocol_errors == 0
                assert da.handshakes == db.handshakes == 1

                # and back again: messages flow in the shared island once more
                wb.pos = (1.0, 0.0, 1.0)
                await eventually(lambda: db.island_id == da.island_id, timeout=10)
                await eventually(
                    lambda: (
                        isinstance(db.adapter, WsRoomAdapter)
                        and db.adapter.peers == [ida.address.lower()]
                    )
                )
                n = len(got_b)
                assert await da.send(b"again", reliable=True)
                await eventually(lambda: len(got_b) > n)
                assert got_b[-1][1] == Message(ida.address.lower(), b"again")

    run(body)


def test_director_rapid_island_changes_keep_one_transport_and_the_latest_wins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Five island_changed in a burst (fed to the director's packet handler)."""

    async def body() -> None:
        live: list[WsRoomAdapter] = []
        most_connected = [0]
        original = WsRoomAdapter.connect

        async def connect(self: WsRoomAdapter) -> None:
            await original(self)
            live.append(self)
            most_connected[0] = max(most_connected[0], sum(a.connected for a in live))

        monkeypatch.setattr(WsRoomAdapter, "connect", connect)

        async def no_heartbeats() -> Any:  # no real island: only the injected ones
            return
            yield

        async with (
            Realm(config()) as realm,
            CommunicationsDirector(realm.url, Identity.generate(97), position=no_heartbeats()) as d,
        ):
            seen: list[IslandChanged] = []
            d.on("island_changed", seen.append)
            for i in range(5):
                change = {"islandId": f"S{i}", "connStr": room(realm, f"s{i}"), "peers": {}}
                await d._on_server_packet({"islandChanged": change})
                if i == 0:  # the first swap starts; the others queue behind it
                    await asyncio.sleep(0)
            await eventually(lambda: d.island_id == "S4" and isinstance(d.adapter, WsRoomAdapter))
            assert isinstance(d.adapter, WsRoomAdapter) and d.adapter.url.endswith("/rooms/s4")
            assert most_connected[0] == 1
            assert sum(a.connected for a in live) == 1
            assert seen[0].island_id == "S0" and seen[-1].island_id == "S4"
            assert [c.island_id for c in seen] == ["S0", "S4"]  # S1-S3 superseded while queued

    run(body)


def test_director_fixed_offline_realm_and_unreachable_realm() -> None:
    async def body() -> None:
        async with (
            Realm(config(fixed_adapter="offline:offline")) as realm,
            CommunicationsDirector(
                realm.url, Identity.generate(70), position=lambda: (0, 0, 0)
            ) as d,
        ):
            assert d.realm_adapter is not None
            if d.realm_adapter.startswith("archipelago:"):  # fixed string handed per island
                await eventually(lambda: isinstance(d.adapter, OfflineAdapter))
            else:
                assert isinstance(d.adapter, OfflineAdapter)
            assert await d.send(b"x", reliable=True)
        with pytest.raises(TransportError) as e:
            await CommunicationsDirector(
                f"http://127.0.0.1:{free_port()}", Identity.generate(71), position=lambda: (0, 0, 0)
            ).start()
        assert e.value.code == "about_failed"

    run(body)


def test_director_reports_a_dead_livekit_island_and_falls_back_to_offline() -> None:
    async def body() -> None:
        lk = {
            "livekit_host": f"ws://127.0.0.1:{free_port()}",
            "livekit_api_key": "devkey",
            "livekit_api_secret": "devsecret-0123456789-0123456789-abcdef",
        }
        async with (
            Realm(config(**lk)) as realm,
            CommunicationsDirector(
                realm.url, Identity.generate(85), position=lambda: (0.0, 0.0, 0.0)
            ) as d,
        ):
            errors: list[Exception] = []
            d.on("error", errors.append)
            await eventually(lambda: errors)
            assert isinstance(errors[0], TransportError)
            assert errors[0].code == "livekit_unreachable"
            assert d.island_id is not None
            await eventually(lambda: isinstance(d.adapter, OfflineAdapter))
            assert d.protocol_errors == 0  # a dead transport is not a protocol error

    run(body)


def test_director_duplicate_session_is_kicked_from_the_connector() -> None:
    async def body() -> None:
        async with Realm(config()) as realm:
            me = Identity.generate(90)
            first = CommunicationsDirector(realm.url, me, position=lambda: (0.0, 0.0, 0.0))
            await first.start()
            gone: list[Disconnection] = []
            first.on("DISCONNECTION", gone.append)
            async with CommunicationsDirector(realm.url, me, position=lambda: (0, 0, 0)) as second:
                await eventually(lambda: gone)
                assert gone[0].kicked is True and first.kicked
                assert isinstance(gone[0].error, TransportError)
                assert gone[0].error.close_code == 4006
                assert gone[0].error.code == "connector_failed"
                assert second.handshakes == 1
            await first.stop()

    run(body)


def test_director_bad_about_and_bad_connector_are_typed_errors() -> None:
    """A stand-in realm: /about answering 500, or a connector sending garbage."""

    async def body() -> None:
        port = free_port()

        async def broken(request: web.Request) -> web.Response:
            return web.Response(status=500)

        async def about(request: web.Request) -> web.Response:
            adapter = f"archipelago:archipelago:ws://127.0.0.1:{port}/ws"
            return web.json_response({"comms": {"protocol": "v3", "adapter": adapter}})

        async def connector(request: web.Request) -> web.WebSocketResponse:
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            await ws.receive()  # challenge_request
            await ws.send_bytes(b"\x0a\xff")
            await ws.receive()
            return ws

        app = web.Application()
        app.router.add_get("/about", about)
        app.router.add_get("/broken/about", broken)
        app.router.add_get("/ws", connector)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            base = f"http://127.0.0.1:{port}"
            me = Identity.generate(95)
            d = CommunicationsDirector(base, me, position=lambda: (0.0, 0.0, 0.0))
            with pytest.raises(TransportError) as e:
                await d.start()
            assert e.value.code == "handshake_failed"
            sick = CommunicationsDirector(base + "/broken", me, position=lambda: (0.0, 0.0, 0.0))
            with pytest.raises(TransportError) as e2:
                await sick.start()
            assert e2.value.code == "about_failed" and "500" in str(e2.value)
        finally:
            await runner.cleanup()

    run(body)


def test_director_async_iterator_position_source() -> None:
    async def body() -> None:
        async def path() -> Any:
            for i in range(1000):
                yield (float(i % 3), 0.0, 0.0)

        async with (
            Realm(config()) as realm,
            CommunicationsDirector(
                realm.url, Identity.generate(80), position=path(), heartbeat_interval_s=0.05
            ) as d,
        ):
            await eventually(lambda: d.island_id is not None)
            assert d.peers == {d.peer_id: pytest.approx(d.peers[str(d.peer_id)])}

    run(body)


# --- properties ---------------------------------------------------------------------

_PROTO = st.from_regex(r"[A-Za-z][A-Za-z0-9-]{1,15}", fullmatch=True)
_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=60)


@settings(max_examples=300, derandomize=True, deadline=None)
@given(_PROTO, _TEXT)
def test_parse_connection_string_splits_at_the_first_colon(protocol: str, params: str) -> None:
    assert parse_connection_string(f"{protocol}:{params}") == (protocol.lower(), params)


@settings(max_examples=300, derandomize=True, deadline=None)
@given(st.sampled_from(["", "ws://", "wss://", "http://", "https://"]), _TEXT)
def test_ws_url_always_has_a_websocket_scheme_and_keeps_ws(scheme: str, rest: str) -> None:
    assume(not rest.lower().startswith(("ws://", "wss://", "http://", "https://")))
    url = ws_url(scheme + rest)
    expected = {"": "wss://", "ws://": "ws://", "wss://": "wss://"}
    expected |= {"http://": "ws://", "https://": "wss://"}
    assert url == expected[scheme] + rest
