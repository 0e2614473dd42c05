"""The bridge's LiveKit link: hidden reader and identity-bearing injectors.

No LiveKit server runs here, so the rooms are stand-ins through the link's
``room_factory`` seam (recording connect/publish/disconnect and firing
``data_received`` as the realtime SDK does); the tokens are real and verified with
livekit-api's TokenVerifier, and the packets are the SDK's own ``rtc.DataPacket``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

rtc = pytest.importorskip("livekit.rtc")
from livekit import api  # noqa: E402

from dclcomms.bridge.livekit import LiveKitRoomLink  # noqa: E402

KEY, SECRET = "APIbridge", "s" * 32


@dataclass
class Participant:
    identity: str


@dataclass
class StandInRoom:
    """What the link uses of ``rtc.Room``."""

    handlers: dict[str, Callable[..., Any]] = field(default_factory=dict)
    url: str = ""
    token: str = ""
    published: list[tuple[bytes, bool]] = field(default_factory=list)
    disconnected: bool = False

    def on(self, event: str, cb: Callable[..., Any]) -> None:
        self.handlers[event] = cb

    async def connect(self, url: str, token: str) -> None:
        self.url, self.token = url, token

    async def disconnect(self) -> None:
        self.disconnected = True

    @property
    def local_participant(self) -> Any:
        room = self

        class Local:
            async def publish_data(self, payload: bytes, *, reliable: bool = True) -> None:
                room.published.append((payload, reliable))

        return Local()


def claims(token: str) -> Any:
    return api.TokenVerifier(KEY, SECRET).verify(token)


def test_reader_is_hidden_and_hands_packets_with_the_sender() -> None:
    async def body() -> None:
        rooms: list[StandInRoom] = []
        link = LiveKitRoomLink(
            "lk.example.org",
            KEY,
            SECRET,
            room_factory=lambda: rooms.append(StandInRoom()) or rooms[-1],
        )
        got: list[tuple[str, str, bytes, bool]] = []
        link.on_message = lambda room, sender, data, unreliable, ts: got.append(
            (room, sender, data, unreliable)
        )
        link.tap("scene-main:s1", True)
        link.tap("scene-main:s1", True)  # one reader per room
        await asyncio.sleep(0.05)
        assert len(rooms) == 1 and rooms[0].url == "wss://lk.example.org"
        c = claims(rooms[0].token)
        assert c.identity == "bridge:reader"
        assert c.video.room == "scene-main:s1" and c.video.room_join and c.video.hidden
        assert c.video.can_subscribe and not c.video.can_publish and not c.video.can_publish_data
        on_data = rooms[0].handlers["data_received"]
        alice = Participant("0xalice")
        on_data(rtc.DataPacket(b"\x01hi", rtc.DataPacketKind.KIND_RELIABLE, alice))
        on_data(rtc.DataPacket(b"\x02", rtc.DataPacketKind.KIND_LOSSY, alice))
        on_data(rtc.DataPacket(b"server-side", rtc.DataPacketKind.KIND_RELIABLE, None))  # no sender
        assert got == [
            ("scene-main:s1", "0xalice", b"\x01hi", False),
            ("scene-main:s1", "0xalice", b"\x02", True),
        ]
        link.tap("scene-main:s1", False)
        await asyncio.sleep(0.01)
        assert rooms[0].disconnected and not link.readers

    asyncio.run(body())


def test_injection_joins_as_the_server_identity_data_only() -> None:
    async def body() -> None:
        rooms: list[StandInRoom] = []
        link = LiveKitRoomLink(
            "wss://lk", KEY, SECRET, room_factory=lambda: rooms.append(StandInRoom()) or rooms[-1]
        )
        link.inject("scene-main:s1", "server:doors", b"open", False)
        link.inject("scene-main:s1", "server:doors", b"tick", True)
        await asyncio.sleep(0.05)
        assert len(rooms) == 1  # one participant per (room, identity)
        c = claims(rooms[0].token)
        assert c.identity == "server:doors" and not c.video.hidden
        assert c.video.can_publish_data and not c.video.can_publish
        assert rooms[0].published == [(b"open", True), (b"tick", False)]
        link.release("scene-main:s1", "server:doors")
        await asyncio.sleep(0.01)
        assert rooms[0].disconnected
        await link.aclose()

    asyncio.run(body())


def test_realm_with_a_livekit_gatekeeper_reads_and_writes_its_scene_rooms_there(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A realm whose gatekeeper is configured with LiveKit serves scene rooms on LiveKit:
    the embedded bridge routes scene subscriptions and injections to the LiveKit link (room
    named by the gatekeeper, SCENE_ROOM_PREFIX included), island rooms stay built-in."""
    from dclcomms import codec
    from dclcomms.bridge import BridgeClient, MemoryKeyStore
    from dclcomms.bridge.links import SceneRoutedLink
    from dclcomms.config import RealmConfig
    from dclcomms.realm import Realm

    monkeypatch.setenv("SCENE_ROOM_PREFIX", "scene-")

    async def body() -> None:
        keys = MemoryKeyStore()
        key, _ = keys.create("doors", ["scene:main:bafyscene1", "island:*"])
        cfg = RealmConfig(
            host="127.0.0.1",
            port=0,
            log_format="text",
            log_level="WARNING",
            bridge=True,
            livekit_host="lk.example.org",
            livekit_api_key=KEY,
            livekit_api_secret=SECRET,
        )
        realm = await Realm(cfg, bridge_keys=keys).start()
        try:
            assert realm.bridge is not None and isinstance(realm.bridge.link, SceneRoutedLink)
            lk = realm.bridge.link.scenes
            assert isinstance(lk, LiveKitRoomLink)
            rooms: list[StandInRoom] = []
            lk.room_factory = lambda: rooms.append(StandInRoom()) or rooms[-1]
            async with BridgeClient(f"ws://127.0.0.1:{realm.port}/bridge", key=key) as s:
                sub = await s.subscribe("scene", "main:bafyscene1")
                assert sub.room == "scene-main:bafyscene1"
                for _ in range(100):
                    if rooms:
                        break
                    await asyncio.sleep(0.02)
                reader = rooms[0]
                c = claims(reader.token)
                assert (c.identity, c.video.room) == ("bridge:reader", "scene-main:bafyscene1")
                assert c.video.hidden and not c.video.can_publish_data
                packet = codec.encode(codec.RFC4_PACKET, {"chat": {"message": "hi"}})
                reader.handlers["data_received"](
                    rtc.DataPacket(packet, rtc.DataPacketKind.KIND_RELIABLE, Participant("0xa1"))
                )
                msg = await sub.get(5)
                assert (msg.sender, msg.room, msg.kind) == (
                    "0xa1",
                    "scene-main:bafyscene1",
                    "scene",
                )
                assert msg.packet == {"chat": {"message": "hi"}}
                await sub.send(packet)
                for _ in range(100):
                    if len(rooms) > 1 and rooms[1].published:
                        break
                    await asyncio.sleep(0.02)
                injector = rooms[1]
                assert claims(injector.token).identity == "server:doors"
                assert injector.published == [(packet, True)]
                # an island stays a built-in room: tapped on the realm's server, no LiveKit
                await s.subscribe("island", "I1")
                assert len(rooms) == 2
                assert realm.server.stats()["bridge"]["taps"] == 1
            await asyncio.sleep(0.05)
            assert reader.disconnected and injector.disconnected  # untapped and released
        finally:
            await realm.stop()

    asyncio.run(asyncio.wait_for(body(), 60))
