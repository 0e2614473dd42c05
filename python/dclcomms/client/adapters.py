"""Transport adapters chosen by connection-string prefix (ADR-180, ADR-81).

Every adapter is the ADR-81 minimum communications adapter: ``connect()``,
``send(data, *, reliable)``, ``disconnect(error=None)`` and the events
``DISCONNECTION``, ``PEER_DISCONNECTED``, ``message`` and ``error`` (see
:mod:`dclcomms.client._events`). After ``disconnect`` (or a server close) an
adapter delivers no further ``message`` events.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp

from dclcomms import codec
from dclcomms.auth import Identity
from dclcomms.client._events import (
    DISCONNECTION,
    ERROR,
    MESSAGE,
    PEER_DISCONNECTED,
    Disconnection,
    EventEmitter,
    Listener,
    Message,
    PeerDisconnected,
)
from dclcomms.errors import DecodeError, TransportError

_PROTOCOL = re.compile(r"^([A-Za-z][A-Za-z0-9-]+):(.*)$", re.S)
#: protocols of archipelago.md 6.1 this client knows but cannot join
UNSUPPORTED = ("signed-login", "simulator", "archipelago", "fixed-adapter")

#: seconds allowed for TCP connect + the whole RFC-5 handshake
DEFAULT_HANDSHAKE_TIMEOUT_S = 10.0


def _error(message: str, code: str, close_code: int | None = None) -> TransportError:
    err = TransportError(message, code=code)
    err.close_code = close_code
    return err


def parse_connection_string(conn_str: str) -> tuple[str, str]:
    """``"PROTOCOL:PARAMETERS"`` -> (protocol lowercased, parameters).

    TransportError ``bad_connection_string`` when there is no valid protocol.
    """
    m = _PROTOCOL.match(conn_str)
    if m is None:
        raise _error(f"not a connection string: {conn_str[:80]!r}", "bad_connection_string")
    return m.group(1).lower(), m.group(2)


def ws_url(parameters: str) -> str:
    """A WebSocket URL from connection-string parameters: no scheme => ``wss://``;
    ``ws://``/``wss://`` are kept; ``http(s)://`` becomes ``ws(s)://``."""
    lower = parameters.lower()
    if lower.startswith(("ws://", "wss://")):
        return parameters
    if lower.startswith("http://"):
        return "ws://" + parameters[len("http://") :]
    if lower.startswith("https://"):
        return "wss://" + parameters[len("https://") :]
    return "wss://" + parameters


class Adapter(ABC):
    """Base of every transport adapter (see the module docstring)."""

    #: the protocol prefix this adapter serves
    protocol: str = ""

    def __init__(self, conn_str: str) -> None:
        self.conn_str = conn_str
        self.events = EventEmitter()
        self.connected = False
        self._disconnected = False
        # Set before the socket closes so a reader delivers nothing from then on
        # (ADR-81 swap rule: no message from the old room after a swap).
        self._closing = False
        self.messages_sent = 0
        self.messages_received = 0
        #: frames from the server we could not make sense of (counted, reported as ``error``)
        self.protocol_errors = 0

    def on(self, event: str, callback: Listener) -> Callable[[], None]:
        """Register ``callback`` for ``event``; returns a function that unregisters it."""
        return self.events.on(event, callback)

    @abstractmethod
    async def connect(self) -> None:
        """Join the room; raises :class:`TransportError` when that fails."""

    @abstractmethod
    async def send(self, data: bytes, *, reliable: bool) -> None:
        """Send ``data`` to every other member; ``reliable`` selects the drop policy."""

    def members_changed(self, members: Iterable[str]) -> None:  # noqa: B027 - optional hook
        """The island's members now (the director calls it on ``join_island`` /
        ``left_island``); transports whose server tracks membership ignore it."""

    async def disconnect(self, error: Exception | None = None) -> None:
        """Leave the room; emits ``DISCONNECTION{kicked: False, error}`` once."""
        self._closing = True
        await self._close()
        self._finish(kicked=False, error=error)

    async def _close(self) -> None:  # noqa: B027 - optional hook, a no-op for offline
        """Release the transport's resources (idempotent)."""

    def _finish(self, *, kicked: bool, error: Exception | None) -> None:
        if self._disconnected:
            return
        self._disconnected = True
        self.connected = False
        self.events.emit(DISCONNECTION, Disconnection(kicked=kicked, error=error))

    def _protocol_error(self, err: Exception) -> None:
        self.protocol_errors += 1
        self.events.emit(ERROR, err)


class OfflineAdapter(Adapter):
    """``offline:``: no comms. ``send`` drops the data (counted in ``messages_sent``)."""

    protocol = "offline"

    async def connect(self) -> None:
        self.connected = True

    async def send(self, data: bytes, *, reliable: bool) -> None:
        self.messages_sent += 1


