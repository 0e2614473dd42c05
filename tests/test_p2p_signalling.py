"""P2P signalling over /bus (transports.md 4): a real realm, real sockets, real signatures.

Offers, answers and candidates travel between members of one island only; every
reject (outside the island, too large, over the rate, malformed) answers its error
and delivers nothing. The same rules hold on delivery, for messages another
connector (or anything on NATS) published.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from dclcomms.errors import MessageBusError
from dclcomms.pubsub import AppData
from dclcomms.signalling import TokenBucket, check_signal, signal_target
from tests.helpers.msgbus import Peer, b64, error, realm, run
from tests.helpers.realm_client import ArchipelagoClient, BusClient, eventually

SDP = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
OFFER = json.dumps({"type": "offer", "sdp": SDP}).encode()
ANSWER = json.dumps({"type": "answer", "sdp": SDP}).encode()
CANDIDATE = json.dumps(
    {
        "candidate": {
            "candidate": "candidate:1 1 UDP 2122252543 127.0.0.1 50000 typ host",
            "sdpMid": "0",
            "sdpMLineIndex": 0,
            "usernameFragment": "abcd",
        },
        "initiator": True,
    }
).encode()


def publish(topic: str, payload: bytes) -> dict[str, Any]:
    return {"type": "publish", "topic": topic, "payload": b64(payload)}


async def nothing_for(c: BusClient, topic: str) -> None:
    with pytest.raises(TimeoutError):
        await c.message(topic, timeout=0.3)


def test_signals_reach_the_addressee_on_the_same_island() -> None:
    async def body() -> None:
        async with realm() as r:
            a = await Peer(1301).start(r)
            b = await Peer(1302).start(r, x=10.0)
            assert a.island == b.island
            for kind in ("offer", "answer", "candidate"):
                await b.bus.subscribe(f"{b.address}.{kind}")
            for kind, payload in (("offer", OFFER), ("answer", ANSWER), ("candidate", CANDIDATE)):
                await a.bus.publish(f"{b.address}.{kind}", payload)
                got = await b.bus.message(f"{b.address}.{kind}", sender=a.address)
                assert base64.b64decode(got["payload"]) == payload
            assert r.msgbus is not None
            assert r.msgbus.m_signals.get(kind="offer") == 1
            assert r.msgbus.m_signals.get(kind="candidate") == 1
            for p in (a, b):
                await p.close()

    run(body)


def test_a_peer_outside_the_island_cannot_signal() -> None:
    async def body() -> None:
        async with realm() as r:
            a = await Peer(1311).start(r)
            far = await Peer(1312).start(r, x=1000.0)
            assert far.island != a.island
            await a.bus.subscribe(f"{a.address}.offer")
            e = await error(far.bus, publish(f"{a.address}.offer", OFFER), "not_same_island")
            assert e["topic"] == f"{a.address}.offer"
            # and the other way round, and a /bus session that never joined an island
            await far.bus.subscribe(f"{far.address}.answer")
            await error(a.bus, publish(f"{far.address}.answer", ANSWER), "not_same_island")
            lone = BusClient(1313)
            await lone.connect(f"ws://127.0.0.1:{r.port}")
            await lone.handshake()
            await error(lone, publish(f"{a.address}.candidate", CANDIDATE), "not_same_island")
            await nothing_for(a.bus, f"{a.address}.offer")
            await nothing_for(far.bus, f"{far.address}.answer")
            assert r.msgbus is not None
            assert r.msgbus.m_signal_rejects.get(code="not_same_island") == 3
            assert r.msgbus.m_errors.get(code="not_same_island") == 3
            await lone.close()
            for p in (a, far):
                await p.close()

    run(body)


def test_oversized_signal_is_refused() -> None:
    async def body() -> None:
        async with realm() as r:
            a = await Peer(1321).start(r)
            b = await Peer(1322).start(r, x=10.0)
            await b.bus.subscribe(f"{b.address}.offer")
            big = json.dumps({"type": "offer", "sdp": SDP + "a=x\r\n" * 2400}).encode()
            assert len(big) > 16 * 1024
            await error(a.bus, publish(f"{b.address}.offer", big), "payload_too_large")
            await nothing_for(b.bus, f"{b.address}.offer")
            for p in (a, b):
                await p.close()

    run(body)


def test_a_flood_over_the_rate_is_refused_and_not_delivered() -> None:
    async def body() -> None:
        async with realm(p2p_signal_burst=5, p2p_signal_max_per_s=0.5) as r:
            a = await Peer(1331).start(r)
            b = await Peer(1332).start(r, x=10.0)
            topic = f"{b.address}.candidate"
            await b.bus.subscribe(topic)
            for _ in range(8):
                await a.bus.publish(topic, CANDIDATE)
            for _ in range(3):
                e = await a.bus.frame(type="error")
                assert e["code"] == "rate_limited" and e["topic"] == topic
            for _ in range(5):
                await b.bus.message(topic, sender=a.address)
            await nothing_for(b.bus, topic)
            assert r.msgbus is not None
            assert r.msgbus.m_signal_rejects.get(code="rate_limited") == 3
            # the bucket is per session: b still signals a
            await a.bus.subscribe(f"{a.address}.answer")
            await b.bus.publish(f"{a.address}.answer", ANSWER)
            await a.bus.message(f"{a.address}.answer", sender=b.address)
            for p in (a, b):
                await p.close()

    run(body)


BAD_SIGNALS = [
    ("offer", b"\xff\xfe not utf-8"),
    ("offer", b"{not json"),
    ("offer", b"[1, 2]"),
    ("offer", json.dumps({"type": "answer", "sdp": SDP}).encode()),  # type != topic
    ("offer", json.dumps({"type": "offer"}).encode()),
    ("offer", json.dumps({"type": "offer", "sdp": "hello"}).encode()),
    ("answer", json.dumps({"type": "offer", "sdp": SDP}).encode()),
    ("answer", json.dumps({"type": "answer", "sdp": 7}).encode()),
    ("candidate", json.dumps({"candidate": "candidate:1 1 UDP 1 h 1 typ host"}).encode()),
    ("candidate", json.dumps({"candidate": {"candidate": "x"}, "initiator": True}).encode()),
    ("candidate", json.dumps({"candidate": {"candidate": ""}, "initiator": "yes"}).encode()),
    ("candidate", json.dumps({"candidate": {"candidate": ""}}).encode()),
    (
        "candidate",
        json.dumps({"candidate": {"candidate": "", "sdpMLineIndex": -1}, "initiator": False}),
    ),
    (
        "candidate",
        json.dumps({"candidate": {"candidate": "", "sdpMid": 0}, "initiator": False}).encode(),
    ),
]


@pytest.mark.parametrize(("kind", "payload"), BAD_SIGNALS)
def test_check_signal_refuses_malformed_signals(kind: str, payload: bytes | str) -> None:
    data = payload.encode() if isinstance(payload, str) else payload
    with pytest.raises(MessageBusError) as e:
        check_signal(kind, data)
    assert e.value.code == "bad_signal"


def test_malformed_sdp_json_is_refused_and_not_delivered() -> None:
    async def body() -> None:
        async with realm() as r:
            a = await Peer(1341).start(r)
            b = await Peer(1342).start(r, x=10.0)
            for kind in ("offer", "answer", "candidate"):
                await b.bus.subscribe(f"{b.address}.{kind}")
            for kind, payload in BAD_SIGNALS:
                data = payload.encode() if isinstance(payload, str) else payload
                e = await error(a.bus, publish(f"{b.address}.{kind}", data), "bad_signal")
                assert e["message"].startswith("malformed signal")
            for kind in ("offer", "answer", "candidate"):
                await nothing_for(b.bus, f"{b.address}.{kind}")
            # end-of-candidates and a pranswer are well formed
            eoc = json.dumps({"candidate": {"candidate": ""}, "initiator": False}).encode()
            await a.bus.publish(f"{b.address}.candidate", eoc)
            await b.bus.message(f"{b.address}.candidate", sender=a.address)
            pr = json.dumps({"type": "pranswer", "sdp": SDP}).encode()
            await a.bus.publish(f"{b.address}.answer", pr)
            await b.bus.message(f"{b.address}.answer", sender=a.address)
            for p in (a, b):
                await p.close()

    run(body)


def test_delivery_rechecks_signals_from_elsewhere_on_the_bus() -> None:
    """What another connector (or any NATS publisher) puts on the bus is checked again."""

    async def body() -> None:
        async with realm() as r:
            a = await Peer(1351).start(r)
            b = await Peer(1352).start(r, x=10.0)
            far = await Peer(1353).start(r, x=1000.0)
            assert r.msgbus is not None
            topic = f"{a.address}.offer"
            await a.bus.subscribe(topic)
            r.pubsub.publish(f"client.peer.{far.address}.{topic}", AppData(OFFER))
            r.pubsub.publish(f"client.peer.{b.address}.{topic}", AppData(b"{}"))
            await nothing_for(a.bus, topic)
            assert r.msgbus.m_dropped.get(reason="not_same_island") == 1
            assert r.msgbus.m_dropped.get(reason="bad_signal") == 1
            r.pubsub.publish(f"client.peer.{b.address}.{topic}", AppData(OFFER))
            await a.bus.message(topic, sender=b.address)
            for p in (a, b, far):
                await p.close()

    run(body)


def test_a_peer_that_left_its_island_can_no_longer_signal_it() -> None:
    async def body() -> None:
        async with realm() as r:
            a = await Peer(1361).start(r)
            b = await Peer(1362).start(r, x=10.0)
            await a.bus.subscribe(f"{a.address}.offer")
            await b.bus.publish(f"{a.address}.offer", OFFER)
            await a.bus.message(f"{a.address}.offer", sender=b.address)
            # b's archipelago session ends; its /bus session stays open
            await b.arch.close()
            assert r.msgbus is not None
            membership = r.msgbus.membership
            await eventually(lambda: membership.island_of(b.address) is None)
            await error(b.bus, publish(f"{a.address}.offer", OFFER), "not_same_island")
            # and one that moved to another island signals its new neighbours only
            b.arch = ArchipelagoClient(1362)
            await b.arch.connect(f"ws://127.0.0.1:{r.port}")
            await b.arch.handshake()
            await b.arch.heartbeat(2000.0, 0.0, 0.0)
            moved = (await b.arch.island())["islandId"]
            assert moved != a.island
            await error(b.bus, publish(f"{a.address}.offer", OFFER), "not_same_island")
            await nothing_for(a.bus, f"{a.address}.offer")
            for p in (a, b):
                await p.close()

    run(body)


def test_signal_target_and_token_bucket() -> None:
    addr = "0x" + "ab" * 20
    assert signal_target(f"{addr}.offer") == (addr, "offer")
    assert signal_target(f"{addr}.candidate") == (addr, "candidate")
    assert signal_target(f"{addr}.chat") is None
    assert signal_target(f"{addr}.offer.x") is None
    assert signal_target("island.I1.offer") is None
    now = [0.0]
    bucket = TokenBucket(2.0, 3, clock=lambda: now[0])
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    now[0] = 0.5  # one token back
    assert [bucket.take() for _ in range(2)] == [True, False]
    now[0] = 100.0  # never more than the burst
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
