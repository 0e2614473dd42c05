"""A client of the realm's ``/bridge`` for game and state servers (docs/bridge.md).

::

    async with BridgeClient("ws://realm:5000/bridge", key="dcb_...") as bridge:
        scene = await bridge.subscribe("scene", "main:bafk...")       # or ("island", "I1"),
                                                                       # ("bus", "lobby.chat")
        async for msg in scene:                                        # BridgeMessage
            print(msg.sender, msg.packet)                              # decoded RFC-4 Packet
            await scene.send({"scene": {"sceneId": "bafk...", "data": b"..."}})

Credentials: an API key (``key=``, created with ``dclcomms bridge keys create``) or
an :class:`~dclcomms.auth.Identity` (``identity=``: a signed fetch of ``GET /bridge``;
scene owners/admins and the realm's authoritative server). A refused credential,
subscription or publish raises :class:`~dclcomms.errors.BridgeError` with the
server's code (``unknown_key``, ``key_expired``, ``key_revoked``,
``invalid_signed_fetch``, ``forbidden_scope``, ``read_only``, ``rate_limited``, ...).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from dclcomms import codec
from dclcomms.auth import Identity
from dclcomms.errors import BridgeError, DecodeError

log = logging.getLogger("dclcomms.bridge.client")


@dataclass(frozen=True)
class BridgeMessage:
    """One room message: ``sender`` is a player's address or a server identity
    (``server:<name>``, or the wallet of a signed-fetch server)."""

    kind: str
    topic: str
    room: str
    sender: str
    body: bytes  # the RFC-4 Packet as sent
    unreliable: bool
    ts: int  # server time (ms since the epoch) when the room relayed it

    @property
    def packet(self) -> dict[str, Any] | None:
        """The decoded RFC-4 ``Packet`` (protobuf JSON mapping), None if it does not decode."""
        try:
            return codec.decode(codec.RFC4_PACKET, self.body)
        except DecodeError:
            return None


class Subscription:
    """Messages of one subscribed room (iterate, or :meth:`get`) and :meth:`send`."""

    def __init__(self, client: BridgeClient, kind: str, topic: str, room: str) -> None:
        self.client = client
        self.kind = kind
        self.topic = topic
        self.room = room
        self.queue: asyncio.Queue[BridgeMessage | None] = asyncio.Queue(maxsize=client.queue)
        self.dropped = 0  # messages dropped because the queue was full

    def _put(self, msg: BridgeMessage | None) -> None:
        if msg is not None and self.queue.full():
            self.dropped += 1
            self.queue.get_nowait()  # drop the oldest
        self.queue.put_nowait(msg)

    async def get(self, timeout: float | None = None) -> BridgeMessage:
        """The next message; ``BridgeError(closed)`` once the session ended."""
        msg = await asyncio.wait_for(self.queue.get(), timeout)
        if msg is None:
            self.queue.put_nowait(None)
            raise BridgeError(self.client.close_reason or "bridge closed", code="closed")
        return msg

    def __aiter__(self) -> AsyncIterator[BridgeMessage]:
        return self._iter()

    async def _iter(self) -> AsyncIterator[BridgeMessage]:
        while True:
            try:
                yield await self.get()
            except BridgeError:
                return

    async def send(self, packet: Mapping[str, Any] | bytes, *, unreliable: bool = False) -> None:
        """Injects an RFC-4 packet (a dict in the protobuf JSON mapping, or its bytes) into
        the room; every member receives it from this credential's identity."""
        await self.client.send(self.kind, self.topic, packet, unreliable=unreliable)

    async def close(self) -> None:
        await self.client.unsubscribe(self.kind, self.topic)