class LiveKitAdapter(Adapter):
    """``livekit:wss://host?access_token=<jwt>``.

    Joining a LiveKit room needs WebRTC (data channels), which this client does
    not implement. ``connect`` opens the LiveKit signalling WebSocket
    (``/rtc?access_token=``) to tell the two failures apart: nothing answering
    => TransportError ``livekit_unreachable``; a server that answers =>
    ``livekit_unsupported``. Parsing (``host``, ``token``) is complete.
    """

    protocol = "livekit"

    def __init__(self, conn_str: str, *, timeout_s: float = DEFAULT_HANDSHAKE_TIMEOUT_S) -> None:
        super().__init__(conn_str)
        _, params = parse_connection_string(conn_str)
        url = ws_url(params)
        parts = urlsplit(url)
        if not parts.hostname:
            raise _error(
                f"livekit connection string without a host: {conn_str[:80]!r}",
                "bad_connection_string",
            )
        tokens = parse_qs(parts.query).get("access_token", [])
        if not tokens:
            raise _error("livekit connection string without access_token", "bad_connection_string")
        self.host = f"{parts.scheme}://{parts.netloc}"
        self.token = tokens[0]
        self.timeout_s = timeout_s

    async def connect(self) -> None:
        url = f"{self.host}/rtc?access_token={self.token}"
        try:
            await asyncio.wait_for(self._probe(url), self.timeout_s)
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            raise _error(
                f"no LiveKit server answers at {self.host}: {e}", "livekit_unreachable"
            ) from e
        raise _error(
            f"LiveKit at {self.host} answered, but this client has no WebRTC", "livekit_unsupported"
        )

    @staticmethod
    async def _probe(url: str) -> None:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(url, max_msg_size=1 << 20) as ws,
        ):
            await ws.close()

    async def send(self, data: bytes, *, reliable: bool) -> None:
        raise _error("livekit adapter is not connected", "not_connected")


class WsRoomAdapter(Adapter):
    """``ws-room:<host>/rooms/<room>[?access_token=<jwt>]``: an RFC-5 room member.

    Handshake: ``peer_identification{address}`` -> ``challenge_message`` ->
    ``signed_challenge_for_server{auth chain}`` -> ``welcome_message``. Aliases
    map to lowercase addresses from ``welcome`` + ``peer_join``/``peer_leave``.
    ``peers`` is that map's values. The ``access_token`` query travels in the
    URL unchanged.
    """

    protocol = "ws-room"

    def __init__(
        self,
        conn_str: str,
        identity: Identity,
        *,
        timeout_s: float = DEFAULT_HANDSHAKE_TIMEOUT_S,
    ) -> None:
        super().__init__(conn_str)
        _, params = parse_connection_string(conn_str)
        if not params:
            raise _error("ws-room connection string without a URL", "bad_connection_string")
        self.url = ws_url(params)
        self.identity = identity
        self.timeout_s = timeout_s
        self.alias: int | None = None
        self.aliases: dict[int, str] = {}
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._kicked: str | None = None

    @property
    def peers(self) -> list[str]:
        """Lowercase addresses of the other members."""
        return list(self.aliases.values())

    async def connect(self) -> None:
        try:
            await asyncio.wait_for(self._handshake(), self.timeout_s)
        except TimeoutError:
            await self._close()
            raise _error(
                f"RFC-5 handshake with {self.url} timed out", "handshake_timeout"
            ) from None
        except DecodeError as e:
            await self._close()
            raise _error(
                f"undecodable handshake frame from {self.url}: {e}", "handshake_failed"
            ) from e
        except (aiohttp.ClientError, ConnectionError) as e:
            await self._close()
            raise _error(f"{self.url} dropped the handshake: {e}", "handshake_failed") from e
        except BaseException:
            await self._close()
            raise
        self.connected = True
        self._reader = asyncio.create_task(self._read())

    async def _handshake(self) -> None:
        self._session = aiohttp.ClientSession()
        try:
            self._ws = await self._session.ws_connect(self.url, max_msg_size=1 << 20)
        except (aiohttp.ClientError, OSError) as e:
            raise _error(f"cannot open {self.url}: {e}", "connect_failed") from e
        await self._send_packet({"peerIdentification": {"address": self.identity.address}})
        challenge = await self._expect("challengeMessage")
        chain = self.identity.sign_challenge(challenge["challengeToSign"])
        await self._send_packet({"signedChallengeForServer": {"authChainJson": chain}})
        welcome = await self._expect("welcomeMessage")
        self.alias = int(welcome.get("alias", 0))
        self.aliases = {
            int(k): str(v).lower() for k, v in welcome.get("peerIdentities", {}).items()
        }

    async def _send_packet(self, packet: dict[str, Any]) -> None:
        assert self._ws is not None
        await self._ws.send_bytes(codec.encode(codec.WS_PACKET, packet))

    async def _expect(self, kind: str) -> dict[str, Any]:
        """The next packet during the handshake must be ``kind`` (or a kick)."""
        assert self._ws is not None
        msg = await self._ws.receive()
        if msg.type != aiohttp.WSMsgType.BINARY:
            code = self._ws.close_code
            reason = self._kicked or str(msg.extra or "")
            raise _error(f"room closed the handshake: {code} {reason!r}", "handshake_failed", code)
        packet = codec.decode(codec.WS_PACKET, msg.data, including_defaults=True)
        if "peerKicked" in packet:
            self._kicked = packet["peerKicked"].get("reason", "")
            return await self._expect(kind)  # the close (4006/4007) follows
        if kind not in packet:
            raise _error(f"expected {kind}, got {sorted(packet)}", "handshake_failed")
        out: dict[str, Any] = packet[kind]
        return out

    async def send(self, data: bytes, *, reliable: bool) -> None:
        if not self.connected or self._ws is None:
            raise _error("ws-room adapter is not connected", "not_connected")
        packet = {"peerUpdateMessage": {"body": bytes(data), "unreliable": not reliable}}
        try:
            await self._send_packet(packet)
        except (aiohttp.ClientError, ConnectionError) as e:  # closed under us
            raise _error(f"ws-room socket closed: {e}", "not_connected") from e
        self.messages_sent += 1

    async def _read(self) -> None:
        ws = self._ws
        assert ws is not None
        error: Exception | None = None
        try:
            async for msg in ws:
                if self._closing:
                    return  # disconnect() was called: nothing more is delivered
                if msg.type != aiohttp.WSMsgType.BINARY:
                    self._protocol_error(
                        _error(f"unexpected {msg.type.name} frame", "protocol_error")
                    )
                    continue
                self._dispatch(msg.data)
        except (aiohttp.ClientError, OSError) as e:
            error = e
        if self._closing:
            return
        code = ws.close_code
        if error is None and code not in (None, 1000, 1001):
            reason = self._kicked or ""
            error = _error(f"room closed the socket: {code} {reason!r}", "connect_failed", code)
        await self._close_session()
        self._finish(kicked=self._kicked is not None, error=error)

    def _dispatch(self, data: bytes) -> None:
        try:
            packet = codec.decode(codec.WS_PACKET, data, including_defaults=True)
        except DecodeError as e:
            self._protocol_error(e)
            return
        if "peerUpdateMessage" in packet:
            upd = packet["peerUpdateMessage"]
            address = self.aliases.get(int(upd.get("fromAlias", 0)))
            if address is None:
                self._protocol_error(
                    _error(f"update from unknown alias {upd.get('fromAlias')}", "protocol_error")
                )
                return
            self.messages_received += 1
            self.events.emit(MESSAGE, Message(address, _as_bytes(upd.get("body", b""))))
        elif "peerJoinMessage" in packet:
            join = packet["peerJoinMessage"]
            self.aliases[int(join.get("alias", 0))] = str(join.get("address", "")).lower()
        elif "peerLeaveMessage" in packet:
            address = self.aliases.pop(int(packet["peerLeaveMessage"].get("alias", 0)), None)
            if address is not None:
                self.events.emit(PEER_DISCONNECTED, PeerDisconnected(address))
        elif "peerKicked" in packet:
            self._kicked = str(packet["peerKicked"].get("reason", ""))
        else:
            self._protocol_error(_error(f"unexpected packet {sorted(packet)}", "protocol_error"))

    async def _close_session(self) -> None:
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _close(self) -> None:
        self.connected = False
        reader, self._reader = self._reader, None
        await self._close_session()
        if reader is not None and reader is not asyncio.current_task():
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader


