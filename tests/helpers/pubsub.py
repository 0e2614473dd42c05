"""Addresses, heartbeat batches and async waiting for the pub/sub tests (in process and NATS)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import numpy as np

from dclcomms.heartbeats import UNSET, Unset
from dclcomms.pubsub import HeartbeatBatch

SEED = 7  # positions of batch_of


def addr(i: int) -> str:
    return f"0x{i:040x}"


def run(test: Callable[[], Awaitable[None]], timeout: float = 30.0) -> None:
    asyncio.run(asyncio.wait_for(test(), timeout))


async def until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def batch_of(n: int) -> HeartbeatBatch:
    rng = np.random.default_rng(SEED)
    pos = rng.uniform(-100, 100, size=(n, 3)).astype(np.float32)
    rooms: list[str | Unset] = [UNSET] * n
    rooms[0] = "I7"
    return HeartbeatBatch([addr(i) for i in range(n)], pos, rooms)
