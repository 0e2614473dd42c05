"""Draining and checking a dclcomms.ws.Server's events in tests; rejected handshakes."""

from __future__ import annotations

import asyncio
import time
from contextlib import suppress
from typing import Any

import aiohttp
import numpy as np

from dclcomms.ws import (
    Event,
    Heartbeats,
    PeerConnected,
    Server,
)
from tests.helpers.ws_wire import (
    Identity,
    client_challenge_request,
    client_heartbeat,
    client_signed_challenge,
    decode_server,
    recv_bin,
    recv_close,
)


async def events_until(server: Server, pred: Any, timeout: float = 30) -> list[Event]:
    """Polls (via the eventfd) until pred(all events so far) holds."""
    loop = asyncio.get_running_loop()
    got: list[Event] = []
    ready = asyncio.Event()
    loop.add_reader(server.fileno(), ready.set)
    try:
        deadline = time.monotonic() + timeout
        while True:
            got += server.poll()
            if pred(got):
                return got
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"timed out; events so far: {got}"
            ready.clear()
            with suppress(TimeoutError):
                await asyncio.wait_for(ready.wait(), remaining)
    finally:
        loop.remove_reader(server.fileno())


def heartbeats(events: list[Event]) -> list[tuple[str, tuple[float, ...], object]]:
    out = []
    for ev in events:
        if isinstance(ev, Heartbeats):
            assert ev.positions.dtype == np.float32 and ev.positions.shape == (len(ev.addresses), 3)
            for i, a in enumerate(ev.addresses):
                out.append((a, tuple(float(v) for v in ev.positions[i]), ev.desired_rooms[i]))
    return out


async def rejected(port: int, frames: list[bytes], path: str = "/ws") -> tuple[int, str, list[str]]:
    async with aiohttp.ClientSession() as s:
        ws = await s.ws_connect(f"http://127.0.0.1:{port}{path}")
        for f in frames:
            await ws.send_bytes(f)
        seen = []
        while True:
            msg = await ws.receive(timeout=10)
            if msg.type == aiohttp.WSMsgType.BINARY:
                seen.append(decode_server(msg.data)[0])
                continue
            return int(ws.close_code or 0), str(msg.extra or ""), seen


async def replaced_session(
    session: aiohttp.ClientSession,
    server: Server,
    me: Identity,
    old: aiohttp.ClientWebSocketResponse,
) -> aiohttp.ClientWebSocketResponse:
    """A second connector session for ``me``'s address while ``old`` is open: it is told
    ``already_connected`` and welcomed, ``old`` is kicked (KR_NEW_SESSION) and closed 4006;
    the new session's heartbeats flow and no disconnect is reported for the old one."""
    new = await session.ws_connect(f"http://127.0.0.1:{server.port}/ws")
    await new.send_bytes(client_challenge_request(me.address))
    _kind, ch = decode_server(await recv_bin(new))
    assert ch["already_connected"] is True
    await new.send_bytes(client_signed_challenge(me.chain(ch["challenge"])))
    assert decode_server(await recv_bin(new)) == ("welcome", {"peer_id": me.lower})
    assert await recv_bin(old) == b"\x32\x00"  # kicked{KR_NEW_SESSION}
    assert await recv_close(old) == (
        4006,
        "session replaced: a new session for this address connected",
    )
    await new.send_bytes(client_heartbeat((1, 2, 3)))
    evs = await events_until(server, lambda e: len(heartbeats(e)) >= 1)
    assert [e for e in evs if not isinstance(e, Heartbeats)] == [
        PeerConnected(me.lower),
        PeerConnected(me.lower),
    ]
    return new
