"""Bridge scopes and the rooms they open (control-plane.md 5).

A credential carries scopes; a subscription names a room the way a server
thinks of it (``island`` + island id, ``scene`` + ``<realm>:<sceneId>``), and
:class:`RoomNames` turns that into the built-in WebSocket room's id with the
gatekeeper's naming (control-plane.md 1.4): Genesis City
``SCENE_ROOM_PREFIX + realm + ":" + sceneId``, worlds (a realm ending in
``.eth``) ``WORLD_ROOM_PREFIX + world + "-" + sceneId``; an island's room is
named by the island id.

======================== ========================================= ======
scope                    opens                                     access
======================== ========================================= ======
``island:<id>``          the island's room                         read
``island:*``             every island's room                       read
``scene:<realm>:<id>``   that scene's room                         read/write
``world:<name>``         every scene room of world ``<name>``      read/write
``bus:<topic>``          the /bus global topic ``<topic>``         read/write
======================== ========================================= ======

A ``scene:<realm>:<sceneId>`` scope also opens the /bus's scene topics of that scene,
``scene.<sceneId>.…`` (read/write).

A ``bus`` topic is a /bus peer topic (docs/msgbus.md grammar: 1-8 dot-separated tokens of
``[A-Za-z0-9_:-]``) that is global: not addressed (``<addr>.…``), not an island's
(``island.…``), not reserved (``heartbeat``, ``island_changed``, ``bridge.…``); the
realm's sessions reach it when the operator allow-listed it (``bus_global_topics``).

No other wildcard exists: ``scene:*``, ``world:*``, ``island:a*``, ``bus:*`` are refused
(``bad_scope``) when a key is created, and a topic is never a pattern.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from dclcomms.errors import BridgeError

ISLAND_RE = re.compile(r"[A-Za-z0-9_-]{1,128}")
REALM_RE = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")
SCENE_ID_RE = re.compile(r"[A-Za-z0-9_,:@-]{1,100}")
ROOM_RE = re.compile(r"[A-Za-z0-9._:@-]{1,128}")
KINDS = ("island", "scene", "bus")


def bus_topic_problem(topic: str) -> str | None:
    """Why ``topic`` is not a global /bus topic (``bad_topic`` / ``reserved_topic``), or
    None."""
    from dclcomms.errors import SubjectError
    from dclcomms.nats.subjects import ADDRESS_RE, check_peer_topic

    try:
        check_peer_topic(topic)
    except SubjectError as e:
        return e.code
    first = topic.split(".")[0]
    if first in ("island", "bridge") or ADDRESS_RE.fullmatch(first.lower()):
        return "reserved_topic"
    return None


def _realm_ok(realm: str) -> bool:
    return len(realm) <= 64 and REALM_RE.fullmatch(realm) is not None


def check_scope(scope: str) -> str:
    """``scope`` if it is one of the four forms, else ``BridgeError(bad_scope)``."""
    if not isinstance(scope, str):
        raise BridgeError(f"not a scope: {scope!r}", code="bad_scope")
    kind, _, rest = scope.partition(":")
    ok = False
    if kind == "island":
        ok = rest == "*" or ISLAND_RE.fullmatch(rest) is not None
    elif kind == "scene":
        realm, sep, scene = rest.rpartition(":")
        ok = bool(sep) and _realm_ok(realm) and SCENE_ID_RE.fullmatch(scene) is not None
        ok = ok and ":" not in scene
    elif kind == "world":
        ok = rest.endswith(".eth") and _realm_ok(rest)
    elif kind == "bus":
        ok = bus_topic_problem(rest) is None
    if not ok:
        raise BridgeError(
            f"not a scope (island:<id>, island:*, scene:<realm>:<sceneId>, world:<name>.eth, "
            f"bus:<global topic>): {scope!r}",
            code="bad_scope",
        )
    return scope


@dataclass(frozen=True)
class Target:
    """What a subscription or publish names: its kind and topic, the room behind them
    and the scopes that open it (``write``: whether they also allow publishing)."""

    kind: str
    topic: str
    room: str
    realm: str = ""  # scene targets
    scene_id: str = ""

    @property
    def writable(self) -> bool:
        return self.kind in ("scene", "bus")

    @property
    def scene(self) -> bool:
        """The room is a scene room (the gatekeeper's ``/scene-rooms/`` registry), else an
        island room (``/rooms/``)."""
        return self.kind == "scene"

    @property
    def key(self) -> tuple[bool, str]:
        """``(scene, room)``: a room id of one registry is not the other's."""
        return (self.scene, self.room)

    def allowed_by(self, scopes: frozenset[str]) -> bool:
        if self.kind == "island":
            return "island:*" in scopes or f"island:{self.topic}" in scopes
        if self.kind == "bus":
            if f"bus:{self.topic}" in scopes:
                return True
            # the /bus's scene topics scene.<sceneId>.…: that scene's scope (any realm)
            return bool(self.scene_id) and any(
                sc.startswith("scene:") and sc.rpartition(":")[2] == self.scene_id for sc in scopes
            )
        if f"scene:{self.realm}:{self.scene_id}" in scopes:
            return True
        return self.realm.endswith(".eth") and f"world:{self.realm}" in scopes


@dataclass(frozen=True)
class RoomNames:
    """The gatekeeper's room naming (control-plane.md 1.4)."""

    scene_room_prefix: str = ""
    world_room_prefix: str = ""

    def target(self, kind: object, topic: object) -> Target:
        """The room a ``{kind, topic}`` names, or ``BridgeError`` (``bad_topic``)."""
        if kind not in KINDS:
            raise BridgeError("kind must be island, scene or bus", code="bad_frame")
        if not isinstance(topic, str):
            raise BridgeError("topic must be a string", code="bad_frame")
        if kind == "bus":
            problem = bus_topic_problem(topic)
            if problem is not None:
                raise BridgeError(f"not a global /bus topic: {topic!r}", code=problem)
            toks = topic.split(".")
            scene_id = toks[1] if toks[0] == "scene" and len(toks) >= 3 else ""
            if toks[0] == "scene" and not scene_id:
                raise BridgeError(
                    f"scene topics are scene.<sceneId>.<name>: {topic!r}", code="bad_topic"
                )
            return Target("bus", topic, f"bus:{topic}", scene_id=scene_id)
        if kind == "island":
            if ISLAND_RE.fullmatch(topic) is None:
                raise BridgeError(f"not an island id: {topic!r}", code="bad_topic")
            return Target("island", topic, topic)
        realm, sep, scene = topic.rpartition(":")
        if not sep or not _realm_ok(realm) or SCENE_ID_RE.fullmatch(scene) is None:
            raise BridgeError(f"not <realm>:<sceneId>: {topic!r}", code="bad_topic")
        if realm.endswith(".eth"):
            room = f"{self.world_room_prefix}{realm}-{scene}"
        else:
            room = f"{self.scene_room_prefix}{realm}:{scene}"
        if ROOM_RE.fullmatch(room) is None:
            raise BridgeError(f"no room id for {topic!r}", code="bad_topic")
        return Target("scene", topic, room, realm, scene)


__all__ = ["KINDS", "RoomNames", "Target", "bus_topic_problem", "check_scope"]
