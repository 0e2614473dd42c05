"""The bridge over NATS: rooms in one process, the bridge in another.

Subjects (control-plane.md 5; ``<room>`` is the room id with ``.`` written ``%2E``, so
a room id is one subject token):

=======================================  ==============================================
``dclcomms.bridge.room.<room>.out``      rooms -> bridge: the room's traffic while tapped,
                                         JSON ``{"room","from","unreliable","ts","body",
                                         "scene"}`` (``body``: the RFC-4 packet, base64)
``dclcomms.bridge.room.<room>.in``       bridge -> rooms: broadcast ``body`` from ``from``
                                         (the credential's identity); with
                                         ``"release": true`` the identity leaves the room
``dclcomms.bridge.taps``                 bridge -> rooms: ``{"bridge","rooms","sceneRooms",
                                         "ttlMs"}``, the rooms a bridge instance reads,
                                         every ``interval`` and on change (a lease: a rooms
                                         node taps a room while some bridge's lease names it)
``dclcomms.bridge.taps.request``         rooms -> bridges: announce your leases now (sent
                                         by a rooms node when it starts)
=======================================  ==============================================

``scene`` (``true``: a scene room of the gatekeeper's ``/scene-rooms/`` registry, absent or
``false``: an island room of ``/rooms/``) travels in every payload; ``sceneRooms`` lists
the scene rooms of a lease. A room id of one registry never reaches the other.

:class:`NatsRoomTaps` runs beside a :class:`dclcomms.ws.Server` serving rooms (the realm,
``dclcomms rooms --nats``); :class:`NatsRoomLink` is the bridge's
:class:`~dclcomms.bridge.links.RoomLink` in ``dclcomms bridge``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import secrets
from collections import deque
from typing import Any

from dclcomms.bridge.links import RoomHandler, RoomKey
from dclcomms.clock import now_ms

log = logging.getLogger("dclcomms.bridge.nats")

PREFIX = "dclcomms.bridge.room."
TAPS = "dclcomms.bridge.taps"
TAPS_REQUEST = "dclcomms.bridge.taps.request"


def room_token(room: str) -> str:
    """The subject token of a room id (``[A-Za-z0-9._:@-]``: ``.`` -> ``%2E``)."""
    return room.replace(".", "%2E")


def token_room(token: str) -> str:
    return token.replace("%2E", ".")


def out_subject(room: str) -> str:
    return f"{PREFIX}{room_token(room)}.out"


def in_subject(room: str) -> str:
    return f"{PREFIX}{room_token(room)}.in"


def _dumps(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


class _Outbox:
    """Ordered, non-blocking publishes from synchronous code (one drain task)."""

    def __init__(self, nc: Any, max_items: int = 100_000) -> None:
        self.nc = nc
        self.max_items = max_items
        self.items: deque[tuple[str, bytes]] = deque()
        self.dropped = 0
        self._task: asyncio.Task[None] | None = None

    def publish(self, subject: str, data: bytes) -> None:
        if len(self.items) >= self.max_items:
            self.dropped += 1
            return
        self.items.append((subject, data))
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        while self.items:
            subject, data = self.items.popleft()
            try:
                await self.nc.publish(subject, data)
            except Exception as e:  # NATS away: nats-py reconnects; this message is lost
                self.dropped += 1
                log.warning("bridge publish failed", extra={"error": repr(e)})

    async def aclose(self) -> None:
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)


class NatsRoomTaps:
    """The rooms side: taps rooms some bridge leases, publishes their traffic on ``.out``
    and broadcasts what arrives on ``.in``. Feed it the server's
    :class:`dclcomms.ws.RoomMessage` events through :meth:`deliver`."""

    def __init__(self, server: Any, nc: Any, taps: Any = None) -> None:
        from dclcomms.bridge.links import TapOwners

        self.server = server
        self.taps = taps if taps is not None else TapOwners(server)
        self.nc = nc
        self.outbox = _Outbox(nc)
        # bridge -> ((scene, room) keys, until ms)
        self.leases: dict[str, tuple[frozenset[RoomKey], int]] = {}
        self.tapped: set[RoomKey] = set()
        self.published = 0
        self.injected = 0
        self._subs: list[Any] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> NatsRoomTaps:
        self._subs.append(await self.nc.subscribe(TAPS, cb=self._on_taps))
        self._subs.append(await self.nc.subscribe(f"{PREFIX}*.in", cb=self._on_in))
        await self.nc.flush()
        await self.nc.publish(TAPS_REQUEST, b"")
        self._task = asyncio.get_running_loop().create_task(self._expire_loop())
        return self

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
        for s in self._subs:
            with contextlib.suppress(Exception):
                await s.unsubscribe()
        self._subs.clear()
        await self.outbox.aclose()

    async def _on_taps(self, msg: Any) -> None:
        try:
            d = json.loads(msg.data)
            bridge = str(d["bridge"])
            rooms = frozenset((False, str(r)) for r in d["rooms"]) | frozenset(
                (True, str(r)) for r in d.get("sceneRooms", ())
            )
            ttl = int(d.get("ttlMs", 30_000))
        except (ValueError, KeyError, TypeError):
            log.warning("bad bridge taps message")
            return
        self.leases[bridge] = (rooms, now_ms() + ttl)
        self._apply()

    def _apply(self) -> None:
        now = now_ms()
        for b in [b for b, (_, until) in self.leases.items() if until <= now]:
            del self.leases[b]
        want: set[RoomKey] = set()
        for rooms, _ in self.leases.values():
            want |= rooms
        for scene, room in want - self.tapped:
            self.taps.set("nats", room, True, scene)
        for scene, room in self.tapped - want:
            self.taps.set("nats", room, False, scene)
        self.tapped = want

    async def _expire_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self._apply()

    async def _on_in(self, msg: Any) -> None:
        try:
            d = json.loads(msg.data)
            room, sender = str(d["room"]), str(d["from"])
            scene = d.get("scene", False) is True
            release = bool(d.get("release"))
            body = b"" if release else base64.b64decode(d["body"], validate=True)
            unreliable = bool(d.get("unreliable", False))
        except (ValueError, KeyError, TypeError):
            log.warning("bad bridge .in message", extra={"subject": msg.subject})
            return
        if token_room(msg.subject[len(PREFIX) : -len(".in")]) != room:
            return  # the subject names another room
        if release:
            self.server.release_room_identity(room, sender, scene)
            return
        self.injected += 1
        self.server.inject_room(room, sender, body, unreliable, scene)

    def deliver(
        self, room: str, sender: str, body: bytes, unreliable: bool, ts: int, scene: bool = False
    ) -> None:
        if (scene, room) not in self.tapped:
            return
        self.published += 1
        self.outbox.publish(
            out_subject(room),
            _dumps(
                {
                    "room": room,
                    "from": sender,
                    "unreliable": unreliable,
                    "ts": ts,
                    "body": base64.b64encode(body).decode(),
                    "scene": scene,
                }
            ),
        )


class NatsRoomLink:
    """The bridge side: leases the rooms its sessions read (``dclcomms.bridge.taps``),
    receives their ``.out`` traffic and publishes injections on ``.in``."""

    def __init__(self, nc: Any, *, interval_s: float = 10.0, bridge_id: str | None = None) -> None:
        self.nc = nc
        self.interval_s = interval_s
        self.bridge_id = bridge_id or secrets.token_hex(8)
        self.on_message: RoomHandler | None = None
        self.outbox = _Outbox(nc)
        # (scene, room) -> its .out subscription (None while pending)
        self.rooms: dict[RoomKey, Any] = {}
        self._subs: list[Any] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> NatsRoomLink:
        self._subs.append(await self.nc.subscribe(TAPS_REQUEST, cb=self._on_request))
        self._task = asyncio.get_running_loop().create_task(self._announce_loop())
        return self

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
        for s in [*self._subs, *(s for s in self.rooms.values() if s is not None)]:
            with contextlib.suppress(Exception):
                await s.unsubscribe()
        self.rooms.clear()
        self._announce()  # an empty lease: rooms stop tapping for this bridge at once
        await self.outbox.aclose()

    def _announce(self) -> None:
        ttl = int(self.interval_s * 3000)
        lease = {
            "bridge": self.bridge_id,
            "rooms": sorted(r for scene, r in self.rooms if not scene),
            "sceneRooms": sorted(r for scene, r in self.rooms if scene),
            "ttlMs": ttl,
        }
        self.outbox.publish(TAPS, _dumps(lease))

    async def _announce_loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            self._announce()

    async def _on_request(self, _msg: Any) -> None:
        self._announce()

    def tap(self, room: str, on: bool, scene: bool = False) -> None:
        key = (scene, room)
        if on and key not in self.rooms:
            self.rooms[key] = None
            asyncio.get_running_loop().create_task(self._subscribe(key))
        elif not on and key in self.rooms:
            sub = self.rooms.pop(key)
            if sub is not None:
                asyncio.get_running_loop().create_task(sub.unsubscribe())
            self._announce()

    async def _subscribe(self, key: RoomKey) -> None:
        scene, room = key

        async def on_out(msg: Any) -> None:
            self._on_out(msg, scene)

        sub = await self.nc.subscribe(out_subject(room), cb=on_out)
        if key not in self.rooms:  # untapped meanwhile
            await sub.unsubscribe()
            return
        self.rooms[key] = sub
        await self.nc.flush()
        self._announce()  # after the subscription: nothing the rooms send is missed

    def _on_out(self, msg: Any, scene: bool) -> None:
        try:
            d = json.loads(msg.data)
            room, sender = str(d["room"]), str(d["from"])
            body = base64.b64decode(d["body"], validate=True)
            unreliable, ts = bool(d.get("unreliable", False)), int(d.get("ts", 0))
            of_scene = d.get("scene", False) is True
        except (ValueError, KeyError, TypeError):
            log.warning("bad bridge .out message", extra={"subject": msg.subject})
            return
        # one subscription per (scene, room): the other registry's room of that id is not ours
        if of_scene != scene or (scene, room) not in self.rooms or self.on_message is None:
            return
        self.on_message(room, sender, body, unreliable, ts, scene)

    def inject(
        self, room: str, identity: str, body: bytes, unreliable: bool, scene: bool = False
    ) -> None:
        self.outbox.publish(
            in_subject(room),
            _dumps(
                {
                    "room": room,
                    "from": identity,
                    "unreliable": unreliable,
                    "ts": now_ms(),
                    "body": base64.b64encode(body).decode(),
                    "scene": scene,
                }
            ),
        )

    def release(self, room: str, identity: str, scene: bool = False) -> None:
        self.outbox.publish(
            in_subject(room),
            _dumps({"room": room, "from": identity, "release": True, "scene": scene}),
        )


__all__ = [
    "TAPS",
    "TAPS_REQUEST",
    "NatsRoomLink",
    "NatsRoomTaps",
    "in_subject",
    "out_subject",
    "room_token",
]
