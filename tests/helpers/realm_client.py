"""A small Archipelago / RFC-5 test client: aiohttp WebSocket + dclcomms.codec + eth-account.

Keys are real secp256k1 keys (eth-account), derived from a seed so failures
reproduce; auth chains are built exactly as the JavaScript clients build them
(SIGNER, ECDSA_EPHEMERAL, ECDSA_SIGNED_ENTITY). The public client comes with a
later issue; this one stays small and test-only.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
from datetime import UTC, datetime
from typing import Any

import aiohttp
from eth_account import Account
from eth_account.messages import encode_defunct

from dclcomms import codec

V3 = "decentraland.kernel.comms.v3."
RFC5 = "decentraland.kernel.comms.rfc5.WsPacket"


def _sign(account: Any, text: str) -> str:
    return "0x" + bytes(account.sign_message(encode_defunct(text=text)).signature).hex()


def _iso(ms: int) -> str:
    dt = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


class Wallet:
    """An owner key plus one ephemeral key, both derived from ``seed``."""

    def __init__(self, seed: int, *, expires_in_ms: int = 3_600_000) -> None:
        self.owner = Account.from_key(hashlib.sha256(f"owner-{seed}".encode()).digest())
        self.ephemeral = Account.from_key(hashlib.sha256(f"eph-{seed}".encode()).digest())
        self.address = self.owner.address.lower()
        expiration = int(time.time() * 1000) + expires_in_ms
        self.ephemeral_text = (
            "Decentraland Login\n"
            f"Ephemeral address: {self.ephemeral.address}\n"
            f"Expiration: {_iso(expiration)}"
        )
        self.ephemeral_sig = _sign(self.owner, self.ephemeral_text)

    def chain(self, payload: str, *, forge: bool = False) -> str:
        sig = _sign(self.ephemeral, payload)
        if forge:  # flip one byte of the final signature
            sig = sig[:10] + ("0" if sig[10] != "0" else "1") + sig[11:]
        links = [
            {"type": "SIGNER", "payload": self.owner.address, "signature": ""},
            {
                "type": "ECDSA_EPHEMERAL",
                "payload": self.ephemeral_text,
                "signature": self.ephemeral_sig,
            },
            {"type": "ECDSA_SIGNED_ENTITY", "payload": payload, "signature": sig},
        ]
        return json.dumps(links, separators=(",", ":"))


CLOSING = (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED)


def _close_code(ws: aiohttp.ClientWebSocketResponse, msg: aiohttp.WSMessage) -> int | None:
    """The code the server closed with: the CLOSE frame's own (aiohttp overwrites
    ``ws.close_code`` with 1006 when its close reply meets an already-closed socket)."""
    if msg.type == aiohttp.WSMsgType.CLOSE and isinstance(msg.data, int):
        return msg.data
    return ws.close_code


class Closed(Exception):
    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"closed {code} {reason!r}")
        self.code = code
        self.reason = reason


#: Clients with an open session; :func:`close_leftovers` closes them when a test's coroutine
#: ends (a test that fails half way, or does not close a client it is done with).
_OPEN: set[_Socket] = set()


async def close_leftovers() -> None:
    while _OPEN:
        await _OPEN.pop().close()


class _Socket:
    def __init__(self, packet_type: str) -> None:
        self.packet_type = packet_type
        self.session: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.inbox: list[dict[str, Any]] = []

    async def open(self, url: str) -> None:
        self.session = aiohttp.ClientSession()
        _OPEN.add(self)
        self.ws = await self.session.ws_connect(url, autoping=True, max_msg_size=1 << 22)

    async def send(self, message: dict[str, Any], type_name: str | None = None) -> None:
        assert self.ws is not None
        await self.ws.send_bytes(codec.encode(type_name or self.packet_type, message))

    async def send_raw(self, data: bytes) -> None:
        assert self.ws is not None
        await self.ws.send_bytes(data)

    async def recv(self, timeout: float = 30.0) -> dict[str, Any]:
        """Next packet (decoded dict); raises Closed when the server closed the socket."""
        if self.inbox:
            return self.inbox.pop(0)
        assert self.ws is not None
        msg = await self.ws.receive(timeout)
        if msg.type == aiohttp.WSMsgType.BINARY:
            out: dict[str, Any] = codec.decode(self.packet_type, msg.data, including_defaults=True)
            return out
        if msg.type in CLOSING:
            raise Closed(_close_code(self.ws, msg), str(msg.extra or ""))
        raise AssertionError(f"unexpected frame {msg.type}")

    async def expect(self, kind: str, timeout: float = 30.0, **match: Any) -> dict[str, Any]:
        """Wait for a packet with key ``kind`` (and matching fields); keep the others."""
        deadline = time.monotonic() + timeout
        kept: list[dict[str, Any]] = []
        try:
            while True:
                for i, p in enumerate(self.inbox):
                    if kind in p and all(p[kind].get(k) == v for k, v in match.items()):
                        return self.inbox.pop(i)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"no {kind} {match} within {timeout}s; got {kept + self.inbox}"
                    )
                assert self.ws is not None
                msg = await self.ws.receive(left)
                if msg.type == aiohttp.WSMsgType.BINARY:
                    p = codec.decode(self.packet_type, msg.data, including_defaults=True)
                    if kind in p and all(p[kind].get(k) == v for k, v in match.items()):
                        return p
                    kept.append(p)
                elif msg.type in CLOSING:
                    raise Closed(_close_code(self.ws, msg), str(msg.extra or ""))
        finally:
            self.inbox[:0] = kept

    async def closed(self, timeout: float = 30.0) -> Closed:
        """Read until the server closes; returns the close code and reason."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("socket still open")
            assert self.ws is not None
            msg = await self.ws.receive(left)  # not recv(): it would pop the inbox again
            if msg.type == aiohttp.WSMsgType.BINARY:
                self.inbox.append(codec.decode(self.packet_type, msg.data, including_defaults=True))
            elif msg.type in CLOSING:
                return Closed(_close_code(self.ws, msg), str(msg.extra or ""))

    async def close(self) -> None:
        _OPEN.discard(self)
        if self.ws is not None:
            await self.ws.close()
        if self.session is not None:
            await self.session.close()


