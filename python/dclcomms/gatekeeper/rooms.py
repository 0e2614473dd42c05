"""Where scene rooms live: LiveKit (when configured) or the built-in WebSocket rooms.

:class:`LiveKitRooms` mints LiveKit tokens and acts on rooms through LiveKit's
RoomService API (the ``livekit-api`` client: ``RemoveParticipant``,
``UpdateRoomMetadata``, ``UpdateParticipant``, ``ListRooms``).
:class:`WsRooms` hands out ``ws-room:`` connection strings to the C++ server's
scene rooms (``/scene-rooms/<room>``, a membership separate from island rooms so
a client holds both); they carry no media, so bans close the session
(``peer_kicked`` + 4005) and the rest is metadata only.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

from dclcomms.gatekeeper import tokens

log = logging.getLogger("dclcomms.gatekeeper")


class SceneRooms(ABC):
    kind: str
    #: whether rooms carry audio/video (casting and speakers act on permissions)
    media: bool

    @abstractmethod
    def connection_string(
        self,
        room: str,
        identity: str,
        *,
        sources: Sequence[str] = tokens.MICROPHONE,
        ttl_s: int = 300,
        name: str | None = None,
        attributes: Mapping[str, str] | None = None,
        grant: Mapping[str, Any] | None = None,
    ) -> str: ...

    @abstractmethod
    async def kick(self, room: str, identity: str, reason: str) -> None:
        """Remove identity from room now (absent: nothing happens)."""

    @abstractmethod
    async def kick_everywhere(self, identity: str, reason: str) -> None:
        """Remove identity from every scene room (platform bans)."""

    async def unbar(self, room: str | None, identity: str) -> None:
        """A lifted ban: identity may join room (None: every room) again at once, though
        a kick barred it for a while (no-op where kicks bar nothing)."""
        return None

    @abstractmethod
    async def set_metadata(self, room: str, metadata: str) -> None: ...

    async def room_metadata(self, room: str) -> str | None:
        """The room's current metadata as the room service holds it (None: unknown)."""
        return None

    async def set_sources(self, room: str, identity: str, sources: Sequence[str]) -> None:
        """Change what identity may publish, live (no-op without media)."""
        return None

    async def close(self) -> None:
        return None


def _http_url(host: str) -> str:
    if "://" not in host:
        host = "wss://" + host
    if host.startswith("wss://"):
        return "https://" + host[len("wss://") :]
    if host.startswith("ws://"):
        return "http://" + host[len("ws://") :]
    return host


