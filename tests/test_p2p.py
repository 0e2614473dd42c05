"""P2P islands end to end on 127.0.0.1: a real realm, real clients, real WebRTC (aiortc).

The realm runs the built-in ``tiered`` policy (P2P below 8 peers, WebSocket rooms
from 8). Bots are :class:`~dclcomms.client.CommunicationsDirector` instances with
real identities; they find each other through the realm's ``/bus`` signalling and
exchange RFC-4 packets over data channels. ICE gathers host candidates on
127.0.0.1 only (no STUN on one machine).
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from dclcomms import codec
from dclcomms.auth import Identity
from dclcomms.client import (
    CommunicationsDirector,
    Message,
    P2PAdapter,
    P2POptions,
    PeerDisconnected,
    TransportError,
    WsRoomAdapter,
    create_adapter,
)
from dclcomms.client.msgbus import MessageBusClient
from dclcomms.client.p2p import SignalHub
from dclcomms.config import RealmConfig
from dclcomms.errors import MessageBusError
from dclcomms.realm import Realm
from tests.helpers.common import realm_config
from tests.helpers.common import run as run_test

LOOPBACK = ("127.0.0.1",)


def config(**kw: Any) -> RealmConfig:
    return realm_config(
        **{"policy": "tiered", "tiered_p2p_up_at": 8, "tiered_p2p_down_at": 4, **kw}
    )


def run(body: Callable[[], Awaitable[None]], timeout: float = 120.0) -> None:
    run_test(body, timeout)


async def until(
    check: Callable[[], Any],
    what: str,
    timeout: float = 30.0,
    detail: Callable[[], Any] = lambda: "",
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}: {detail()}"
        await asyncio.sleep(0.05)


def progress(bots: list[Bot], tag: str) -> dict[str, Any]:
    """Who got how many ``tag`` chats from whom, and each mesh's counters (failure details)."""
    return {
        b.address[:8]: {
            "got": {
                s.address[:8]: sum(c.startswith(tag + ":") for c in b.chats[s.address])
                for s in bots
                if s is not b
            },
            "p2p": b.p2p.stats() if b.p2p is not None else None,
        }
        for b in bots
    }


def chat(tag: str, k: int) -> bytes:
    packet = {"chat": {"message": f"{tag}:{k}", "timestamp": 1.0}, "protocolVersion": 100}
    return codec.encode(codec.RFC4_PACKET, packet)


def position(k: int, x: float) -> bytes:
    pos = {"index": k, "positionX": x, "positionY": 0.0, "positionZ": 0.0, "rotationW": 1.0}
    return codec.encode(codec.RFC4_PACKET, {"position": pos, "protocolVersion": 100})


class Bot:
    """A client on the realm, recording every RFC-4 packet it receives by sender."""

    def __init__(
        self, realm: Realm, seed: int, x: float, *, early: bool = False, **p2p: Any
    ) -> None:
        self.x = x
        self.identity = Identity.generate(seed)
        self.address = self.identity.address.lower()
        self.director = CommunicationsDirector(
            realm.url,
            self.identity,
            position=lambda: (self.x, 0.0, 0.0),
            heartbeat_interval_s=0.2,
            p2p_options=P2POptions(host_addresses=LOOPBACK, seed=seed, **p2p),
            open_bus_early=early,
        )
        self.chats: dict[str, list[str]] = defaultdict(list)
        self.positions: dict[str, list[int]] = defaultdict(list)
        self.left: list[str] = []
        self.errors: list[Exception] = []
        self.director.on("message", self.on_message)
        self.director.on("PEER_DISCONNECTED", lambda p: self.left.append(p.address))
        self.director.on("error", self.errors.append)

    def on_message(self, m: Message) -> None:
        packet = codec.decode(codec.RFC4_PACKET, m.data)
        if "chat" in packet:
            self.chats[m.address].append(packet["chat"]["message"])
        elif "position" in packet:
            self.positions[m.address].append(int(packet["position"].get("index", 0)))
        else:
            raise AssertionError(f"unexpected packet {packet}")

    @property
    def p2p(self) -> P2PAdapter | None:
        a = self.director.adapter
        return a if isinstance(a, P2PAdapter) else None

    async def send_round(self, tag: str, n: int, *, unreliable: bool = True) -> None:
        for k in range(n):
            assert await self.director.send(chat(tag, k), reliable=True)
            if unreliable:
                assert await self.director.send(position(k, self.x), reliable=False)
            await asyncio.sleep(0.01)


def on_one_p2p_island(bots: list[Bot]) -> bool:
    adapters = [b.p2p for b in bots]
    if any(a is None for a in adapters):
        return False
    islands = {a.island_id for a in adapters if a is not None}
    want = {b.address for b in bots}
    return len(islands) == 1 and all(
        a is not None and a.members == want - {a.me} and a.reachable() == a.members
        for a in adapters
    )


