"""Scene-room tokens (control-plane.md 1.4, 1.7; transports.md 2.2).

LiveKit: an HS256 access token with the "scene room" video grant (the island
grant: ``roomJoin, room, roomList:false, canPublish, canSubscribe,
canPublishData, canUpdateOwnMetadata:true, canPublishSources:["microphone"]``),
identity = lowercase wallet, TTL 300 s. Users never get ``roomAdmin``,
``roomCreate``, ``hidden``, ``recorder`` or ``ingressAdmin``.

Built-in rooms: ``ws-room:<ws base>/scene-rooms/<room>?access_token=<jwt>`` where
the JWT (the rooms secret) carries ``sub`` (address), ``room``, ``iat``, ``exp``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from dclcomms.auth import jwt_encode, ws_room_token

MICROPHONE: tuple[str, ...] = ("microphone",)
STREAMER_SOURCES: tuple[str, ...] = ("camera", "microphone", "screen_share", "screen_share_audio")


def scene_grant(room: str, *, sources: Sequence[str] = MICROPHONE) -> dict[str, Any]:
    """The scene-room video grant; ``sources=()`` = data only (moderated rooms)."""
    return {
        "roomJoin": True,
        "room": room,
        "roomList": False,
        "canPublish": True,
        "canSubscribe": True,
        "canPublishData": True,
        "canUpdateOwnMetadata": True,
        "canPublishSources": list(sources),
    }


def watcher_grant(room: str) -> dict[str, Any]:
    """Subscribe-only (chat through data)."""
    return {
        "roomJoin": True,
        "room": room,
        "roomList": False,
        "canPublish": False,
        "canSubscribe": True,
        "canPublishData": True,
        "canUpdateOwnMetadata": False,
    }


def livekit_access_token(
    api_key: str,
    api_secret: str,
    *,
    identity: str,
    grant: Mapping[str, Any],
    ttl_s: int = 300,
    name: str | None = None,
    metadata: str | None = None,
    attributes: Mapping[str, str] | None = None,
    now_s: int | None = None,
) -> str:
    """A LiveKit access token (the claims livekit-server-sdk writes)."""
    now = int(time.time()) if now_s is None else now_s
    claims: dict[str, Any] = {
        "exp": now + ttl_s,
        "iss": api_key,
        "nbf": now,
        "sub": identity,
        "video": dict(grant),
    }
    if name is not None:
        claims["name"] = name
    if metadata is not None:
        claims["metadata"] = metadata
    if attributes:
        claims["attributes"] = dict(attributes)
    return jwt_encode(claims, api_secret)


def livekit_connection_string(host: str, token: str) -> str:
    """``livekit:wss://host?access_token=<jwt>`` (``wss://`` prepended if missing)."""
    if "://" not in host:
        host = "wss://" + host
    return f"livekit:{host}?access_token={token}"


__all__ = [
    "MICROPHONE",
    "STREAMER_SOURCES",
    "livekit_access_token",
    "livekit_connection_string",
    "scene_grant",
    "watcher_grant",
    "ws_room_token",
]