class LiveKitRooms(SceneRooms):
    kind = "livekit"
    media = True

    def __init__(self, host: str, api_key: str, api_secret: str) -> None:
        self.host = host if "://" in host else "wss://" + host
        self.api_key = api_key
        self._secret = api_secret
        self._api: Any = None

    def _client(self) -> Any:
        if self._api is None:
            from livekit import api

            self._api = api.LiveKitAPI(_http_url(self.host), self.api_key, self._secret)
        return self._api

    def connection_string(
        self,
        room: str,
        identity: str,
        *,
        sources: Sequence[str] = tokens.MICROPHONE,
        ttl_s: int = 300,
        name: str | None = None,
        attributes: Mapping[str, str] | None = None,
        grant: Mapping[str, Any] | None = None,
    ) -> str:
        if grant is None and attributes is None:  # the common case: one C++ call
            from dclcomms.auth import livekit_token

            token = livekit_token(
                self.api_key,
                self._secret,
                identity=identity,
                room=room,
                ttl_s=ttl_s,
                name=name,
                grants={"canPublishSources": list(sources)},
            )
            return tokens.livekit_connection_string(self.host, token)
        token = tokens.livekit_access_token(
            self.api_key,
            self._secret,
            identity=identity,
            grant=grant if grant is not None else tokens.scene_grant(room, sources=sources),
            ttl_s=ttl_s,
            name=name,
            attributes=attributes,
        )
        return tokens.livekit_connection_string(self.host, token)

    async def kick(self, room: str, identity: str, reason: str) -> None:
        from livekit import api

        try:
            await self._client().room.remove_participant(
                api.RoomParticipantIdentity(room=room, identity=identity)
            )
        except api.TwirpError as e:
            if e.code != "not_found":
                raise

    async def kick_everywhere(self, identity: str, reason: str) -> None:
        from livekit import api

        rooms = await self._client().room.list_rooms(api.ListRoomsRequest())
        for r in rooms.rooms:
            await self.kick(r.name, identity, reason)

    async def set_metadata(self, room: str, metadata: str) -> None:
        from livekit import api

        try:
            await self._client().room.update_room_metadata(
                api.UpdateRoomMetadataRequest(room=room, metadata=metadata)
            )
        except api.TwirpError as e:
            if e.code != "not_found":  # the room does not exist yet: its next refresh sets it
                raise

    async def room_metadata(self, room: str) -> str | None:
        from livekit import api

        rooms = await self._client().room.list_rooms(api.ListRoomsRequest(names=[room]))
        for r in rooms.rooms:
            if r.name == room:
                return str(r.metadata)
        return None

    async def set_sources(self, room: str, identity: str, sources: Sequence[str]) -> None:
        from livekit import api

        source_of = {
            "camera": api.TrackSource.CAMERA,
            "microphone": api.TrackSource.MICROPHONE,
            "screen_share": api.TrackSource.SCREEN_SHARE,
            "screen_share_audio": api.TrackSource.SCREEN_SHARE_AUDIO,
        }
        perm = api.ParticipantPermission(
            can_subscribe=True,
            can_publish=True,
            can_publish_data=True,
            can_update_metadata=True,
            can_publish_sources=[source_of[s] for s in sources],
        )
        try:
            await self._client().room.update_participant(
                api.UpdateParticipantRequest(room=room, identity=identity, permission=perm)
            )
        except api.TwirpError as e:
            if e.code != "not_found":  # not in the room now: its next token carries it
                raise

    async def close(self) -> None:
        if self._api is not None:
            await self._api.aclose()
            self._api = None


class WsRooms(SceneRooms):
    """The built-in rooms of a :class:`dclcomms.ws.Server` (``scene_rooms=True``)."""

    kind = "ws-room"
    media = False

    def __init__(self, server: Any, base_url: str, secret: str, *, token_ttl_s: int = 300) -> None:
        self.server = server
        # a token minted before a ban stays valid for its TTL: bar rejoins that long
        self.bar_ms = (token_ttl_s + 30) * 1000
        self.base_url = base_url.rstrip("/")
        self._secret = secret
        self.metadata: dict[str, str] = {}

    def connection_string(
        self,
        room: str,
        identity: str,
        *,
        sources: Sequence[str] = tokens.MICROPHONE,
        ttl_s: int = 300,
        name: str | None = None,
        attributes: Mapping[str, str] | None = None,
        grant: Mapping[str, Any] | None = None,
    ) -> str:
        token = tokens.ws_room_token(self._secret, address=identity, room=room, ttl_s=ttl_s)
        return f"ws-room:{self.base_url}/scene-rooms/{room}?access_token={token}"

    async def kick(self, room: str, identity: str, reason: str) -> None:
        if self.server is not None:
            self.server.kick_room_member(room, identity, reason, scene=True, bar_ms=self.bar_ms)

    async def kick_everywhere(self, identity: str, reason: str) -> None:
        if self.server is not None:
            self.server.kick_room_member(None, identity, reason, scene=True, bar_ms=self.bar_ms)

    async def unbar(self, room: str | None, identity: str) -> None:
        if self.server is not None:
            self.server.unbar_room_member(room, identity, scene=True)

    async def set_metadata(self, room: str, metadata: str) -> None:
        self.metadata[room] = metadata

    async def room_metadata(self, room: str) -> str | None:
        return self.metadata.get(room)


__all__ = ["LiveKitRooms", "SceneRooms", "WsRooms"]
