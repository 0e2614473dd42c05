"""The /bus message bus end to end: a real realm, real sockets, real signatures."""

from __future__ import annotations

import base64
import contextlib
from typing import Any

import aiohttp
import pytest

from dclcomms import codec
from dclcomms.pubsub import AppData
from tests.helpers.msgbus import Peer, b64, error, realm, run
from tests.helpers.realm_client import ArchipelagoClient, BusClient, Closed, eventually

V3 = "decentraland.kernel.comms.v3."


def test_island_topics_reach_island_members_only() -> None:
    async def body() -> None:
        async with realm() as r:
            a = await Peer(901).start(r)
            b = await Peer(902).start(r, x=10.0)
            far = await Peer(903).start(r, x=1000.0)
            assert b.island == a.island and far.island != a.island
            topic = f"island.{a.island}.chat"
            await a.bus.subscribe(topic)
            await b.bus.subscribe(topic)
            payload = bytes(range(256)) * 3
            await b.bus.publish(topic, payload)
            got = await a.bus.message(topic, sender=b.address)
            assert got["kind"] == "peer" and base64.b64decode(got["payload"]) == payload
            # a session never receives its own message; a stranger cannot listen in
            with pytest.raises(TimeoutError):
                await b.bus.message(topic, timeout=0.3)
            e = await error(
                far.bus, {"type": "subscribe", "kind": "peer", "topic": topic}, "forbidden_topic"
            )
            assert e["topic"] == topic
            await error(
                far.bus, {"type": "publish", "topic": topic, "payload": "AA=="}, "forbidden_topic"
            )
            for p in (a, b, far):
                await p.close()

    run(body)


def test_addressed_and_global_topics() -> None:
    async def body() -> None:
        async with realm() as r:
            a = await Peer(911).start(r)
            b = await Peer(912).start(r, x=1000.0)  # another island: addressed topics still work
            await a.bus.subscribe(f"{a.address}.dm")
            await b.bus.publish(f"{a.address}.dm", b"hello")
            got = await a.bus.message(f"{a.address}.dm", sender=b.address)
            assert base64.b64decode(got["payload"]) == b"hello"
            await error(b.bus, {"type": "subscribe", "topic": f"{a.address}.dm"}, "forbidden_topic")
            # allow-listed realm-wide topics; anything else is refused
            await a.bus.subscribe("lobby.chat")
            await b.bus.publish("lobby.chat", b"")
            assert (await a.bus.message("lobby.chat", sender=b.address))["payload"] == ""
            await error(a.bus, {"type": "subscribe", "topic": "secret"}, "forbidden_topic")
            await error(
                a.bus, {"type": "publish", "topic": "secret", "payload": ""}, "forbidden_topic"
            )
            # realm-wide system topics come from the realm's services, not from clients
            await a.bus.subscribe("news", kind="system")
            r.pubsub.publish("client.news", AppData(b"maintenance at noon"))
            news = await a.bus.message("news", kind="system")
            assert (
                "sender" not in news and base64.b64decode(news["payload"]) == b"maintenance at noon"
            )
            for p in (a, b):
                await p.close()

    run(body)


