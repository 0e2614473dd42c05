"""A small typed event emitter (the ADR-81 adapter events).

Listeners are plain synchronous callables, called in registration order on the
event loop thread that emits; they must not block. A listener that raises is
logged and does not stop the others (one bad handler never kills a transport).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("dclcomms.client")

#: event names (ADR-81 spells the first two in capitals)
DISCONNECTION = "DISCONNECTION"
PEER_DISCONNECTED = "PEER_DISCONNECTED"
MESSAGE = "message"
ERROR = "error"
ISLAND_CHANGED = "island_changed"
#: scene rooms (ADR-204; director only)
SCENE_CHANGED = "scene_changed"
SCENE_MESSAGE = "scene_message"
SCENE_KICKED = "scene_kicked"


@dataclass(frozen=True, slots=True)
class Disconnection:
    """``DISCONNECTION``: the transport is gone. ``kicked``: the server kicked us
    (duplicate session, full room, ban); ``error``: why, ``None`` for a clean
    disconnect we asked for."""

    kicked: bool
    error: Exception | None


@dataclass(frozen=True, slots=True)
class PeerDisconnected:
    """``PEER_DISCONNECTED``: ``address`` (lowercase) left the room."""

    address: str


@dataclass(frozen=True, slots=True)
class Message:
    """``message``: ``data`` (opaque bytes, RFC-4 ``Packet`` by convention) from ``address``."""

    address: str
    data: bytes


@dataclass(frozen=True, slots=True)
class IslandChanged:
    """``island_changed`` (director only): the new island, its connection string and peers."""

    island_id: str
    conn_str: str
    from_island_id: str | None
    peers: dict[str, tuple[float, float, float]]


@dataclass(frozen=True, slots=True)
class SceneChanged:
    """``scene_changed`` (director only): the scene room now held.

    ``scene_id`` is None when the player stands outside every scene (no scene
    room); ``conn_str`` is the gatekeeper's connection string (None when no room
    was joined: outside every scene, or the gatekeeper refused); ``room`` the
    room id when the string names one (``ws-room:``); ``parcel`` the parcel that
    triggered the change.
    """

    scene_id: str | None
    from_scene_id: str | None
    parcel: tuple[int, int] | None
    conn_str: str | None
    room: str | None


@dataclass(frozen=True, slots=True)
class SceneKicked:
    """``scene_kicked`` (director only): the scene room removed us (a ban:
    ``peer_kicked`` + close 4005). The director does not rejoin that scene until
    the player enters another one."""

    scene_id: str
    reason: str
    close_code: int | None


Listener = Callable[[Any], object]


class EventEmitter:
    """``on(event, callback)`` returns a function that removes the listener."""

    def __init__(self) -> None:
        self._listeners: dict[str, list[Listener]] = {}

    def on(self, event: str, callback: Listener) -> Callable[[], None]:
        self._listeners.setdefault(event, []).append(callback)

        def off() -> None:
            listeners = self._listeners.get(event, [])
            if callback in listeners:
                listeners.remove(callback)

        return off

    def emit(self, event: str, payload: Any) -> None:
        for callback in list(self._listeners.get(event, ())):
            try:
                callback(payload)
            except Exception:
                log.exception("listener for %r raised", event)
