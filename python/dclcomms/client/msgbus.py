"""A client of the realm's ``/bus`` message bus (docs/msgbus.md, control-plane.md 4).

::

    bus = MessageBusClient("ws://realm:5000/bus", identity)
    await bus.connect()                                  # connector handshake, auth chain
    off = await bus.subscribe(f"{identity.address}.offer", on_offer)   # on_offer(sender, payload)
    bus.publish(f"{peer}.offer", b"...")                 # queued, sent in order
    bus.on_error(lambda code, topic, message: ...)       # refused frames, as the server said
    await bus.close()

Subscriptions are reference-counted per (kind, topic): the first local subscriber
subscribes on the server (``subscribe`` returns once the server answered
``subscribed``, or raises :class:`~dclcomms.errors.MessageBusError` with the
server's code), the last one to leave unsubscribes. Handlers are synchronous and
run on the event loop; one that raises is logged and does not stop the others.
``publish`` never blocks: frames go out in order from one writer task, and the
server answers refusals asynchronously (``error`` frames, given to the error
listeners with their code and topic).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

import aiohttp

from dclcomms import codec
from dclcomms.auth import Identity
from dclcomms.errors import DecodeError, MessageBusError, TransportError

log = logging.getLogger("dclcomms.client.msgbus")

#: handler(sender, payload): sender is None for system messages
MessageHandler = Callable[[str | None, bytes], object]
#: listener(code, topic, message) for error frames
ErrorListener = Callable[[str, str | None, str], object]


def _transport_error(message: str, code: str) -> TransportError:
    return TransportError(message, code=code)


class MessageBusClient:
    """One authenticated ``/bus`` session (see the module docstring)."""

    def __init__(self, url: str, identity: Identity, *, timeout_s: float = 10.0) -> None:
        self.url = url
        self.identity = identity
        self.timeout_s = timeout_s
        self.address = identity.address.lower()
        self.closed = False
        self.published = 0
        self.received = 0
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._outbox: deque[str] = deque()
        self._wake = asyncio.Event()
        self._handlers: dict[tuple[str, str], list[MessageHandler]] = {}
        self._pending: dict[tuple[str, str], asyncio.Future[None]] = {}
        self._errors: list[ErrorListener] = []
        self._closed_listeners: list[Callable[[], object]] = []

    # --- lifecycle ----------------------------------------------------------------

    async def connect(self) -> MessageBusClient:
        """Open ``/bus`` and run the connector handshake (TransportError on failure)."""
        self._session = aiohttp.ClientSession()
        try:
            try:
                self._ws = await self._session.ws_connect(self.url, max_msg_size=1 << 20)
            except (aiohttp.ClientError, OSError) as e:
                raise _transport_error(f"cannot open {self.url}: {e}", "bus_failed") from e
            try:
                await asyncio.wait_for(self._handshake(), self.timeout_s)
            except TimeoutError:
                raise _transport_error(
                    f"/bus handshake at {self.url} timed out", "handshake_timeout"
                ) from None
            except (DecodeError, aiohttp.ClientError, ConnectionError) as e:
                raise _transport_error(f"/bus handshake failed: {e}", "handshake_failed") from e
        except BaseException:
            await self.close()
            raise
        self._reader = asyncio.create_task(self._read(), name="msgbus-reader")
        self._writer = asyncio.create_task(self._write(), name="msgbus-writer")
        return self

    async def _handshake(self) -> None:
        ws = self._ws
        assert ws is not None
        await ws.send_bytes(
            codec.encode(codec.CLIENT_PACKET, {"challengeRequest": {"address": self.address}})
        )
        packet = await self._server_packet()
        if "challengeResponse" not in packet:
            raise _transport_error(
                f"expected challengeResponse, got {sorted(packet)}", "handshake_failed"
            )
        chain = self.identity.sign_challenge(packet["challengeResponse"]["challengeToSign"])
        await ws.send_bytes(
            codec.encode(codec.CLIENT_PACKET, {"signedChallenge": {"authChainJson": chain}})
        )
        packet = await self._server_packet()
        if "welcome" not in packet:
            raise _transport_error(f"expected welcome, got {sorted(packet)}", "handshake_failed")

    async def _server_packet(self) -> dict[str, Any]:
        assert self._ws is not None
        msg = await self._ws.receive()
        if msg.type != aiohttp.WSMsgType.BINARY:
            raise _transport_error(
                f"/bus closed the handshake: {self._ws.close_code} {msg.extra!r}",
                "handshake_failed",
            )
        return codec.decode(codec.SERVER_PACKET, msg.data, including_defaults=True)

    async def close(self) -> None:
        """Close the session (idempotent); pending subscribes fail with ``bus_closed``.

        Also after the server ended it (``closed`` already set by the reader): the socket
        and the HTTP session are released here either way."""
        self.closed = True
        for task in (self._writer, self._reader):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._fail_pending()
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
            self._ws = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _fail_pending(self) -> None:
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(MessageBusError("the /bus session closed", code="bus_closed"))
        self._pending.clear()

    # --- API ----------------------------------------------------------------------

    def on_error(self, listener: ErrorListener) -> Callable[[], None]:
        """``listener(code, topic, message)`` for every ``error`` frame."""
        self._errors.append(listener)
        return lambda: self._errors.remove(listener) if listener in self._errors else None

    def on_closed(self, listener: Callable[[], object]) -> None:
        """``listener()`` once, when the server or the network ends the session."""
        self._closed_listeners.append(listener)

    async def subscribe(
        self, topic: str, handler: MessageHandler, *, kind: str = "peer"
    ) -> Callable[[], None]:
        """Deliver ``topic`` messages to ``handler(sender, payload)``; returns the
        function that removes this handler (and unsubscribes with the last one)."""
        if self.closed:
            raise MessageBusError("the /bus session is closed", code="bus_closed")
        key = (kind, topic)
        handlers = self._handlers.get(key)
        if handlers is None:
            handlers = self._handlers[key] = []
            fut = asyncio.get_running_loop().create_future()
            self._pending[key] = fut
            self._send({"type": "subscribe", "kind": kind, "topic": topic})
            try:
                await asyncio.wait_for(asyncio.shield(fut), self.timeout_s)
            except BaseException:
                if self._handlers.get(key) is handlers and not handlers:
                    del self._handlers[key]
                raise
            finally:
                self._pending.pop(key, None)
        elif key in self._pending:  # someone else's subscribe is still in flight
            await asyncio.wait_for(asyncio.shield(self._pending[key]), self.timeout_s)
        handlers.append(handler)

        def off() -> None:
            hs = self._handlers.get(key)
            if hs is None or handler not in hs:
                return
            hs.remove(handler)
            if not hs:
                del self._handlers[key]
                if not self.closed:
                    self._send({"type": "unsubscribe", "kind": kind, "topic": topic})

        return off

    def publish(self, topic: str, payload: bytes) -> None:
        """Queue a peer-topic message (refusals arrive as ``error`` frames)."""
        if self.closed:
            raise MessageBusError("the /bus session is closed", code="bus_closed")
        self._send(
            {"type": "publish", "topic": topic, "payload": base64.b64encode(payload).decode()}
        )
        self.published += 1

    # --- I/O ----------------------------------------------------------------------

    def _send(self, frame: dict[str, Any]) -> None:
        self._outbox.append(json.dumps(frame, separators=(",", ":")))
        self._wake.set()

    async def _write(self) -> None:
        ws = self._ws
        assert ws is not None
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._outbox:
                    await ws.send_str(self._outbox.popleft())
        except (aiohttp.ClientError, ConnectionError) as e:
            log.warning("/bus write failed: %s", e)

    async def _read(self) -> None:
        ws = self._ws
        assert ws is not None
        try:
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                try:
                    frame = json.loads(msg.data)
                except ValueError:
                    log.warning("undecodable /bus frame")
                    continue
                if isinstance(frame, dict):
                    self._dispatch(frame)
        except (aiohttp.ClientError, OSError) as e:
            log.warning("/bus read failed: %s", e)
        if self.closed:
            return
        self.closed = True
        self._fail_pending()
        if self._writer is not None:
            self._writer.cancel()
        for listener in list(self._closed_listeners):
            try:
                listener()
            except Exception:
                log.exception("/bus closed listener raised")

    def _dispatch(self, frame: dict[str, Any]) -> None:
        t = frame.get("type")
        key = (str(frame.get("kind", "peer")), str(frame.get("topic", "")))
        if t == "message":
            try:
                payload = base64.b64decode(frame.get("payload", ""), validate=True)
            except (binascii.Error, ValueError):
                log.warning("/bus message with a bad payload", extra={"topic": key[1]})
                return
            self.received += 1
            sender = frame.get("sender")
            for handler in list(self._handlers.get(key, ())):
                try:
                    handler(sender if isinstance(sender, str) else None, payload)
                except Exception:
                    log.exception("/bus handler raised", extra={"topic": key[1]})
        elif t == "subscribed":
            fut = self._pending.get(key)
            if fut is not None and not fut.done():
                fut.set_result(None)
        elif t == "error":
            code, topic = str(frame.get("code", "")), frame.get("topic")
            text = str(frame.get("message", ""))
            for kind in ("peer", "system"):  # a refused subscribe fails its caller
                fut = self._pending.get((kind, str(topic)))
                if fut is not None and not fut.done():
                    fut.set_exception(MessageBusError(text, code=code))
            for listener in list(self._errors):
                try:
                    listener(code, topic if isinstance(topic, str) else None, text)
                except Exception:
                    log.exception("/bus error listener raised")


__all__ = ["ErrorListener", "MessageBusClient", "MessageHandler"]