def test_island_system_events_and_island_change() -> None:
    async def body() -> None:
        async with realm() as r:
            a = await Peer(921).start(r)
            join_topic = f"island.{a.island}.peer_join"
            await a.bus.subscribe(join_topic, kind="system")
            await a.bus.subscribe(f"island.{a.island}.chat")
            b = await Peer(922).start(r, x=10.0)
            joined = await a.bus.message(join_topic, kind="system")
            msg = codec.decode(V3 + "JoinIslandMessage", base64.b64decode(joined["payload"]))
            assert msg == {"islandId": a.island, "peerId": b.address}
            # a re-enters far away (a new connector session): its old island's
            # subscriptions end, with the reason
            await a.arch.close()
            a.arch = ArchipelagoClient(921)
            await a.arch.connect(f"ws://127.0.0.1:{r.port}")
            await a.arch.handshake()
            await a.arch.heartbeat(2000.0, 0.0, 0.0)
            moved = await a.arch.island()
            assert moved["islandId"] != a.island
            ended = {
                (f["kind"], f["topic"])
                for f in [
                    await a.bus.frame(type="unsubscribed", reason="island_changed"),
                    await a.bus.frame(type="unsubscribed", reason="island_changed"),
                ]
            }
            assert ended == {("system", join_topic), ("peer", f"island.{a.island}.chat")}
            await error(
                a.bus, {"type": "subscribe", "topic": f"island.{a.island}.chat"}, "forbidden_topic"
            )
            await a.bus.subscribe(f"island.{moved['islandId']}.chat")
            for p in (a, b):
                await p.close()

    run(body)


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json", "bad_frame"),
        ("[1,2]", "bad_frame"),
        ("[" * 30000, "bad_frame"),  # nesting deep enough to exhaust a naive parser's stack
        ({"type": "subscribe"}, "bad_frame"),
        ({"type": "dance", "topic": "news"}, "bad_frame"),
        ({"type": "x" * 1000, "topic": 7}, "bad_frame"),
        ({"type": "subscribe", "kind": "all", "topic": "news"}, "bad_frame"),
        ({"type": "subscribe", "topic": ">"}, "bad_topic"),
        ({"type": "subscribe", "topic": "a.*"}, "bad_topic"),
        ({"type": "subscribe", "topic": "a b"}, "bad_topic"),
        ({"type": "subscribe", "topic": ".".join("t" * 9)}, "bad_topic"),
        ({"type": "subscribe", "topic": "heartbeat"}, "reserved_topic"),
        (
            {"type": "subscribe", "kind": "system", "topic": "{addr}.island_changed"},
            "reserved_topic",
        ),
        ({"type": "publish", "topic": "news"}, "bad_payload"),
        ({"type": "publish", "topic": "news", "payload": "@@@"}, "bad_payload"),
        (
            {"type": "publish", "topic": "news", "payload": b64(b"x" * (16 * 1024 + 1))},
            "payload_too_large",
        ),
        ({"type": "publish", "kind": "system", "topic": "news", "payload": ""}, "forbidden_topic"),
        ({"type": "unsubscribe", "topic": "news"}, "not_subscribed"),
    ],
)
def test_bad_frames_answer_an_error_and_the_session_goes_on(frame: Any, code: str) -> None:
    async def body() -> None:
        async with realm() as r:
            a = await Peer(931).start(r)
            b = await Peer(932).start(r, x=10.0)
            f = frame.replace("{addr}", a.address) if isinstance(frame, str) else dict(frame)
            if isinstance(f, dict) and isinstance(f.get("topic"), str):
                f["topic"] = f["topic"].replace("{addr}", a.address)
            await error(a.bus, f, code)
            # nothing broke: both sessions still talk
            await b.bus.subscribe("news")
            await a.bus.publish("news", b"still here")
            assert (await b.bus.message("news", sender=a.address))["payload"] == b64(b"still here")
            async with aiohttp.ClientSession() as s, s.get(f"{r.url}/metrics") as resp:
                assert f'dcl_bus_errors_total{{code="{code}"}} 1' in await resp.text()
            assert r.msgbus is not None and r.msgbus.m_errors.get(code=code) == 1
            # frame types are a bounded label: anything unknown counts as "?"
            assert set(dict(k)["type"] for k in r.msgbus.m_frames.values) <= {
                "publish",
                "subscribe",
                "unsubscribe",
                "?",
            }
            for p in (a, b):
                await p.close()

    run(body)


def test_subscription_limit_and_queue_overflow() -> None:
    async def body() -> None:
        async with realm(bus_queue=3, bus_max_frames_per_s=200) as r:
            a = await Peer(941).start(r)
            b = await Peer(942).start(r, x=10.0)
            for i in range(64):
                await a.bus.send_json({"type": "subscribe", "topic": f"{a.address}.t{i}"})
            for i in range(64):
                await a.bus.frame(type="subscribed", topic=f"{a.address}.t{i}")
            await error(
                a.bus, {"type": "subscribe", "topic": f"{a.address}.t64"}, "too_many_subscriptions"
            )
            # 5 messages for a within one loop iteration: the oldest 2 are dropped
            assert r.msgbus is not None
            for i in range(5):
                r.pubsub.publish(f"client.peer.{b.address}.{a.address}.t0", AppData(bytes([i])))
            got = [await a.bus.message(f"{a.address}.t0") for _ in range(3)]
            assert [base64.b64decode(g["payload"]) for g in got] == [b"\x02", b"\x03", b"\x04"]
            assert r.msgbus.m_dropped.get(reason="queue_full") == 2
            for p in (a, b):
                await p.close()

    run(body)


