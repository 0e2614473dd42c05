"""A realm with the /bus for tests, and a /bus peer that records what it receives."""

from __future__ import annotations

import base64
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from dclcomms.config import RealmConfig
from dclcomms.realm import Realm
from tests.helpers.common import realm_config
from tests.helpers.common import run as run  # the msgbus tests' runner
from tests.helpers.realm_client import ArchipelagoClient, BusClient


def config(**kw: Any) -> RealmConfig:
    return realm_config(**{"flush_interval_s": 0.05, "bus_global_topics": "news,lobby.chat", **kw})


@contextlib.asynccontextmanager
async def realm(**kw: Any) -> AsyncIterator[Realm]:
    r = await Realm(config(**kw)).start()
    try:
        yield r
    finally:
        await r.stop()


class Peer:
    """An archipelago session (for the island) plus a /bus session of the same identity."""

    def __init__(self, seed: int) -> None:
        self.arch = ArchipelagoClient(seed)
        self.bus = BusClient(seed)
        self.address = self.arch.address

    async def start(self, r: Realm, x: float = 0.0) -> Peer:
        base = f"ws://127.0.0.1:{r.port}"
        await self.arch.connect(base)
        await self.arch.handshake()
        await self.bus.connect(base)
        assert await self.bus.handshake() == self.address
        await self.arch.heartbeat(x, 0.0, 0.0)
        self.island = (await self.arch.island())["islandId"]
        return self

    async def close(self) -> None:
        await self.bus.close()
        await self.arch.close()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def error(c: BusClient, frame: Any, code: str) -> dict[str, Any]:
    if isinstance(frame, str):
        assert c.ws is not None
        await c.ws.send_str(frame)
    else:
        await c.send_json(frame)
    got = await c.frame(type="error")
    assert got["code"] == code, got
    return got
