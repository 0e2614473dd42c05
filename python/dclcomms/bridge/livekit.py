"""LiveKit rooms for the bridge: a hidden server participant joined on demand.

Islands and scene rooms served by LiveKit have no server-side tap: the bridge joins
them as participants (LiveKit's Python realtime SDK, ``livekit.rtc``; install
``dclcomms[livekit]``):

* **reading**: while a room is tapped, one participant ``<prefix>:reader`` joins it
  with a ``hidden`` grant (invisible to players; subscribes, publishes nothing) and
  hands every data packet to the gateway with the sending participant's identity
  (``KIND_LOSSY`` packets are unreliable);
* **injecting**: each credential identity that publishes into a room joins it as a
  participant of that identity (visible, data-only: ``can_publish=False``,
  ``can_publish_data=True``), so players see the packets come from the server's own
  identity, never from a player; :meth:`release` disconnects it.

Tokens are minted here with the realm's LiveKit key/secret (``livekit-api``), TTL 1 h.
:class:`LiveKitRoomLink` is a :class:`~dclcomms.bridge.links.RoomLink`. The realtime
SDK needs a LiveKit server, which this repository's tests do not run: the tests drive
the link through the ``room_factory`` seam with a stand-in room and verify the real
tokens (docs/bridge.md).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from dclcomms.bridge.links import RoomHandler
from dclcomms.clock import now_ms

log = logging.getLogger("dclcomms.bridge.livekit")


def _rtc_room() -> Any:
    from livekit import rtc

    return rtc.Room()


class LiveKitRoomLink:
    """Reads and writes LiveKit rooms through participants (see the module docstring)."""

    def __init__(
        self,
        url: str,
        api_key: str,
        api_secret: str,
        *,
        prefix: str = "bridge",
        ttl_s: int = 3600,
        room_factory: Callable[[], Any] = _rtc_room,
    ) -> None:
        self.url = url if "://" in url else f"wss://{url}"
        self.api_key = api_key
        self.api_secret = api_secret
        self.prefix = prefix
        self.ttl_s = ttl_s
        self.room_factory = room_factory
        self.on_message: RoomHandler | None = None
        self.readers: dict[str, Any] = {}  # room -> connected reader Room
        self.injectors: dict[tuple[str, str], Any] = {}  # (room, identity) -> Room
        self._joining: dict[Any, asyncio.Task[Any]] = {}

    def token(self, room: str, identity: str, *, hidden: bool) -> str:
        from livekit import api

        grants = api.VideoGrants(
            room_join=True,
            room=room,
            can_publish=False,
            can_subscribe=hidden,
            can_publish_data=not hidden,
            hidden=True if hidden else None,
        )
        from datetime import timedelta

        return (
            api.AccessToken(self.api_key, self.api_secret)
            .with_identity(identity)
            .with_name("bridge" if hidden else identity)
            .with_grants(grants)
            .with_ttl(timedelta(seconds=self.ttl_s))
            .to_jwt()
        )

    # --- RoomLink -------------------------------------------------------------------------

    # LiveKit has one namespace of rooms: ``scene`` (the built-in registries' flag) is
    # accepted and does not change the room.

    def tap(self, room: str, on: bool, scene: bool = False) -> None:
        if on and room not in self.readers and room not in self._joining:
            self._joining[room] = asyncio.get_running_loop().create_task(self._read(room))
        elif not on:
            task = self._joining.pop(room, None)
            if task is not None:
                task.cancel()
            reader = self.readers.pop(room, None)
            if reader is not None:
                asyncio.get_running_loop().create_task(reader.disconnect())

    def inject(
        self, room: str, identity: str, body: bytes, unreliable: bool, scene: bool = False
    ) -> None:
        key = (room, identity)
        asyncio.get_running_loop().create_task(self._inject(key, body, unreliable))

    def release(self, room: str, identity: str, scene: bool = False) -> None:
        task = self._joining.pop((room, identity), None)
        if task is not None:
            task.cancel()
        lk = self.injectors.pop((room, identity), None)
        if lk is not None:
            asyncio.get_running_loop().create_task(lk.disconnect())

    async def aclose(self) -> None:
        for task in self._joining.values():
            task.cancel()
        rooms = [*self.readers.values(), *self.injectors.values()]
        self.readers.clear()
        self.injectors.clear()
        for lk in rooms:
            try:
                await lk.disconnect()
            except Exception as e:
                log.warning("LiveKit disconnect failed", extra={"error": repr(e)})

    # --- participants -------------------------------------------------------------------

    async def _read(self, room: str) -> None:
        lk = self.room_factory()

        def on_data(packet: Any) -> None:
            participant = getattr(packet, "participant", None)
            if participant is None or self.on_message is None:
                return
            unreliable = _is_lossy(packet.kind)
            self.on_message(room, participant.identity, bytes(packet.data), unreliable, now_ms())

        lk.on("data_received", on_data)
        try:
            await lk.connect(self.url, self.token(room, f"{self.prefix}:reader", hidden=True))
        except Exception as e:
            log.warning("LiveKit reader could not join", extra={"room": room, "error": repr(e)})
            return
        finally:
            self._joining.pop(room, None)
        self.readers[room] = lk

    async def _inject(self, key: tuple[str, str], body: bytes, unreliable: bool) -> None:
        lk = self.injectors.get(key)
        if lk is None:
            pending = self._joining.get(key)
            if pending is None:
                pending = asyncio.get_running_loop().create_task(self._join_injector(key))
                self._joining[key] = pending
            lk = await pending
            if lk is None:
                return
        await lk.local_participant.publish_data(body, reliable=not unreliable)

    async def _join_injector(self, key: tuple[str, str]) -> Any:
        room, identity = key
        lk = self.room_factory()
        try:
            await lk.connect(self.url, self.token(room, identity, hidden=False))
        except Exception as e:
            log.warning("LiveKit injector could not join", extra={"room": room, "error": repr(e)})
            return None
        finally:
            self._joining.pop(key, None)
        self.injectors[key] = lk
        return lk


def _is_lossy(kind: Any) -> bool:
    try:
        from livekit import rtc

        return bool(kind == rtc.DataPacketKind.KIND_LOSSY)
    except ImportError:  # pragma: no cover - the SDK is what produced the packet
        return False


def scene_room_link(config: Any) -> LiveKitRoomLink | None:
    """The link to the gatekeeper's scene rooms when they are LiveKit rooms (``config``: a
    :class:`~dclcomms.gatekeeper.config.GatekeeperConfig` with ``livekit_host``, key and
    secret), else None (the built-in ``/scene-rooms/``). Without LiveKit's realtime SDK
    (``dclcomms[livekit]``) it logs an error and returns None: scene subscriptions then
    see nothing."""
    if not config.livekit_enabled:
        return None
    import importlib.util

    if importlib.util.find_spec("livekit.rtc") is None:
        log.error(
            "the gatekeeper's scene rooms are LiveKit rooms but LiveKit's realtime SDK is not "
            "installed (pip install dclcomms[livekit]): the bridge cannot reach them"
        )
        return None
    return LiveKitRoomLink(config.livekit_host, config.livekit_api_key, config.livekit_api_secret)


__all__ = ["LiveKitRoomLink", "scene_room_link"]
