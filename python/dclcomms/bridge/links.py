"""Where the bridge reads and writes room traffic: a :class:`RoomLink`.

:class:`LocalRoomLink` drives the rooms of the same process (the embedded realm's
C++ server: room taps and injection). :mod:`dclcomms.bridge.nats` has the NATS
pair for deployments where the rooms run in other processes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

# (room, sender, RFC-4 body, unreliable, server time in ms)
RoomHandler = Callable[[str, str, bytes, bool, int], None]


class RoomLink(Protocol):
    """Room taps and injection as the gateway uses them."""

    on_message: RoomHandler | None

    def tap(self, room: str, on: bool) -> None:
        """Start/stop copying ``room``'s traffic to :attr:`on_message`."""

    def inject(self, room: str, identity: str, body: bytes, unreliable: bool) -> None:
        """Broadcast ``body`` to ``room``'s members from ``identity``."""

    def release(self, room: str, identity: str) -> None:
        """``identity`` stops injecting into ``room`` (its members see it leave)."""


class TapOwners:
    """Who wants a room of one server tapped: the server's tap is on while any owner
    (the local gateway, the NATS taps of remote bridges) wants it."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.owners: dict[str, set[str]] = {}  # room -> owners

    def set(self, owner: str, room: str, on: bool) -> None:
        owners = self.owners.get(room)
        if on:
            if owners is None:
                self.owners[room] = {owner}
                self.server.set_room_tap(room, True)
            else:
                owners.add(owner)
        elif owners is not None and owner in owners:
            owners.discard(owner)
            if not owners:
                del self.owners[room]
                self.server.set_room_tap(room, False)


class LocalRoomLink:
    """The rooms of a :class:`dclcomms.ws.Server` in this process; the embedder hands
    its :class:`dclcomms.ws.RoomMessage` events to :meth:`deliver`."""

    def __init__(self, server: Any, taps: TapOwners | None = None) -> None:
        self.server = server
        self.taps = taps if taps is not None else TapOwners(server)
        self.on_message: RoomHandler | None = None
        self.tapped: set[str] = set()

    def tap(self, room: str, on: bool) -> None:
        self.taps.set("local", room, on)
        if on:
            self.tapped.add(room)
        else:
            self.tapped.discard(room)

    def inject(self, room: str, identity: str, body: bytes, unreliable: bool) -> None:
        self.server.inject_room(room, identity, body, unreliable)

    def release(self, room: str, identity: str) -> None:
        self.server.release_room_identity(room, identity)

    def deliver(self, room: str, sender: str, body: bytes, unreliable: bool, ts: int) -> None:
        if self.on_message is not None and room in self.tapped:
            self.on_message(room, sender, body, unreliable, ts)


__all__ = ["LocalRoomLink", "RoomHandler", "RoomLink", "TapOwners"]
