"""The third-party server bridge (control-plane.md 5, docs/bridge.md).

Game servers, state servers, bots and moderation services read and inject the
traffic of islands and scene rooms without touching NATS: they connect to the
realm's ``/bridge`` WebSocket with an API key (scoped, created by the operator with
``dclcomms bridge keys create``) or a signed fetch (scene owners/admins, the
realm's authoritative server), subscribe to rooms and publish RFC-4 packets that
every member receives from the server's own identity.

* :class:`BridgeClient`: the asyncio client;
* :class:`BridgeGateway`: the server side (embedded in the realm, or ``dclcomms bridge``);
* :mod:`dclcomms.bridge.keys`: API keys, stored hashed;
* :mod:`dclcomms.bridge.scopes`: scopes and the rooms they open.
"""

from __future__ import annotations

from dclcomms.bridge.client import BridgeClient, BridgeMessage, Subscription
from dclcomms.bridge.gateway import BridgeGateway, Credential, SceneAuthority, StaticSceneAuthority
from dclcomms.bridge.keys import KeyRecord, KeyStore, MemoryKeyStore, SqlKeyStore, open_key_store
from dclcomms.bridge.links import LocalRoomLink, RoomLink
from dclcomms.bridge.scopes import RoomNames, Target, check_scope
from dclcomms.errors import BridgeError

__all__ = [
    "BridgeClient",
    "BridgeError",
    "BridgeGateway",
    "BridgeMessage",
    "Credential",
    "KeyRecord",
    "KeyStore",
    "LocalRoomLink",
    "MemoryKeyStore",
    "RoomLink",
    "RoomNames",
    "SceneAuthority",
    "SqlKeyStore",
    "StaticSceneAuthority",
    "Subscription",
    "Target",
    "check_scope",
    "open_key_store",
]