def _as_bytes(body: Any) -> bytes:
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes(body)
    return base64.b64decode(body)  # the codec's JSON mapping of bytes


def create_adapter(conn_str: str, identity: Identity, **options: Any) -> Adapter:
    """The adapter for ``conn_str``'s protocol (``ws-room``, ``livekit``, ``p2p``, ``offline``).

    ``fixed-adapter:`` is unwrapped. ``p2p`` needs ``bus=`` (a connected
    :class:`~dclcomms.client.msgbus.MessageBusClient`; TransportError
    ``bus_unavailable`` without one) and takes ``members=`` and ``options=``
    (:class:`~dclcomms.client.p2p.P2POptions`). TransportError ``unknown_protocol``
    for a protocol nobody defines, ``unsupported_protocol`` for ones this client
    cannot join (``signed-login``, ...), ``bad_connection_string`` for text that is
    not a connection string.
    """
    protocol, params = parse_connection_string(conn_str)
    if protocol == "fixed-adapter":
        return create_adapter(params, identity, **options)
    if protocol == "p2p":
        from dclcomms.client.p2p import P2PAdapter

        if options.get("bus") is None:
            raise _error("a p2p island needs a /bus session for signalling", "bus_unavailable")
        return P2PAdapter(conn_str, identity, **options)
    if protocol == "ws-room":
        return WsRoomAdapter(conn_str, identity, **options)
    if protocol == "livekit":
        return LiveKitAdapter(conn_str, **options)
    if protocol == "offline":
        return OfflineAdapter(conn_str)
    if protocol in UNSUPPORTED:
        raise _error(f"this client cannot join {protocol!r} transports", "unsupported_protocol")
    raise _error(f"unknown transport protocol {protocol!r}", "unknown_protocol")