class ArchipelagoClient(_Socket):
    """One connector session: ``await c.connect(base)``; ``await c.handshake()``; heartbeats."""

    def __init__(self, seed: int, **wallet: Any) -> None:
        super().__init__(V3 + "ServerPacket")
        self.wallet = Wallet(seed, **wallet)
        self.address = self.wallet.address
        self.challenge: dict[str, Any] = {}

    async def connect(self, base_ws_url: str, path: str = "/archipelago/ws") -> ArchipelagoClient:
        await self.open(base_ws_url + path)
        return self

    async def send_client(self, message: dict[str, Any]) -> None:
        await self.send(message, V3 + "ClientPacket")

    async def handshake(
        self, *, forge: bool = False, expect_welcome: bool = True, claim: str | None = None
    ) -> str:
        """challenge_request (claiming ``claim`` or our address) -> signed chain -> welcome."""
        claimed = claim or self.wallet.owner.address
        await self.send_client({"challengeRequest": {"address": claimed}})
        self.challenge = (await self.expect("challengeResponse"))["challengeResponse"]
        chain = self.wallet.chain(self.challenge["challengeToSign"], forge=forge)
        await self.send_client({"signedChallenge": {"authChainJson": chain}})
        if forge or not expect_welcome or claim is not None:
            return ""
        welcome = await self.expect("welcome")
        peer_id: str = welcome["welcome"]["peerId"]
        return peer_id

    async def heartbeat(
        self, x: float, y: float, z: float, desired_room: str | None = None
    ) -> None:
        hb: dict[str, Any] = {"position": {"x": x, "y": y, "z": z}}
        if desired_room is not None:
            hb["desiredRoom"] = desired_room
        await self.send_client({"heartbeat": hb})

    async def island(self, timeout: float = 30.0, **match: Any) -> dict[str, Any]:
        changed: dict[str, Any] = (await self.expect("islandChanged", timeout, **match))[
            "islandChanged"
        ]
        return changed