class BridgeClient:
    """One authenticated ``/bridge`` session (see the module docstring)."""

    def __init__(
        self,
        url: str,
        *,
        key: str | None = None,
        identity: Identity | None = None,
        timeout_s: float = 10.0,
        queue: int = 10_000,
    ) -> None:
        if (key is None) == (identity is None):
            raise BridgeError("pass exactly one of key= or identity=", code="bad_frame")
        self.url = url
        self.key = key
        self.identity_signer = identity
        self.timeout_s = timeout_s
        self.queue = queue
        self.identity = ""  # as the server named it in welcome
        self.scopes: list[str] = []
        self.limits: dict[str, Any] = {}
        self.errors: asyncio.Queue[BridgeError] = asyncio.Queue()  # refused publishes
        self.close_reason: str | None = None
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._subs: dict[tuple[str, str], Subscription] = {}
        self._waiting: dict[tuple[str, str, str], asyncio.Future[dict[str, Any]]] = {}
        self._welcome: asyncio.Future[dict[str, Any]] | None = None

    async def __aenter__(self) -> BridgeClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _auth_frame(self) -> dict[str, Any]:
        if self.key is not None:
            return {"type": "auth", "key": self.key}
        assert self.identity_signer is not None
        path = urlsplit(self.url).path or "/bridge"
        headers = self.identity_signer.sign_fetch_headers(
            "GET", path, metadata={"signer": "dcl:authoritative-server"}
        )
        return {"type": "auth", "signedFetch": headers}

    async def connect(self) -> None:
        """Connects and authenticates; ``BridgeError`` with the server's code if refused."""
        loop = asyncio.get_running_loop()
        self._session = aiohttp.ClientSession()
        try:
            self._ws = await self._session.ws_connect(
                self.url, max_msg_size=1 << 22, timeout=aiohttp.ClientWSTimeout(ws_close=2.0)
            )
        except (aiohttp.ClientError, OSError) as e:
            await self._session.close()
            raise BridgeError(f"cannot connect to {self.url}: {e}", code="connect_failed") from e
        self._welcome = loop.create_future()
        self._reader = asyncio.create_task(self._read(), name="bridge-client-reader")
        await self._ws.send_str(json.dumps(self._auth_frame()))
        try:
            welcome = await asyncio.wait_for(self._welcome, self.timeout_s)
        except BaseException:
            await self.close()
            raise
        self.identity = welcome["identity"]
        self.scopes = list(welcome.get("scopes", []))
        self.limits = dict(welcome.get("limits", {}))

    async def subscribe(self, kind: str, topic: str) -> Subscription:
        """Subscribes to a room: ``("island", islandId)`` or ``("scene", "<realm>:<sceneId>")``
        (``<world>.eth:<sceneId>`` for a world's scene, the gatekeeper's scene room); or to
        a /bus topic: ``("bus", "<global topic>")``, ``("bus", "scene.<sceneId>.<name>")``
        (raw payloads, ``BridgeMessage.packet`` is None unless they happen to be RFC-4)."""
        key = (kind, topic)
        if key in self._subs:
            return self._subs[key]
        reply = await self._request(
            {"type": "subscribe", "kind": kind, "topic": topic}, "subscribed"
        )
        sub = Subscription(self, kind, topic, reply["room"])
        self._subs[key] = sub
        return sub

    async def unsubscribe(self, kind: str, topic: str) -> None:
        if self._subs.pop((kind, topic), None) is None:
            return
        await self._request({"type": "unsubscribe", "kind": kind, "topic": topic}, "unsubscribed")

    async def send(
        self,
        kind: str,
        topic: str,
        packet: Mapping[str, Any] | bytes,
        *,
        unreliable: bool = False,
    ) -> None:
        """Injects an RFC-4 packet into a subscribed room (refusals arrive on
        :attr:`errors`: the server answers publishes only when it refuses them)."""
        body = packet if isinstance(packet, bytes) else codec.encode(codec.RFC4_PACKET, packet)
        frame = {
            "type": "publish",
            "kind": kind,
            "topic": topic,
            "payload": base64.b64encode(body).decode(),
            "unreliable": unreliable,
        }
        ws = self._require()
        await ws.send_str(json.dumps(frame, separators=(",", ":")))

    async def close(self) -> None:
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(BaseException):
                await self._reader
        if self._session is not None:
            await self._session.close()
        self._ws = self._session = self._reader = None
        self._end("closed by the client")

    # --- internals ----------------------------------------------------------------------

    def _require(self) -> aiohttp.ClientWebSocketResponse:
        if self._ws is None or self._ws.closed:
            raise BridgeError(self.close_reason or "not connected", code="closed")
        return self._ws

    async def _request(self, frame: dict[str, Any], answer: str) -> dict[str, Any]:
        ws = self._require()
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        key = (answer, frame["kind"], frame["topic"])
        self._waiting[key] = fut
        try:
            await ws.send_str(json.dumps(frame, separators=(",", ":")))
            return await asyncio.wait_for(fut, self.timeout_s)
        finally:
            self._waiting.pop(key, None)

    async def _read(self) -> None:
        ws = self._ws
        assert ws is not None
        try:
            async for m in ws:
                if m.type != aiohttp.WSMsgType.TEXT:
                    continue
                try:
                    self._on_frame(json.loads(m.data))
                except Exception:
                    log.exception("bad frame from the bridge")
        finally:
            code = ws.close_code
            self._end(f"bridge closed the session ({code})" if code else "bridge session ended")

    def _on_frame(self, f: dict[str, Any]) -> None:
        t = f.get("type")
        if t == "message":
            sub = self._subs.get((f.get("kind", ""), f.get("topic", "")))
            if sub is not None:
                sub._put(
                    BridgeMessage(
                        f["kind"],
                        f["topic"],
                        f["room"],
                        f["sender"],
                        base64.b64decode(f["payload"]),
                        bool(f.get("unreliable", False)),
                        int(f.get("ts", 0)),
                    )
                )
        elif t == "welcome":
            if self._welcome is not None and not self._welcome.done():
                self._welcome.set_result(f)
        elif t in ("subscribed", "unsubscribed"):
            fut = self._waiting.get((t, f.get("kind", ""), f.get("topic", "")))
            if fut is not None and not fut.done():
                fut.set_result(f)
        elif t == "error":
            err = BridgeError(str(f.get("message", "")), code=str(f.get("code", "bad_frame")))
            if self._welcome is not None and not self._welcome.done():
                self._welcome.set_exception(err)
                return
            for answer in ("subscribed", "unsubscribed"):
                fut = self._waiting.get((answer, f.get("kind", ""), f.get("topic", "")))
                if fut is not None and not fut.done():
                    fut.set_exception(err)
                    return
            self.errors.put_nowait(err)

    def _end(self, reason: str) -> None:
        if self.close_reason is None:
            self.close_reason = reason
        if self._welcome is not None and not self._welcome.done():
            self._welcome.set_exception(BridgeError(reason, code="closed"))
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(BridgeError(reason, code="closed"))
        for sub in self._subs.values():
            sub._put(None)


__all__ = ["BridgeClient", "BridgeMessage", "Subscription"]