def check_round(bots: list[Bot], senders: list[Bot], tag: str, n: int) -> None:
    """Every bot got every other sender's ``n`` reliable chats of ``tag``, once, in order."""
    want = [f"{tag}:{k}" for k in range(n)]
    for b in bots:
        for s in senders:
            if s is not b:
                got = [c for c in b.chats[s.address] if c.startswith(tag + ":")]
                assert got == want, (b.address, s.address, got[:5], len(got))


def mesh_settled(bots: list[Bot]) -> bool:
    """On one P2P island, every bot's wanted connections open and every bot's router
    knowing every bot's open connections (their ``links`` floods arrived): every relay
    computes the same shortest-path trees for unreliable packets. (While the mesh still
    grows, relays that disagree on a tree each leave a packet to the other: it is lost.)"""
    if not on_one_p2p_island(bots):
        return False
    mesh = [b.p2p for b in bots]
    actual = {a.me: frozenset(a.open_links) for a in mesh if a is not None}
    return all(
        a is not None
        and set(a.wanted()) <= actual[a.me]
        and all(a.router.links.get(m) == links for m, links in actual.items())
        for a in mesh
    )


def test_six_bots_mesh_a_seventh_joins_one_leaves_the_island_moves_to_rooms_and_back() -> None:
    async def body() -> None:
        realm = await Realm(config()).start()
        bots: list[Bot] = []
        try:
            bots = [Bot(realm, 1400 + i, 3.0 * i) for i in range(6)]
            await asyncio.gather(*(b.director.start() for b in bots))
            await until(
                lambda: mesh_settled(bots),
                "6 bots on one P2P island, mesh settled",
                timeout=60,
                detail=lambda: progress(bots, "a"),
            )
            for b in bots:
                assert b.p2p is not None
                assert b.director.island_id == b.p2p.island_id
                assert b.director.adapter.conn_str == f"p2p:{b.p2p.island_id}:{b.address}"
                assert 1 <= len(b.p2p.open_links) <= 6

            # 0 loss, in order, for reliable packets; unreliable ones arrive
            await asyncio.gather(*(b.send_round("a", 30) for b in bots))
            await until(
                lambda: all(
                    len(b.chats[s.address]) >= 30 for b in bots for s in bots if s is not b
                ),
                "round a",
                detail=lambda: progress(bots, "a"),
            )
            check_round(bots, bots, "a", 30)
            for b in bots:
                for s in bots:
                    if s is not b:
                        got = b.positions[s.address]
                        assert len(got) == len(set(got)) and len(got) >= 15, (len(got), got)

            # a seventh member joins the mesh
            seventh = Bot(realm, 1406, 18.0)
            await seventh.director.start()
            bots.append(seventh)
            await until(lambda: on_one_p2p_island(bots), "the 7th bot in the mesh")
            await asyncio.gather(*(b.send_round("b", 20, unreliable=False) for b in bots))
            await until(
                lambda: all(
                    sum(c.startswith("b:") for c in b.chats[s.address]) >= 20
                    for b in bots
                    for s in bots
                    if s is not b
                ),
                "round b",
                detail=lambda: progress(bots, "b"),
            )
            check_round(bots, bots, "b", 20)

            # one leaves while everybody is sending: the others lose nothing
            leaver = bots[2]
            stay = [b for b in bots if b is not leaver]

            async def leave() -> None:
                await asyncio.sleep(0.3)
                await leaver.director.stop()

            await asyncio.gather(leave(), *(b.send_round("c", 60, unreliable=False) for b in stay))
            await until(
                lambda: all(leaver.address in b.left for b in stay), "PEER_DISCONNECTED everywhere"
            )
            await until(
                lambda: all(
                    sum(c.startswith("c:") for c in b.chats[s.address]) >= 60
                    for b in stay
                    for s in stay
                    if s is not b
                ),
                "round c",
                detail=lambda: progress(stay, "c"),
            )
            check_round(stay, stay, "c", 60)
            for b in stay:
                assert b.p2p is not None and leaver.address not in b.p2p.links
            bots = stay

            # the 8th peer makes the island too big for P2P: everyone moves to rooms
            old = {b.address: b.p2p for b in bots}
            pcs = [link.pc for a in old.values() if a is not None for link in a.links.values()]
            assert pcs
            for i in (7, 8):
                newcomer = Bot(realm, 1400 + i, 3.0 * i)
                await newcomer.director.start()
                bots.append(newcomer)
            await until(
                lambda: (
                    all(isinstance(b.director.adapter, WsRoomAdapter) for b in bots)
                    and len({b.director.island_id for b in bots}) == 1
                ),
                "every bot on the island's WebSocket room",
            )
            for a in old.values():
                assert a is not None and not a.connected and a.links == {}
            await until(lambda: all(pc.connectionState == "closed" for pc in pcs), "closed pcs")
            ws = [b.director.adapter for b in bots]
            await until(
                lambda: all(isinstance(a, WsRoomAdapter) and len(a.peers) == 7 for a in ws),
                "room membership",
            )
            await asyncio.gather(*(b.send_round("d", 3, unreliable=False) for b in bots))
            await until(
                lambda: all(
                    sum(c.startswith("d:") for c in b.chats[s.address]) >= 3
                    for b in bots
                    for s in bots
                    if s is not b
                ),
                "round d over the room",
            )
            check_round(bots, bots, "d", 3)

            # four leave: the island shrinks to the P2P threshold (4) and comes back to P2P
            for b in bots[4:]:
                await b.director.stop()
            bots = bots[:4]
            await until(lambda: on_one_p2p_island(bots), "the 4 remaining bots back on P2P")
            await asyncio.gather(*(b.send_round("e", 10, unreliable=False) for b in bots))
            await until(
                lambda: all(
                    sum(c.startswith("e:") for c in b.chats[s.address]) >= 10
                    for b in bots
                    for s in bots
                    if s is not b
                ),
                "round e back on P2P",
                detail=lambda: progress(bots, "e"),
            )
            check_round(bots, bots, "e", 10)
            for b in bots:
                assert not b.errors, b.errors
        finally:
            await asyncio.gather(*(b.director.stop() for b in bots), return_exceptions=True)
            await realm.stop()

    run(body)