class BusClient(ArchipelagoClient):
    """A /bus session: the connector handshake, then JSON text frames (dclcomms.msgbus)."""

    def __init__(self, seed: int, **wallet: Any) -> None:
        super().__init__(seed, **wallet)
        self.frames: list[dict[str, Any]] = []

    async def connect(self, base_ws_url: str, path: str = "/bus") -> BusClient:
        await self.open(base_ws_url + path)
        return self

    async def send_json(self, frame: Any) -> None:
        assert self.ws is not None
        await self.ws.send_str(json.dumps(frame))

    async def frame(self, timeout: float = 30.0, **match: Any) -> dict[str, Any]:
        """The next text frame whose fields match (others are kept for later)."""
        deadline = time.monotonic() + timeout
        while True:
            for i, f in enumerate(self.frames):
                if all(f.get(k) == v for k, v in match.items()):
                    return self.frames.pop(i)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no frame {match} within {timeout}s; got {self.frames}")
            assert self.ws is not None
            msg = await self.ws.receive(left)
            if msg.type == aiohttp.WSMsgType.TEXT:
                self.frames.append(json.loads(msg.data))
            elif msg.type in CLOSING:
                raise Closed(_close_code(self.ws, msg), str(msg.extra or ""))
            else:
                raise AssertionError(f"unexpected frame {msg.type}")

    async def subscribe(self, topic: str, kind: str = "peer") -> None:
        await self.send_json({"type": "subscribe", "kind": kind, "topic": topic})
        await self.frame(type="subscribed", kind=kind, topic=topic)

    async def publish(self, topic: str, payload: bytes) -> None:
        await self.send_json(
            {"type": "publish", "topic": topic, "payload": base64.b64encode(payload).decode()}
        )

    async def message(self, topic: str, timeout: float = 30.0, **match: Any) -> dict[str, Any]:
        return await self.frame(timeout, type="message", topic=topic, **match)


def room_string(realm: Any, room: str, wallet: Wallet) -> str:
    """``ws-room:`` string for a realm's built-in room with a token minted from the realm's
    room secret, as a client gets it from ``island_changed`` or the gatekeeper (the realm
    requires the token by default)."""
    from dclcomms.gatekeeper.tokens import ws_room_token

    token = ws_room_token(realm.ws_room_secret, address=wallet.owner.address.lower(), room=room)
    return f"ws-room:ws://127.0.0.1:{realm.port}/rooms/{room}?access_token={token}"


def scene_room_string(realm: Any, room: str, wallet: Wallet) -> str:
    """``ws-room:`` string for the gatekeeper's built-in scene room ``/scene-rooms/<room>``
    of a realm (the gatekeeper mounted, no LiveKit), with a token as the gatekeeper mints
    it from the realm's room secret."""
    from dclcomms.gatekeeper.tokens import ws_room_token

    token = ws_room_token(realm.ws_room_secret, address=wallet.owner.address.lower(), room=room)
    return f"ws-room:ws://127.0.0.1:{realm.port}/scene-rooms/{room}?access_token={token}"


class RoomClient(_Socket):
    """An RFC-5 WebSocket-room member joining via a ``ws-room:`` connection string."""

    def __init__(self, wallet: Wallet) -> None:
        super().__init__(RFC5)
        self.wallet = wallet

    async def join(self, conn_str: str) -> dict[str, Any]:
        assert conn_str.startswith("ws-room:")
        await self.open(conn_str[len("ws-room:") :])
        await self.send({"peerIdentification": {"address": self.wallet.owner.address}})
        ch = (await self.expect("challengeMessage"))["challengeMessage"]
        chain = self.wallet.chain(ch["challengeToSign"])
        await self.send({"signedChallengeForServer": {"authChainJson": chain}})
        welcome: dict[str, Any] = (await self.expect("welcomeMessage"))["welcomeMessage"]
        return welcome


async def assigned(
    c: ArchipelagoClient, x: float, z: float, timeout: float = 15.0
) -> dict[str, Any]:
    """Heartbeat at (x, 0, z) until the client's ``island_changed`` arrives.

    For deployments whose parts may still be subscribing (NATS) or reconnecting.
    """
    deadline = time.monotonic() + timeout
    while True:
        await c.heartbeat(x, 0.0, z)
        try:
            return await c.island(timeout=0.5)
        except TimeoutError:
            assert time.monotonic() < deadline, "no island_changed"


async def eventually(predicate: Any, timeout: float = 30.0, interval: float = 0.02) -> Any:
    """Poll ``predicate()`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(interval)
