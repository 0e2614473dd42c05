"""dclcomms.client: an asyncio Decentraland comms client (ADR-81 adapters + director).

::

    from dclcomms.auth import Identity
    from dclcomms.client import CommunicationsDirector

    async with CommunicationsDirector(
        "http://127.0.0.1:5000", Identity.generate(1), position=lambda: (0.0, 0.0, 0.0)
    ) as director:
        director.on("message", lambda m: print(m.address, m.data))
        await director.send(b"hello", reliable=True)

Events are delivered to synchronous listeners registered with ``on(name,
callback)`` (see :mod:`dclcomms.client._events`). See docs/client.md.
"""

from __future__ import annotations

from dclcomms.client._events import (
    DISCONNECTION,
    ERROR,
    ISLAND_CHANGED,
    MESSAGE,
    PEER_DISCONNECTED,
    SCENE_CHANGED,
    SCENE_KICKED,
    SCENE_MESSAGE,
    Disconnection,
    EventEmitter,
    IslandChanged,
    Message,
    PeerDisconnected,
    SceneChanged,
    SceneKicked,
)
from dclcomms.client.adapters import (
    Adapter,
    LiveKitAdapter,
    OfflineAdapter,
    WsRoomAdapter,
    create_adapter,
    parse_connection_string,
    ws_url,
)
from dclcomms.client.director import CommunicationsDirector, choose_adapter
from dclcomms.client.gatekeeper import GatekeeperClient, SceneRequest, SignedFetcher, signed_fetch
from dclcomms.client.msgbus import MessageBusClient
from dclcomms.client.p2p import P2PAdapter, P2POptions
from dclcomms.client.scenes import SceneGrid, SceneResolver, parcel_of
from dclcomms.errors import TransportError

__all__ = [
    "DISCONNECTION",
    "ERROR",
    "ISLAND_CHANGED",
    "MESSAGE",
    "PEER_DISCONNECTED",
    "SCENE_CHANGED",
    "SCENE_KICKED",
    "SCENE_MESSAGE",
    "Adapter",
    "CommunicationsDirector",
    "Disconnection",
    "EventEmitter",
    "GatekeeperClient",
    "IslandChanged",
    "LiveKitAdapter",
    "Message",
    "MessageBusClient",
    "OfflineAdapter",
    "P2PAdapter",
    "P2POptions",
    "PeerDisconnected",
    "SceneChanged",
    "SceneGrid",
    "SceneKicked",
    "SceneRequest",
    "SceneResolver",
    "SignedFetcher",
    "TransportError",
    "WsRoomAdapter",
    "choose_adapter",
    "create_adapter",
    "parcel_of",
    "parse_connection_string",
    "signed_fetch",
    "ws_url",
]