def test_trickled_candidates_glare_and_policy_p2p() -> None:
    """Candidates sent apart from the SDP (as browsers do) connect; both sides offering at
    once (glare) ends with one connection, the higher address's."""

    async def body() -> None:
        realm = await Realm(config(policy="p2p")).start()
        bots: list[Bot] = []
        try:
            bots = [
                Bot(realm, 1500 + i, 4.0 * i, early=True, trickle=True, offer_wait_s=0.0)
                for i in range(2)
            ]
            await asyncio.gather(*(b.director.start() for b in bots))
            # listening before any island: the signalling hub exists, no adapter yet needed
            assert all(b.director.signals is not None for b in bots)
            await until(lambda: on_one_p2p_island(bots), "two bots connected")
            a, b = (x.p2p for x in bots)
            assert a is not None and b is not None
            stats = [a.stats(), b.stats()]
            assert all(s.get("candidates_added", 0) >= 1 for s in stats), stats
            assert all(s.get("sent_candidate", 0) >= 2 for s in stats), stats  # + end marker
            # glare: both offered at once; the lower address yielded, one link remains
            assert sum(s.get("offers", 0) for s in stats) >= 1
            low, high = sorted((a, b), key=lambda x: x.me)
            if low.counters["offers"]:  # the race happened
                assert low.counters["glare_yielded"] + high.counters["glare_kept"] >= 1
            assert high.links[low.me].initiator and not low.links[high.me].initiator
            await bots[0].send_round("t", 5)
            await until(lambda: len(bots[1].chats[bots[0].address]) >= 5, "trickled mesh data")
            check_round(bots[1:], bots[:1], "t", 5)
            assert realm.msgbus is not None and realm.msgbus.m_signals.get(kind="candidate") >= 4

            # the server ends a peer's /bus session: the director opens another, the mesh
            # stays up and a newcomer still reaches that peer through the new session
            first = bots[0].director.bus
            assert first is not None and realm.server is not None
            realm.server.close_bus(bots[0].address, 4000, "maintenance")
            await until(
                lambda: (
                    bots[0].director.bus is not first
                    and bots[0].director.bus is not None
                    and not bots[0].director.bus.closed
                ),
                "a new /bus session",
            )
            assert bots[0].director.bus_losses == 1 and a.links[b.me].open
            bots.append(Bot(realm, 1502, 8.0, early=True, trickle=True))
            await bots[2].director.start()
            await until(lambda: on_one_p2p_island(bots), "the third bot meshed with both")
        finally:
            await asyncio.gather(*(b.director.stop() for b in bots), return_exceptions=True)
            await realm.stop()

    run(body)


def test_bus_client_ended_by_the_server_releases_its_session_on_close() -> None:
    async def body() -> None:
        realm = await Realm(config(policy="p2p")).start()
        me = Identity.generate(1611)
        try:
            bus = await MessageBusClient(f"ws://127.0.0.1:{realm.port}/bus", me).connect()
            session = bus._session
            assert realm.server is not None and session is not None
            realm.server.close_bus(me.address.lower(), 4000, "maintenance")
            deadline = asyncio.get_running_loop().time() + 5
            while not bus.closed:  # the reader saw the server's close
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.01)
            assert not session.closed
            await bus.close()
            assert session.closed and bus._session is None
            await bus.close()  # again: nothing left to do
        finally:
            await realm.stop()

    run(body)


