"""Where the bridge reads and writes room traffic: a :class:`RoomLink`.

:class:`LocalRoomLink` drives the rooms of the same process (the embedded realm's
C++ server: room taps and injection). :mod:`dclcomms.bridge.nats` has the NATS
pair for deployments where the rooms run in other processes.
"""

from __future__ import annotations

from typing import Any, Protocol


class RoomHandler(Protocol):
    """Where a link hands a room's traffic: ``(room, sender, RFC-4 body, unreliable,
    server time in ms, scene)``; ``scene``: the room is a scene room (the gatekeeper's
    ``/scene-rooms/`` registry), else an island room (``/rooms/``)."""

    def __call__(
        self, room: str, sender: str, body: bytes, unreliable: bool, ts: int, scene: bool = False
    ) -> None: ...


class RoomLink(Protocol):
    """Room taps and injection as the gateway uses them. ``scene`` names the registry:
    the built-in scene rooms (``/scene-rooms/<room>``) or the island rooms
    (``/rooms/<room>``); a room id of one never reaches the other."""

    on_message: RoomHandler | None

    def tap(self, room: str, on: bool, scene: bool = False) -> None:
        """Start/stop copying ``room``'s traffic to :attr:`on_message`."""

    def inject(
        self, room: str, identity: str, body: bytes, unreliable: bool, scene: bool = False
    ) -> None:
        """Broadcast ``body`` to ``room``'s members from ``identity``."""

    def release(self, room: str, identity: str, scene: bool = False) -> None:
        """``identity`` stops injecting into ``room`` (its members see it leave)."""


RoomKey = tuple[bool, str]  # (scene, room)


class TapOwners:
    """Who wants a room of one server tapped: the server's tap is on while any owner
    (the local gateway, the NATS taps of remote bridges) wants it."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.owners: dict[RoomKey, set[str]] = {}  # (scene, room) -> owners

    def set(self, owner: str, room: str, on: bool, scene: bool = False) -> None:
        key = (scene, room)
        owners = self.owners.get(key)
        if on:
            if owners is None:
                self.owners[key] = {owner}
                self.server.set_room_tap(room, True, scene)
            else:
                owners.add(owner)
        elif owners is not None and owner in owners:
            owners.discard(owner)
            if not owners:
                del self.owners[key]
                self.server.set_room_tap(room, False, scene)


class LocalRoomLink:
    """The rooms of a :class:`dclcomms.ws.Server` in this process; the embedder hands
    its :class:`dclcomms.ws.RoomMessage` events to :meth:`deliver`."""

    def __init__(self, server: Any, taps: TapOwners | None = None) -> None:
        self.server = server
        self.taps = taps if taps is not None else TapOwners(server)
        self.on_message: RoomHandler | None = None
        self.tapped: set[RoomKey] = set()

    def tap(self, room: str, on: bool, scene: bool = False) -> None:
        self.taps.set("local", room, on, scene)
        if on:
            self.tapped.add((scene, room))
        else:
            self.tapped.discard((scene, room))

    def inject(
        self, room: str, identity: str, body: bytes, unreliable: bool, scene: bool = False
    ) -> None:
        self.server.inject_room(room, identity, body, unreliable, scene)

    def release(self, room: str, identity: str, scene: bool = False) -> None:
        self.server.release_room_identity(room, identity, scene)

    def deliver(
        self, room: str, sender: str, body: bytes, unreliable: bool, ts: int, scene: bool = False
    ) -> None:
        if self.on_message is not None and (scene, room) in self.tapped:
            self.on_message(room, sender, body, unreliable, ts, scene)


class SceneRoutedLink:
    """Island rooms through one link, scene rooms through another: the gatekeeper's scene
    rooms are LiveKit rooms when it is configured with LiveKit
    (:class:`~dclcomms.bridge.livekit.LiveKitRoomLink`, same room names), while the
    island rooms stay the built-in ones (:class:`LocalRoomLink` or NATS)."""

    def __init__(self, islands: RoomLink, scenes: RoomLink) -> None:
        self.islands = islands
        self.scenes = scenes
        self.on_message: RoomHandler | None = None
        islands.on_message = self._from_islands
        scenes.on_message = self._from_scenes

    def _from_islands(
        self, room: str, sender: str, body: bytes, unreliable: bool, ts: int, scene: bool = False
    ) -> None:
        if self.on_message is not None and not scene:
            self.on_message(room, sender, body, unreliable, ts, False)

    def _from_scenes(
        self, room: str, sender: str, body: bytes, unreliable: bool, ts: int, scene: bool = True
    ) -> None:
        if self.on_message is not None:
            self.on_message(room, sender, body, unreliable, ts, True)

    def tap(self, room: str, on: bool, scene: bool = False) -> None:
        (self.scenes if scene else self.islands).tap(room, on, scene)

    def inject(
        self, room: str, identity: str, body: bytes, unreliable: bool, scene: bool = False
    ) -> None:
        (self.scenes if scene else self.islands).inject(room, identity, body, unreliable, scene)

    def release(self, room: str, identity: str, scene: bool = False) -> None:
        (self.scenes if scene else self.islands).release(room, identity, scene)


__all__ = ["LocalRoomLink", "RoomHandler", "RoomKey", "RoomLink", "SceneRoutedLink", "TapOwners"]
