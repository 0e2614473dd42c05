"""The /bus's global topics on the bridge: a server with a ``bus:<topic>`` key reads what
players publish on an allow-listed global topic (sender = the player's address) and
publishes messages every subscribed /bus session receives with the server's identity as
sender; every refusal has its typed error. In process (embedded realm) and through NATS
with ``dclcomms bridge serve`` in its own process."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import pytest

from dclcomms.auth import Identity
from dclcomms.bridge import BridgeClient, MemoryKeyStore
from dclcomms.bridge.scopes import check_scope
from dclcomms.config import RealmConfig
from dclcomms.errors import BridgeError
from dclcomms.realm import Realm
from tests.helpers.bridge import cli, refused, serve_bridge, stop
from tests.helpers.nats_fixtures import NatsServer, nats_server  # noqa: F401
from tests.helpers.realm_client import (
    BusClient,
    RoomClient,
    Wallet,
    eventually,
    scene_room_string,
)

GLOBAL = "lobby.chat"


def config(**kw: Any) -> RealmConfig:
    base: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "flush_interval_s": 0.05,
        "log_format": "text",
        "log_level": "WARNING",
        "bridge": True,
        "bus_global_topics": f"news,{GLOBAL}",
    }
    base.update(kw)
    return RealmConfig(**base)


async def player(port: int, seed: int, *topics: str) -> BusClient:
    c = BusClient(seed)
    await c.connect(f"ws://127.0.0.1:{port}")
    await c.handshake()
    for t in topics:
        await c.subscribe(t)
    return c


def test_bus_scopes_name_global_topics_only() -> None:
    for ok in (f"bus:{GLOBAL}", "bus:news"):
        assert check_scope(ok) == ok
    for bad in (
        "bus:*",
        "bus:lobby.*",
        "bus:island.I1.chat",  # island topics: the island's members only
        "bus:0x" + "ab" * 20 + ".offer",  # addressed: the addressee only
        "bus:heartbeat",
        "bus:bridge.x",
        "bus:",
    ):
        with pytest.raises(BridgeError) as e:
            check_scope(bad)
        assert e.value.code == "bad_scope", bad


def test_server_reads_and_publishes_a_global_bus_topic() -> None:
    async def body() -> None:
        keys = MemoryKeyStore()
        key, _ = keys.create("chatbot", [f"bus:{GLOBAL}"], max_bytes=64)
        other, _ = keys.create("newsbot", ["bus:news"])
        expired, _ = keys.create("old", [f"bus:{GLOBAL}"], ttl_s=0.001)
        revoked, rec = keys.create("gone", [f"bus:{GLOBAL}"])
        keys.revoke(rec.id)
        r = await Realm(config(), bridge_keys=keys).start()
        url = f"ws://127.0.0.1:{r.port}/bridge"
        a = await player(r.port, 1, GLOBAL)
        b = await player(r.port, 2, GLOBAL)
        try:
            await refused(BridgeClient(url, key=expired).connect(), "key_expired")
            await refused(BridgeClient(url, key=revoked).connect(), "key_revoked")
            async with BridgeClient(url, key=other) as o:  # another topic's key
                await refused(o.subscribe("bus", GLOBAL), "forbidden_scope")
            async with BridgeClient(url, identity=Identity.generate(seed=9)) as sf:
                await refused(sf.subscribe("bus", GLOBAL), "forbidden_scope")  # keys only
            async with BridgeClient(url, key=key) as s:
                for topic, code in (
                    ("island.I1.chat", "reserved_topic"),
                    ("0x" + "ab" * 20 + ".offer", "reserved_topic"),
                    ("bridge.x", "reserved_topic"),
                    ("heartbeat", "reserved_topic"),
                    ("a..b", "bad_topic"),
                    ("news", "forbidden_scope"),
                ):
                    await refused(s.subscribe("bus", topic), code)
                await s.send("bus", GLOBAL, b"early")
                assert (await asyncio.wait_for(s.errors.get(), 5)).code == "not_subscribed"
                sub = await s.subscribe("bus", GLOBAL)
                await a.publish(GLOBAL, b"hello from a")
                msg = await sub.get(5)
                assert (msg.kind, msg.topic, msg.sender) == ("bus", GLOBAL, a.address)
                assert msg.body == b"hello from a" and msg.packet is None  # not RFC-4
                assert (await b.message(GLOBAL, sender=a.address))["payload"] == base64.b64encode(
                    b"hello from a"
                ).decode()
                # the server's publish: every subscribed player, from the server's identity
                await sub.send(b"state=1")
                for c in (a, b):
                    got = await c.message(GLOBAL, sender="server:chatbot")
                    assert base64.b64decode(got["payload"]) == b"state=1"
                    assert got["kind"] == "peer"
                with pytest.raises(asyncio.TimeoutError):  # never its own publish back
                    await sub.get(timeout=0.3)
                await sub.send(b"x" * 65)
                assert (await asyncio.wait_for(s.errors.get(), 5)).code == "payload_too_large"
                text = r.registry.render()
                assert 'dcl_bridge_messages_read_total{kind="bus"} 1' in text
                assert 'dcl_bridge_messages_injected_total{kind="bus"} 1' in text
                assert 'dcl_bridge_errors_total{code="reserved_topic"} 4' in text
            # players cannot pose as the bridge's subjects
            await a.send_json({"type": "subscribe", "kind": "peer", "topic": "bridge.lobby"})
            assert (await a.frame(type="error"))["code"] == "reserved_topic"
        finally:
            await a.close()
            await b.close()
            await r.stop()

    asyncio.run(asyncio.wait_for(body(), 60))


def test_global_bus_topic_through_nats_with_the_bridge_in_its_own_process(
    nats_server: NatsServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    from dclcomms.nats.pubsub import NatsPubSub

    data = tmp_path / "data"
    key = cli(
        "keys", "create", "--name", "chatbot", "--scope", f"bus:{GLOBAL}",
        "--scope", "scene:main:bafyscene1", data_dir=data,
    )  # fmt: skip
    scene_topic = "scene.bafyscene1.state"

    async def body() -> None:
        pubsub = await NatsPubSub.connect([nats_server.url])
        r = await Realm(config(bridge=False), pubsub=pubsub).start()
        bridge, port = await serve_bridge(nats_server.url, data)
        a_room = RoomClient(Wallet(1))  # in the scene's room: its scene topics are a's
        await a_room.join(scene_room_string(r, "main:bafyscene1", a_room.wallet))
        a = await player(r.port, 1, GLOBAL, scene_topic)
        try:
            async with BridgeClient(f"ws://127.0.0.1:{port}/bridge", key=key["key"]) as s:
                sub = await s.subscribe("bus", GLOBAL)
                msg = None
                for i in range(50):  # until the bridge's NATS subscription is in place
                    await a.publish(GLOBAL, f"hi{i}".encode())
                    try:
                        msg = await sub.get(timeout=0.2)
                        break
                    except TimeoutError:
                        continue
                assert msg is not None, "no bus traffic through NATS"
                assert msg.sender == a.address and msg.body.startswith(b"hi")
                await sub.send(b"from the server")
                got = await a.message(GLOBAL, timeout=10, sender="server:chatbot")
                assert base64.b64decode(got["payload"]) == b"from the server"
                # the scene topic, the same way
                scene = await s.subscribe("bus", scene_topic)
                smsg = None
                for i in range(50):
                    await a.publish(scene_topic, f"s{i}".encode())
                    try:
                        smsg = await scene.get(timeout=0.2)
                        break
                    except TimeoutError:
                        continue
                assert smsg is not None and smsg.sender == a.address
                await scene.send(b"door=open")
                got = await a.message(scene_topic, timeout=10, sender="server:chatbot")
                assert base64.b64decode(got["payload"]) == b"door=open"
        finally:
            await a.close()
            await a_room.close()
            code = await stop(bridge)
            await r.stop()
        assert code == 0

    asyncio.run(asyncio.wait_for(body(), 120))


def test_scene_bus_topics_for_members_and_the_scenes_servers() -> None:
    """The /bus's scene topics ``scene.<sceneId>.…``: members of the scene's room (the
    gatekeeper's /scene-rooms/) only; a scene-scoped key (or the authoritative server)
    reads and writes them through the bridge, its messages marked with its identity."""
    topic = "scene.bafyscene1.state"

    async def body() -> None:
        keys = MemoryKeyStore()
        key, _ = keys.create("doors", ["scene:main:bafyscene1"])
        other, _ = keys.create("other", ["scene:main:bafyother"])
        auth = Identity.generate(seed=77)
        r = await Realm(
            config(), bridge_keys=keys, bridge_authoritative_server=auth.address
        ).start()
        url = f"ws://127.0.0.1:{r.port}/bridge"
        rooms: list[RoomClient] = []

        async def in_scene(seed: int, room: str) -> RoomClient:
            c = RoomClient(Wallet(seed))
            await c.join(scene_room_string(r, room, c.wallet))
            rooms.append(c)
            return c

        a_room = await in_scene(1, "main:bafyscene1")
        b_room = await in_scene(2, "main:bafyscene1")
        await in_scene(3, "main:bafyother")
        a = await player(r.port, 1, topic)
        b = await player(r.port, 2, topic)
        c = await player(r.port, 3)
        d = await player(r.port, 4)  # in no scene room
        try:
            assert a_room.wallet.address == a.address
            for who in (c, d):
                await who.send_json({"type": "subscribe", "kind": "peer", "topic": topic})
                assert (await who.frame(type="error"))["code"] == "forbidden_topic"
                await who.publish(topic, b"x")
                assert (await who.frame(type="error"))["code"] == "forbidden_topic"
            async with BridgeClient(url, key=other) as o:
                await refused(o.subscribe("bus", topic), "forbidden_scope")
            async with BridgeClient(url, identity=Identity.generate(seed=78)) as sf:
                await refused(sf.subscribe("bus", topic), "forbidden_scope")
            async with BridgeClient(url, identity=auth) as au:
                await au.subscribe("bus", topic)  # the authoritative server: every scene
            async with BridgeClient(url, key=key) as s:
                await refused(s.subscribe("bus", "scene.bafyscene1"), "bad_topic")
                await refused(s.subscribe("bus", "scene.bafyother.state"), "forbidden_scope")
                sub = await s.subscribe("bus", topic)
                await a.publish(topic, b"door?")
                msg = await sub.get(5)
                assert (msg.sender, msg.body) == (a.address, b"door?")
                assert base64.b64decode((await b.message(topic, sender=a.address))["payload"])
                await sub.send(b"door=open")
                for who in (a, b):
                    got = await who.message(topic, sender="server:doors")
                    assert base64.b64decode(got["payload"]) == b"door=open"
                # b leaves the scene room: its scene subscription ends at the next message
                await b_room.close()
                rooms.remove(b_room)
                # what the /bus checks at delivery: b no longer in the scene room
                await eventually(lambda: r.server.scene_room_of(b.address) is None)
                await sub.send(b"door=closed")
                assert (
                    base64.b64decode((await a.message(topic, sender="server:doors"))["payload"])
                    == b"door=closed"
                )
                gone = await b.frame(type="unsubscribed", topic=topic)
                assert gone["reason"] == "scene_left"
                with pytest.raises(TimeoutError):
                    await c.message(topic, timeout=0.3)
        finally:
            for x in (a, b, c, d, *rooms):
                await x.close()
            await r.stop()

    asyncio.run(asyncio.wait_for(body(), 60))