def test_replaced_bus_session_starts_clean_and_about_advertises_the_bus() -> None:
    async def body() -> None:
        async with realm() as r:
            a = await Peer(951).start(r)
            b = await Peer(952).start(r, x=10.0)
            await a.bus.subscribe("news")
            again = BusClient(951)
            await again.connect(f"ws://127.0.0.1:{r.port}")
            await again.handshake()
            closed = await a.bus.closed()
            assert closed.code == 4006
            await b.bus.publish("news", b"1")
            with pytest.raises(TimeoutError):  # the new session inherited no subscription
                await again.message("news", timeout=0.3)
            await again.subscribe("news")
            await b.bus.publish("news", b"2")
            assert (await again.message("news"))["payload"] == b64(b"2")
            async with aiohttp.ClientSession() as s, s.get(f"{r.url}/about") as resp:
                about = await resp.json()
            bff = about["bff"]
            assert bff["publicUrl"] == f"ws://127.0.0.1:{r.port}/bus"
            assert bff["userCount"] == 2 and bff["healthy"] is True
            await again.close()
            await eventually(lambda: r.msgbus is not None and len(r.msgbus.sessions) == 1)
            assert r.msgbus is not None and r.msgbus.m_delivered.get() >= 1
            with contextlib.suppress(Closed):
                await a.close()
            await b.close()

    run(body)


def test_bus_can_be_switched_off() -> None:
    async def body() -> None:
        async with realm(bus=False) as r:
            c = BusClient(961)
            with pytest.raises(aiohttp.WSServerHandshakeError) as e:
                await c.connect(f"ws://127.0.0.1:{r.port}")
            assert e.value.status == 404
            await c.close()
            async with aiohttp.ClientSession() as s, s.get(f"{r.url}/about") as resp:
                assert "bff" not in await resp.json()

    run(body)


def test_banned_addresses_lose_their_bus_session() -> None:
    from aiohttp import web

    from tests.helpers.common import start_app

    banned, clean = BusClient(971), BusClient(972)

    async def bans(request: web.Request) -> web.Response:
        return web.json_response(
            {"data": {"isBanned": request.match_info["addr"] == banned.address}}
        )

    async def body() -> None:
        app = web.Application()
        app.router.add_get("/users/{addr}/bans", bans)
        runner, port = await start_app(app)
        try:
            async with realm(comms_gatekeeper_url=f"http://127.0.0.1:{port}") as r:
                for c in (banned, clean):
                    await c.connect(f"ws://127.0.0.1:{r.port}")
                    await c.handshake()
                closed = await banned.closed()
                assert (closed.code, closed.reason) == (4005, "banned")
                await clean.subscribe("news")  # the clean session is served
                await eventually(lambda: r.msgbus is not None and len(r.msgbus.sessions) == 1)
                for c in (banned, clean):
                    await c.close()
        finally:
            await runner.cleanup()

    run(body)


def test_a_failing_event_handler_loses_no_other_event() -> None:
    """Fault injection: one handler raising is logged and counted; the events drained
    with it are still handled."""

    async def body() -> None:
        async with realm() as r:
            a = await Peer(981).start(r)
            b = await Peer(982).start(r, x=10.0)
            assert r.msgbus is not None
            real = r.msgbus.on_frame

            def flaky(address: str, text: str) -> None:
                if "boom" in text:
                    raise RuntimeError("injected")
                real(address, text)

            r.msgbus.on_frame = flaky  # type: ignore[method-assign]
            await b.bus.subscribe("news")
            await a.bus.send_json({"type": "publish", "topic": "news", "payload": "", "x": "boom"})
            await a.bus.publish("news", b"after")
            assert (await b.bus.message("news"))["payload"] == b64(b"after")
            assert r.m_event_errors.get(kind="BusFrame") == 1
            for p in (a, b):
                await p.close()

    run(body)