def test_offers_from_strangers_and_bad_connection_strings() -> None:
    async def body() -> None:
        realm = await Realm(config(policy="p2p")).start()
        me, other = Identity.generate(1601), Identity.generate(1602)
        bus = await MessageBusClient(f"ws://127.0.0.1:{realm.port}/bus", me).connect()
        try:
            for conn in ("p2p:I1", "p2p::" + me.address, f"p2p:I1:{other.address}"):
                with pytest.raises(TransportError) as e:
                    create_adapter(conn, me, bus=bus)
                assert e.value.code == "bad_connection_string"
            with pytest.raises(TransportError) as e:
                create_adapter(f"p2p:I1:{me.address}", me)
            assert e.value.code == "bus_unavailable"
            # a stranger's offer is not answered (and our bus session survives it)
            adapter = create_adapter(f"p2p:I9:{me.address}", me, bus=bus, members=[])
            assert isinstance(adapter, P2PAdapter)
            await adapter.connect()
            adapter._on_offer(other.address.lower(), b'{"type":"offer","sdp":"v=0"}')
            assert adapter.counters["offer_from_stranger"] == 1 and adapter.links == {}
            # refused subscribes raise the server's code
            with pytest.raises(MessageBusError) as m:
                await bus.subscribe(f"{other.address.lower()}.offer", lambda s, p: None)
            assert m.value.code == "forbidden_topic"
            seen: list[PeerDisconnected] = []
            adapter.on("PEER_DISCONNECTED", seen.append)
            adapter.members_changed([other.address])
            adapter.members_changed([])
            assert seen == [PeerDisconnected(other.address.lower())]
            await adapter.disconnect()
            with pytest.raises(TransportError) as e:
                await adapter.send(b"x", reliable=True)
            assert e.value.code == "not_connected"
        finally:
            await bus.close()
            await realm.stop()

    run(body)


def test_a_connection_closed_while_it_gathers_leaves_no_udp_socket_open() -> None:
    """A member leaving (its connection dropped) or ``disconnect`` while our offer still
    gathers ICE candidates: aioice adds the gathering's UDP sockets to the connection only
    when the gathering ends, so closing in the middle closed none of them, and cancelling
    the gathering left those already bound to nobody. They stayed open until the garbage
    collector found them after the event loop had ended ("unclosed transport", once seen
    during an unrelated test). Every moment of the gathering is tried (k loop turns after
    the offer started, three host addresses); every UDP transport opened must be closed."""

    async def body() -> None:
        loop = asyncio.get_running_loop()
        opened: list[asyncio.BaseTransport] = []
        create = loop.create_datagram_endpoint

        async def recorded(*args: Any, **kwargs: Any) -> Any:
            transport, protocol = await create(*args, **kwargs)
            opened.append(transport)
            return transport, protocol

        loop.create_datagram_endpoint = recorded  # type: ignore[method-assign]
        realm = await Realm(config(policy="p2p")).start()
        a, b = Identity.generate(1611), Identity.generate(1612)
        me, other = (a, b) if a.address.lower() > b.address.lower() else (b, a)
        peer = other.address.lower()  # me > peer: the maintainer offers at once
        bus = await MessageBusClient(f"ws://127.0.0.1:{realm.port}/bus", me).connect()
        hub = await SignalHub(bus).start()  # one subscription for every adapter (as a director)
        opts = P2POptions(host_addresses=("127.0.0.1", "127.0.0.2", "127.0.0.3"), seed=1)
        offers = 0
        try:
            for leave in (True, False):
                for k in range(16):
                    adapter = create_adapter(
                        f"p2p:I9:{me.address}", me, bus=bus, members=[], options=opts, hub=hub
                    )
                    assert isinstance(adapter, P2PAdapter)
                    await adapter.connect()
                    adapter.members_changed([peer])
                    for _ in range(k):
                        await asyncio.sleep(0)
                    if leave:
                        adapter.members_changed([])  # its connection is dropped
                        await asyncio.sleep(0.05)
                    await adapter.disconnect()
                    offers += adapter.counters["offers"]
                    still_open = [t for t in opened if not t.is_closing()]
                    assert still_open == [], (leave, k, still_open)
        finally:
            hub.close()
            await bus.close()
            await realm.stop()
        assert offers >= 24, offers  # most turns closed an offer under way (not before it)
        assert len(opened) >= 3 * 24

    run(body)
