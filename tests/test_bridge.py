"""The /bridge end to end on an embedded realm: real sockets, real signatures.

Bots join a scene room (the gatekeeper's built-in ``/scene-rooms/``, through
``/get-scene-adapter``) and an island room (``/rooms/``); servers connect with API keys
or a signed fetch, read the bots' RFC-4 traffic with its sender and inject packets
every member of the scene receives from the server's own identity; every refused
credential, scope and frame gets its typed error and sees nothing.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from dclcomms import codec
from dclcomms.auth import Identity
from dclcomms.bridge import BridgeClient, MemoryKeyStore, StaticSceneAuthority
from dclcomms.config import RealmConfig
from dclcomms.errors import BridgeError
from dclcomms.realm import Realm
from tests.helpers.bridge import chat, gatekeeper_scene_member, refused
from tests.helpers.realm_client import (
    RoomClient,
    Wallet,
    eventually,
    room_string,
    scene_room_string,
)

RFC4 = codec.RFC4_PACKET
SCENE = "main:bafyscene1"  # kind "scene" topic; its room id (no prefix) is the same


def config(**kw: Any) -> RealmConfig:
    base: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "flush_interval_s": 0.05,
        "log_format": "text",
        "log_level": "WARNING",
    }
    base.update(kw)
    return RealmConfig(**base)


def run(body: Callable[[], Awaitable[None]], timeout: float = 60.0) -> None:
    asyncio.run(asyncio.wait_for(body(), timeout))


@contextlib.asynccontextmanager
async def realm(keys: MemoryKeyStore, **kw: Any) -> AsyncIterator[Realm]:
    r = await Realm(config(bridge=True), bridge_keys=keys, **kw).start()
    try:
        yield r
    finally:
        await r.stop()


def url(r: Realm) -> str:
    return f"ws://127.0.0.1:{r.port}/bridge"


async def bot(r: Realm, seed: int, room: str) -> RoomClient:
    """A member of the island room ``/rooms/<room>``."""
    c = RoomClient(Wallet(seed))
    await c.join(room_string(r, room, c.wallet))
    return c


async def scene_bot(r: Realm, seed: int, room: str) -> RoomClient:
    """A member of the scene room ``/scene-rooms/<room>``."""
    c = RoomClient(Wallet(seed))
    await c.join(scene_room_string(r, room, c.wallet))
    return c


async def update_from(c: RoomClient, alias: int) -> dict[str, Any]:
    got = await c.expect("peerUpdateMessage", fromAlias=alias)
    return codec.decode(RFC4, base64.b64decode(got["peerUpdateMessage"]["body"]))


def test_scene_key_reads_bots_and_injects_state_every_member_sees() -> None:
    async def body() -> None:
        keys = MemoryKeyStore()
        key, rec = keys.create("doors", [f"scene:{SCENE}"])
        async with realm(keys) as r:
            a = await gatekeeper_scene_member(r.port, 1, "bafyscene1")
            b = await gatekeeper_scene_member(r.port, 2, "bafyscene1")
            members = set(r.server.room_members(SCENE, scene=True))
            assert members == {a.wallet.address, b.wallet.address}
            island = await bot(r, 3, "I7")
            # an island-registry room with the scene room's id: never the scene
            poser = await bot(r, 5, SCENE)
            async with BridgeClient(url(r), key=key) as server:
                assert server.identity == "server:doors" == rec.identity
                assert server.scopes == [f"scene:{SCENE}"]
                scene = await server.subscribe("scene", SCENE)
                assert scene.room == SCENE
                await poser.send({"peerUpdateMessage": {"fromAlias": 0, "body": chat("posing")}})
                await island.send({"peerUpdateMessage": {"fromAlias": 0, "body": chat("x")}})
                await a.send({"peerUpdateMessage": {"fromAlias": 0, "body": chat("hello")}})
                msg = await scene.get(timeout=5)
                assert msg.sender == a.wallet.address
                assert msg.packet == {"chat": {"message": "hello", "timestamp": 1.0}}
                assert (msg.kind, msg.topic, msg.room) == ("scene", SCENE, SCENE)
                state = {
                    "scene": {
                        "sceneId": "bafyscene1",
                        "data": base64.b64encode(b"door=open").decode(),
                    }
                }
                await scene.send(state)
                for c in (a, b):
                    join = await c.expect("peerJoinMessage", address="server:doors")
                    alias = join["peerJoinMessage"]["alias"]
                    assert await update_from(c, alias) == state
                # A late joiner learns the server's alias from its welcome.
                late = RoomClient(Wallet(4))
                welcome = await late.join(scene_room_string(r, SCENE, late.wallet))
                assert "server:doors" in welcome["peerIdentities"].values()
                # The islands saw nothing of it (not even the one named like the scene
                # room); the server never gets its own injection.
                with pytest.raises(TimeoutError):
                    await island.expect("peerUpdateMessage", timeout=0.3)
                with pytest.raises(TimeoutError):
                    await poser.expect("peerJoinMessage", timeout=0.1, address="server:doors")
                with pytest.raises(asyncio.TimeoutError):
                    await scene.get(timeout=0.3)
                await late.close()
            # The server left: members see its identity leave.
            assert (await a.expect("peerLeaveMessage", alias=alias))["peerLeaveMessage"]
            assert r.server.stats()["bridge"]["taps"] == 0
            for c in (a, b, island, poser):
                await c.close()

    run(body)


def test_island_keys_read_only_and_scoped() -> None:
    async def body() -> None:
        keys = MemoryKeyStore()
        one, _ = keys.create("watch-i7", ["island:I7"])
        every, _ = keys.create("watch-all", ["island:*"])
        async with realm(keys) as r:
            a = await bot(r, 1, "I7")
            b = await bot(r, 2, "I8")
            async with BridgeClient(url(r), key=one) as s1, BridgeClient(url(r), key=every) as s2:
                await refused(s1.subscribe("island", "I8"), "forbidden_scope")
                await refused(s1.subscribe("scene", SCENE), "forbidden_scope")
                i7 = await s1.subscribe("island", "I7")
                i8 = await s2.subscribe("island", "I8")
                await a.send({"peerUpdateMessage": {"fromAlias": 0, "body": chat("seven")}})
                await b.send({"peerUpdateMessage": {"fromAlias": 0, "body": chat("eight")}})
                assert (await i7.get(5)).packet["chat"]["message"] == "seven"  # type: ignore[index]
                assert (await i8.get(5)).sender == b.wallet.address
                await i7.send(chat("nope"))
                err = await asyncio.wait_for(s1.errors.get(), 5)
                assert err.code == "read_only"
                with pytest.raises(TimeoutError):
                    await a.expect("peerUpdateMessage", timeout=0.3)
            await a.close()
            await b.close()

    run(body)


def test_refused_credentials_see_nothing() -> None:
    async def body() -> None:
        keys = MemoryKeyStore()
        other, _ = keys.create("other-scene", ["scene:main:bafyother"])
        expired, _ = keys.create("old", [f"scene:{SCENE}"], ttl_s=0.001)
        revoked, rec = keys.create("gone", [f"scene:{SCENE}"])
        keys.revoke(rec.id)
        owner = Identity.generate(seed=7)
        authority = StaticSceneAuthority({SCENE: [owner.address]})
        async with realm(keys, bridge_authority=authority) as r:
            a = await scene_bot(r, 1, SCENE)
            await refused(BridgeClient(url(r), key=expired).connect(), "key_expired")
            await refused(BridgeClient(url(r), key=revoked).connect(), "key_revoked")
            await refused(
                BridgeClient(url(r), key="dcb_000000000000_" + "A" * 43).connect(), "unknown_key"
            )
            await refused(BridgeClient(url(r), key="not a key").connect(), "unknown_key")
            async with BridgeClient(url(r), key=other) as s:
                await refused(s.subscribe("scene", SCENE), "forbidden_scope")
                await s.send("scene", SCENE, chat("x"))  # not subscribed (and cannot be)
                assert (await asyncio.wait_for(s.errors.get(), 5)).code == "not_subscribed"
            # A forged signed fetch: the final signature does not match.
            forged = BridgeClient(url(r), identity=owner)
            real = forged._auth_frame

            def tampered() -> dict[str, Any]:
                frame = real()
                h = frame["signedFetch"]
                last = max(k for k in h if k.startswith("x-identity-auth-chain-"))
                link = json.loads(h[last])
                sig = link["signature"]
                link["signature"] = sig[:10] + ("0" if sig[10] != "0" else "1") + sig[11:]
                h[last] = json.dumps(link)
                return frame

            forged._auth_frame = tampered  # type: ignore[method-assign]
            await refused(forged.connect(), "invalid_signed_fetch")
            # A stranger's valid signed fetch: accepted, but no scene of theirs.
            async with BridgeClient(url(r), identity=Identity.generate(seed=8)) as stranger:
                await refused(stranger.subscribe("scene", SCENE), "forbidden_scope")
                await refused(stranger.subscribe("island", "I7"), "forbidden_scope")
            # The owner's signed fetch works, with the wallet as identity.
            async with BridgeClient(url(r), identity=owner) as ok:
                assert ok.identity == owner.address.lower()
                await ok.subscribe("scene", SCENE)
                await ok.send("scene", SCENE, chat("from the owner"))
                join = await a.expect("peerJoinMessage", address=owner.address.lower())
                assert (await update_from(a, join["peerJoinMessage"]["alias"]))["chat"][
                    "message"
                ] == "from the owner"
            # Nothing else reached the bot.
            with pytest.raises(TimeoutError):
                await a.expect("peerUpdateMessage", timeout=0.3)
            errors = r.registry.render()
            for code in (
                "key_expired",
                "key_revoked",
                "unknown_key",
                "forbidden_scope",
                "invalid_signed_fetch",
            ):
                assert f'code="{code}"' in errors, code
            await a.close()

    run(body)


def test_authoritative_server_and_world_scope() -> None:
    async def body() -> None:
        keys = MemoryKeyStore()
        world_key, _ = keys.create("world-game", ["world:party.dcl.eth"])
        auth = Identity.generate(seed=9)
        async with realm(keys, bridge_authoritative_server=auth.address) as r:
            a = await scene_bot(r, 1, "party.dcl.eth-bafyw1")
            async with (
                BridgeClient(url(r), key=world_key) as w,
                BridgeClient(url(r), identity=auth) as s,
            ):
                sub = await w.subscribe("scene", "party.dcl.eth:bafyw1")
                assert sub.room == "party.dcl.eth-bafyw1"
                await refused(w.subscribe("scene", "other.dcl.eth:bafyw1"), "forbidden_scope")
                await s.subscribe("scene", SCENE)  # every scene
                await s.subscribe("scene", "party.dcl.eth:bafyw1")
                await a.send({"peerUpdateMessage": {"fromAlias": 0, "body": chat("w")}})
                assert (await sub.get(5)).sender == a.wallet.address
            await a.close()

    run(body)


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json", "bad_frame"),
        ("[1]", "bad_frame"),
        ({"type": "subscribe", "kind": "island", "topic": "I7"}, "not_authenticated"),
        ({"type": "nope"}, "bad_frame"),
    ],
)
def test_frames_before_auth_answer_errors(frame: Any, code: str) -> None:
    async def body() -> None:
        async with realm(MemoryKeyStore()) as r, aiohttp.ClientSession() as s:
            ws = await s.ws_connect(url(r))
            await ws.send_str(frame if isinstance(frame, str) else json.dumps(frame))
            got = json.loads((await ws.receive(5)).data)
            assert got["type"] == "error" and got["code"] == code
            await ws.close()

    run(body)


def test_publish_limits_and_frame_errors() -> None:
    async def body() -> None:
        keys = MemoryKeyStore()
        key, _ = keys.create("small", [f"scene:{SCENE}"], rate=5, max_bytes=64)
        async with realm(keys) as r:
            a = await scene_bot(r, 1, SCENE)
            async with BridgeClient(url(r), key=key) as s:
                assert s.limits == {"rate": 5.0, "maxBytes": 64}
                await s.send("scene", SCENE, chat("before"))
                assert (await asyncio.wait_for(s.errors.get(), 5)).code == "not_subscribed"
                await s.subscribe("scene", SCENE)
                await s.send("scene", SCENE, b"x" * 65)
                assert (await asyncio.wait_for(s.errors.get(), 5)).code == "payload_too_large"
                for i in range(10):
                    await s.send("scene", SCENE, chat(f"m{i}"))
                limited = [await asyncio.wait_for(s.errors.get(), 5)]
                await asyncio.sleep(0.3)
                while not s.errors.empty():
                    limited.append(s.errors.get_nowait())
                assert {e.code for e in limited} == {"rate_limited"}
                assert 4 <= len(limited) <= 5  # 10 within a second, a burst of 5 at 5/s
                ws = s._ws
                assert ws is not None
                for frame, code in [
                    (
                        {"type": "publish", "kind": "scene", "topic": SCENE, "payload": "%%"},
                        "bad_payload",
                    ),
                    ({"type": "subscribe", "kind": "scene", "topic": "no-colon"}, "bad_topic"),
                    ({"type": "subscribe", "kind": "room", "topic": "x"}, "bad_frame"),
                    ({"type": "unsubscribe", "kind": "island", "topic": "I9"}, "not_subscribed"),
                    ({"type": "auth", "key": key}, "already_authenticated"),
                ]:
                    await ws.send_str(json.dumps(frame))
                    assert (await asyncio.wait_for(s.errors.get(), 5)).code == code, frame
                delivered = 0
                with contextlib.suppress(TimeoutError):
                    while True:
                        await a.expect("peerUpdateMessage", timeout=0.5)
                        delivered += 1
                assert 1 <= delivered <= 6  # the bucket: 5/s with a burst of 5
            await a.close()

    run(body)


def test_bridge_off_is_404() -> None:
    async def body() -> None:
        r = await Realm(config()).start()  # off by default
        try:
            async with aiohttp.ClientSession() as s:
                with pytest.raises(aiohttp.WSServerHandshakeError) as e:
                    await s.ws_connect(url(r))
                assert e.value.status == 404
        finally:
            await r.stop()

    run(body)


def test_metrics_and_stats() -> None:
    async def body() -> None:
        keys = MemoryKeyStore()
        key, _ = keys.create("m", [f"scene:{SCENE}"])
        async with realm(keys) as r:
            a = await scene_bot(r, 1, SCENE)
            async with BridgeClient(url(r), key=key) as s:
                sub = await s.subscribe("scene", SCENE)
                await a.send({"peerUpdateMessage": {"fromAlias": 0, "body": chat("m")}})
                await sub.get(5)
                await sub.send(chat("back"))
                await eventually(lambda: r.server.stats()["rooms"]["injected"] == 1)
                async with aiohttp.ClientSession() as h:
                    text = await (await h.get(f"http://127.0.0.1:{r.port}/metrics")).text()
                for name in (
                    "dcl_bridge_sessions 1",
                    "dcl_bridge_rooms 1",
                    "dcl_bridge_scene_rooms 1",
                    'dcl_bridge_messages_read_total{kind="scene"} 1',
                    'dcl_bridge_messages_injected_total{kind="scene"} 1',
                    'dcl_bridge_auth_total{kind="key"} 1',
                    "dcl_ws_bridge_sessions 1",
                    "dcl_ws_bridge_taps 1",
                    "dcl_ws_rooms_tapped_messages_total 2",
                    "dcl_ws_rooms_injected_total 1",
                ):
                    assert name in text, name
            await a.close()

    run(body)


def test_key_store_expiry_and_revocation_unit() -> None:
    keys = MemoryKeyStore()
    key, rec = keys.create("k", ["island:*"], ttl_s=10, now_ms=1000)
    assert keys.authenticate(key, now_ms=2000) == rec
    with pytest.raises(BridgeError) as e:
        keys.authenticate(key, now_ms=11_000)
    assert e.value.code == "key_expired"
    keys.revoke(rec.id, now_ms=3000)
    assert keys.list()[0].status(2000) == "revoked"
    with pytest.raises(BridgeError) as e:
        keys.authenticate(key[:-1] + ("A" if key[-1] != "A" else "B"))
    assert e.value.code == "unknown_key"
    for bad in (["scene:*"], ["world:*"], ["island:a*"], ["room:x"], ["world:nope"], []):
        with pytest.raises(BridgeError) as e:
            keys.create("k2", bad)
        assert e.value.code == "bad_scope", bad
    with pytest.raises(BridgeError) as e:
        keys.revoke("ffffffffffff")
    assert e.value.code == "key_not_found"
