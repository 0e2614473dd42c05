"""Addresses, heartbeat batches and async waiting for the pub/sub tests (in process and
NATS); for NATS, a publisher, a subscriber and what crossed the wire."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import numpy as np

from dclcomms.heartbeats import UNSET, Unset
from dclcomms.nats.pubsub import NatsPubSub
from dclcomms.pubsub import HeartbeatBatch

SEED = 7  # positions of batch_of


def addr(i: int) -> str:
    return f"0x{i:040x}"


def run(test: Callable[[], Awaitable[None]], timeout: float = 60.0) -> None:
    asyncio.run(asyncio.wait_for(test(), timeout))


async def until(cond: Callable[[], bool], timeout: float = 30.0) -> None:
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


_SETTLE = "_wire.settle."  # the subjects of Wire.settle's markers


class Wire:
    """What crossed the NATS server, recorded by a plain nats-py client (``nc``)."""

    def __init__(self, nc: Any) -> None:
        self.nc = nc
        self.seen: list[tuple[str, bytes]] = []
        self._settled: set[str] = set()
        self._n = 0

    @property
    def subjects(self) -> list[str]:
        return [s for s, _ in self.seen]

    async def _record(self, msg: Any) -> None:
        if msg.subject.startswith(_SETTLE):
            self._settled.add(msg.subject)
        else:
            self.seen.append((msg.subject, bytes(msg.data)))

    async def settle(self, timeout: float = 30.0) -> None:
        """Wait until ``seen`` holds every message the server routed before this call.

        A flush only proves that the server has answered this connection's PING; nats-py
        hands the messages before that PONG to the subscription's callback in a task of
        its own, which may not have run yet. A marker published from this connection is
        routed after everything the server already holds for it, so once the callback
        has recorded the marker it has recorded those messages too (markers are not
        kept in ``seen``). Publishers must have flushed their own connections first."""
        self._n += 1
        marker = f"{_SETTLE}{self._n}"
        await self.nc.publish(marker, b"")
        await self.nc.flush()
        await until(lambda: marker in self._settled, timeout)
        self._settled.discard(marker)


@asynccontextmanager
async def wire_of(url: str) -> AsyncIterator[Wire]:
    """Every message on the server at ``url`` from now on (subscribed to ``>``, flushed)."""
    import nats

    nc = await nats.connect(url)
    try:
        wire = Wire(nc)
        await nc.subscribe(">", cb=wire._record)
        await nc.flush()
        yield wire
    finally:
        await nc.close()


@asynccontextmanager
async def bus_of(url: str, scheme: str = "workers", **kw: Any) -> AsyncIterator[NatsPubSub]:
    """A :class:`NatsPubSub` of ``scheme`` on ``url``, closed on exit."""
    bus = await NatsPubSub.connect([url], subjects=scheme, **kw)
    try:
        yield bus
    finally:
        await bus.aclose()


@asynccontextmanager
async def pub_sub_wire(
    url: str, scheme: str, **kw: Any
) -> AsyncIterator[tuple[NatsPubSub, NatsPubSub, Wire]]:
    """A publishing and a subscribing :class:`NatsPubSub` of ``scheme`` and the wire."""
    async with (
        bus_of(url, scheme, **kw) as pub,
        bus_of(url, scheme, **kw) as sub,
        wire_of(url) as wire,
    ):
        yield pub, sub, wire
