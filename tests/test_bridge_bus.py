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
from tests.helpers.nats_fixtures import NatsServer, nats_server  # noqa: F401
from tests.helpers.realm_client import BusClient
from tests.test_bridge_nats import cli, start, stop

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


async def refused(coro: Any, code: str) -> None:
    with pytest.raises(BridgeError) as e:
        await coro
    assert e.value.code == code, e.value


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
    key = cli("keys", "create", "--name", "chatbot", "--scope", f"bus:{GLOBAL}", data_dir=data)

    async def body() -> None:
        pubsub = await NatsPubSub.connect([nats_server.url])
        r = await Realm(config(bridge=False), pubsub=pubsub).start()
        bridge, port = await start(
            "bridge",
            "serve",
            "--nats",
            nats_server.url,
            "--data-dir",
            str(data),
            expect="dclcomms bridge: listening on",
        )
        a = await player(r.port, 1, GLOBAL)
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
        finally:
            await a.close()
            code = await stop(bridge)
            await r.stop()
        assert code == 0

    asyncio.run(asyncio.wait_for(body(), 120))
