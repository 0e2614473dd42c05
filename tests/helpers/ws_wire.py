"""Test-side wire helpers for the WebSocket tests (checked against the vectors: test_ws_wire).

An independent minimal protobuf writer/reader (not the package codec) so the
server's frames are checked byte for byte by a second implementation, plus
real auth chains signed with eth-account and aiohttp client helpers.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import json
import random
import socket
import struct
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

import aiohttp
from eth_account import Account
from eth_account.messages import encode_defunct

from dclcomms.ws import Server, ServerConfig

P = ParamSpec("P")


T = TypeVar("T")


@contextmanager
def serving(**kw: Any) -> Iterator[Server]:
    """A started C++ server with ``ServerConfig(**kw)`` (a free port by default), stopped
    at the end. Test modules bind their defaults with ``functools.partial``; a keyword
    given at the call still wins."""
    server = Server(ServerConfig(**kw))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def run_async(fn: Callable[P, Awaitable[T]]) -> Callable[P, T]:
    """Runs an async test function with asyncio.run (no plugin needed)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        async def main() -> T:
            return await asyncio.wait_for(fn(*args, **kwargs), 60)  # type: ignore[arg-type]

        return asyncio.run(main())

    return wrapper


def varint(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def ld(field: int, payload: bytes | str) -> bytes:
    data = payload.encode() if isinstance(payload, str) else payload
    return varint(field << 3 | 2) + varint(len(data)) + data


def vint(field: int, v: int) -> bytes:
    return varint(field << 3) + varint(v) if v else b""


def f32(field: int, v: float) -> bytes:
    return varint(field << 3 | 5) + struct.pack("<f", v) if v != 0 else b""


def ws_identification(address: str) -> bytes:
    return ld(7, ld(1, address))


def ws_signed_challenge(chain_json: str) -> bytes:
    return ld(5, ld(1, chain_json))


def ws_update(body: bytes, *, unreliable: bool = False, from_alias: int = 0) -> bytes:
    inner = vint(1, from_alias) + (ld(2, body) if body else b"") + vint(3, int(unreliable))
    return ld(3, inner)


def client_challenge_request(address: str) -> bytes:
    return ld(1, ld(1, address))


def client_signed_challenge(chain_json: str) -> bytes:
    return ld(2, ld(1, chain_json))


def client_heartbeat(
    position: tuple[float, float, float] | None = None, desired_room: str | None = None
) -> bytes:
    inner = b""
    if position is not None:
        inner += ld(1, f32(1, position[0]) + f32(2, position[1]) + f32(3, position[2]))
    if desired_room is not None:
        inner += ld(2, desired_room)
    return ld(3, inner)


def fields(data: bytes) -> Iterator[tuple[int, int, Any]]:
    """(field, wire type, value) of each field; raises on malformed input."""
    i = 0

    def rd() -> int:
        nonlocal i
        shift = v = 0
        while True:
            b = data[i]
            i += 1
            v |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return v

    while i < len(data):
        key = rd()
        num, wt = key >> 3, key & 7
        if wt == 0:
            yield num, wt, rd()
        elif wt == 2:
            n = rd()
            yield num, wt, data[i : i + n]
            i += n
        elif wt == 5:
            yield num, wt, struct.unpack("<f", data[i : i + 4])[0]
            i += 4
        elif wt == 1:
            yield num, wt, struct.unpack("<d", data[i : i + 8])[0]
            i += 8
        else:
            raise ValueError(f"wire type {wt}")


WS_KINDS = {
    1: "welcome",
    2: "peer_join",
    3: "peer_update",
    4: "challenge",
    5: "signed_challenge",
    6: "peer_leave",
    7: "identification",
    8: "peer_kicked",
}


SERVER_KINDS = {
    1: "challenge_response",
    2: "welcome",
    3: "island_changed",
    4: "left_island",
    5: "join_island",
    6: "kicked",
}


def decode_ws(frame: bytes) -> tuple[str, dict[str, Any]]:
    """A server WsPacket as (kind, fields by name)."""
    ((num, _, inner),) = list(fields(frame))
    kind = WS_KINDS[num]
    out: dict[str, Any] = {}
    for f, _, v in fields(inner):
        if kind == "welcome":
            if f == 1:
                out["alias"] = v
            else:
                entry = dict((ef, ev) for ef, _, ev in fields(v))
                out.setdefault("peer_identities", []).append((entry.get(1, 0), entry[2].decode()))
        elif kind == "peer_join":
            out["alias" if f == 1 else "address"] = v if f == 1 else v.decode()
        elif kind == "peer_update":
            out[{1: "from_alias", 2: "body", 3: "unreliable"}[f]] = v
        elif kind == "challenge":
            out["challenge" if f == 1 else "already_connected"] = v.decode() if f == 1 else bool(v)
        elif kind == "peer_leave":
            out["alias"] = v
        elif kind == "peer_kicked":
            out["reason"] = v.decode()
    if kind == "welcome":
        out.setdefault("alias", 0)
        out.setdefault("peer_identities", [])
    if kind == "peer_update":
        out.setdefault("from_alias", 0)
        out.setdefault("body", b"")
        out["unreliable"] = bool(out.get("unreliable", 0))
    if kind == "challenge":
        out.setdefault("already_connected", False)
    return kind, out


def decode_server(frame: bytes) -> tuple[str, dict[str, Any]]:
    """A connector ServerPacket as (kind, fields by name)."""
    ((num, _, inner),) = list(fields(frame))
    kind = SERVER_KINDS[num]
    out: dict[str, Any] = {}
    for f, _, v in fields(inner):
        if kind == "challenge_response":
            out["challenge" if f == 1 else "already_connected"] = v.decode() if f == 1 else bool(v)
        elif kind == "welcome":
            out["peer_id"] = v.decode()
        elif kind == "island_changed":
            if f == 4:
                entry = dict((ef, ev) for ef, _, ev in fields(v))
                pos = dict((pf, pv) for pf, _, pv in fields(entry.get(2, b"")))
                xyz = (pos.get(1, 0.0), pos.get(2, 0.0), pos.get(3, 0.0))
                out.setdefault("peers", []).append((entry[1].decode(), xyz))
            else:
                out[{1: "island_id", 2: "conn_str", 3: "from_island_id"}[f]] = v.decode()
        elif kind in ("left_island", "join_island"):
            out["island_id" if f == 1 else "peer_id"] = v.decode()
    if kind == "challenge_response":
        out.setdefault("already_connected", False)
    return kind, out


@dataclass
class Identity:
    """A wallet (owner) plus an ephemeral key, both from a seeded RNG."""

    owner_key: bytes
    ephemeral_key: bytes

    @classmethod
    def random(cls, rng: random.Random) -> Identity:
        return cls(rng.randbytes(32), rng.randbytes(32))

    @property
    def address(self) -> str:
        return str(Account.from_key(self.owner_key).address)

    @property
    def lower(self) -> str:
        return self.address.lower()

    def chain(self, challenge: str, *, expired: bool = False, forged: bool = False) -> str:
        """The auth chain JSON a client sends for challenge."""
        eph = Account.from_key(self.ephemeral_key)
        delta = dt.timedelta(days=-1 if expired else 1)
        exp = (dt.datetime.now(dt.UTC) + delta).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        text = f"Decentraland Login\nEphemeral address: {eph.address}\nExpiration: {exp}"
        signer_key = self.ephemeral_key if forged else self.owner_key  # forged: not the owner
        links = [
            {"type": "SIGNER", "payload": self.address, "signature": ""},
            {"type": "ECDSA_EPHEMERAL", "payload": text, "signature": sign(signer_key, text)},
            {
                "type": "ECDSA_SIGNED_ENTITY",
                "payload": challenge,
                "signature": sign(self.ephemeral_key, challenge),
            },
        ]
        return json.dumps(links, separators=(",", ":"))


def sign(key: bytes, text: str) -> str:
    sig = Account.sign_message(encode_defunct(text=text), private_key=key).signature
    return "0x" + bytes(sig).hex()


async def recv_bin(ws: aiohttp.ClientWebSocketResponse, timeout: float = 10) -> bytes:
    msg = await ws.receive(timeout=timeout)
    assert msg.type == aiohttp.WSMsgType.BINARY, (msg.type, msg.data, msg.extra)
    data: bytes = msg.data
    return data


async def recv_close(ws: aiohttp.ClientWebSocketResponse, timeout: float = 10) -> tuple[int, str]:
    """Reads until the close frame; returns (code, reason)."""
    while True:
        msg = await ws.receive(timeout=timeout)
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
            return int(ws.close_code or 0), str(msg.extra or "")
        if msg.type == aiohttp.WSMsgType.CLOSING:
            continue
        assert msg.type == aiohttp.WSMsgType.BINARY, (msg.type, msg.data)


async def room_handshake(
    session: aiohttp.ClientSession,
    port: int,
    room: str,
    ident: Identity,
    *,
    query: str = "",
    max_msg_size: int = 4 << 20,
) -> tuple[aiohttp.ClientWebSocketResponse, dict[str, Any]]:
    """Joins room; returns the socket and the decoded welcome."""
    ws = await session.ws_connect(
        f"http://127.0.0.1:{port}/rooms/{room}{query}", max_msg_size=max_msg_size
    )
    await ws.send_bytes(ws_identification(ident.address))
    kind, ch = decode_ws(await recv_bin(ws))
    assert kind == "challenge", kind
    await ws.send_bytes(ws_signed_challenge(ident.chain(ch["challenge"])))
    kind, welcome = decode_ws(await recv_bin(ws))
    assert kind == "welcome", (kind, welcome)
    return ws, welcome


async def connector_handshake(
    session: aiohttp.ClientSession, port: int, ident: Identity, path: str = "/ws"
) -> tuple[aiohttp.ClientWebSocketResponse, dict[str, Any]]:
    ws = await session.ws_connect(f"http://127.0.0.1:{port}{path}")
    await ws.send_bytes(client_challenge_request(ident.address))
    kind, ch = decode_server(await recv_bin(ws))
    assert kind == "challenge_response", kind
    await ws.send_bytes(client_signed_challenge(ident.chain(ch["challenge"])))
    kind, welcome = decode_server(await recv_bin(ws))
    assert kind == "welcome", (kind, welcome)
    return ws, welcome


def client_frame(payload: bytes, opcode: int = 2) -> bytes:
    """A masked client->server frame (RFC 6455 5.2), fixed zero-free mask."""
    mask = b"\x11\x22\x33\x44"
    n = len(payload)
    if n < 126:
        head = bytes([0x80 | opcode, 0x80 | n])
    elif n <= 0xFFFF:
        head = bytes([0x80 | opcode, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, 0x80 | 127]) + n.to_bytes(8, "big")
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + body


class RawWs:
    """Minimal WebSocket client over asyncio streams (for batching writes)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(
        cls,
        port: int,
        path: str,
        *,
        rcvbuf: int | None = None,
        split_after: float | None = None,
    ) -> RawWs:
        """split_after: the upgrade head goes out in two writes, the second this many
        seconds after the first (a head not whole in its first segment)."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:  # a small window makes a non-reading client back up fast
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 20)
        head_out = (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        if split_after is not None:
            writer.write(head_out[:20])
            await writer.drain()
            await asyncio.sleep(split_after)
            head_out = head_out[20:]
        writer.write(head_out)
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        return cls(reader, writer)

    async def send(self, *payloads: bytes) -> None:
        self.writer.write(b"".join(client_frame(p) for p in payloads))
        await self.writer.drain()

    async def recv(self) -> tuple[int, bytes]:
        """(opcode, payload) of the next frame."""
        b0, b1 = await self.reader.readexactly(2)
        n = b1 & 0x7F
        if n == 126:
            n = int.from_bytes(await self.reader.readexactly(2), "big")
        elif n == 127:
            n = int.from_bytes(await self.reader.readexactly(8), "big")
        return b0 & 0x0F, await self.reader.readexactly(n)

    async def recv_data(self) -> bytes:
        """The next data frame's payload; pings (never answered) and pongs skipped: a
        server with an idle timer pings a client that has been silent for a while, which
        on a loaded machine may be before it answers the client's last frame."""
        while True:
            op, data = await self.recv()
            if op not in (9, 10):
                assert op in (1, 2), (op, data)
                return data

    async def handshake_room(self, ident: Identity) -> dict[str, Any]:
        await self.send(ws_identification(ident.address))
        kind, ch = decode_ws((await self.recv())[1])
        assert kind == "challenge", kind
        await self.send(ws_signed_challenge(ident.chain(ch["challenge"])))
        kind, welcome = decode_ws((await self.recv())[1])
        assert kind == "welcome", kind
        return welcome

    async def recv_close(self) -> tuple[int, str]:
        """Reads until the close frame, ignoring data and pings (never answered)."""
        while True:
            op, data = await self.recv()
            if op == 8:
                return int.from_bytes(data[:2], "big"), data[2:].decode()

    def close(self) -> None:
        self.writer.close()
