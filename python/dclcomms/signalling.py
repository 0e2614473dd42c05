"""P2P signalling on the /bus: who may signal whom, and what a signal looks like.

The P2P transport (transports.md 4) has island members build a WebRTC mesh among
themselves; the offers, answers and ICE candidates travel over the realm's ``/bus``
as addressed peer topics: ``<to>.offer``, ``<to>.answer``, ``<to>.candidate``,
published by ``<from>`` (NATS ``client-proto.peer.<from>.<to>.<kind>`` in the ``v3``
scheme). The :class:`~dclcomms.msgbus.MessageBusGateway` applies these rules to
every such message, both when a session publishes it and when it arrives for a
local session (from this connector or, through NATS, from another one):

* **relay rule**: ``<from>`` and ``<to>`` are members of the same island
  (``not_same_island``), as the realm's core last said (:class:`IslandMembership`);
* **shape**: offer/answer are the UTF-8 JSON of an SDP description
  ``{"type": "offer"|"answer"|"pranswer", "sdp": "v=0..."}`` whose type matches the
  topic; a candidate is ``{"candidate": RTCIceCandidateInit, "initiator": bool}``
  (``bad_signal``);
* **size**: the bus's 16 KiB payload cap (``payload_too_large``);
* **rate**: a token bucket per session, ``p2p_signal_max_per_s`` sustained and
  ``p2p_signal_burst`` at once (``rate_limited``; publishing side only).

A refused publish is answered with an ``error`` frame and nothing is delivered; a
refused delivery is dropped and counted.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from dclcomms.errors import MessageBusError
from dclcomms.nats.subjects import ADDRESS_RE
from dclcomms.pubsub import IslandChanged, IslandStatus, PubSub, Subscription

#: the addressed topics of transports.md 4, ``<to>.<kind>``
SIGNAL_KINDS = ("offer", "answer", "candidate")
_DESCRIPTION_TYPES = {"offer": ("offer",), "answer": ("answer", "pranswer")}


def signal_target(topic: str) -> tuple[str, str] | None:
    """``(to, kind)`` when ``topic`` is a signalling topic ``<addr>.offer|answer|candidate``."""
    to, dot, kind = topic.partition(".")
    if dot and kind in SIGNAL_KINDS and ADDRESS_RE.fullmatch(to) is not None:
        return to, kind
    return None


def _bad(why: str) -> MessageBusError:
    return MessageBusError(f"malformed signal: {why}", code="bad_signal")


def _optional(d: dict[str, Any], key: str, kinds: type | tuple[type, ...]) -> None:
    v = d.get(key)
    if v is not None and (not isinstance(v, kinds) or isinstance(v, bool)):
        raise _bad(f"candidate.{key} has the wrong type")


def check_signal(kind: str, data: bytes) -> dict[str, Any]:
    """The decoded signal of ``kind`` (``offer``/``answer``/``candidate``), or
    :class:`~dclcomms.errors.MessageBusError` ``bad_signal``."""
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _bad("not UTF-8 JSON") from None
    if not isinstance(obj, dict):
        raise _bad("not a JSON object")
    if kind in _DESCRIPTION_TYPES:
        if obj.get("type") not in _DESCRIPTION_TYPES[kind]:
            raise _bad(f"{kind} needs type {' or '.join(_DESCRIPTION_TYPES[kind])}")
        sdp = obj.get("sdp")
        if not isinstance(sdp, str) or not sdp.startswith("v=0"):
            raise _bad("sdp must be a session description (v=0 ...)")
        return obj
    if kind != "candidate":
        raise _bad(f"unknown signal kind {kind!r}")
    cand = obj.get("candidate")
    if not isinstance(cand, dict):
        raise _bad("candidate must be an RTCIceCandidateInit object")
    line = cand.get("candidate")
    if not isinstance(line, str) or (line and not line.startswith("candidate:")):
        raise _bad('candidate.candidate must be "" or an a=candidate line ("candidate:...")')
    _optional(cand, "sdpMid", str)
    _optional(cand, "sdpMLineIndex", int)
    _optional(cand, "usernameFragment", str)
    if isinstance(cand.get("sdpMLineIndex"), int) and cand["sdpMLineIndex"] < 0:
        raise _bad("candidate.sdpMLineIndex must be >= 0")
    if not isinstance(obj.get("initiator"), bool):
        raise _bad("initiator must be true or false")
    return obj


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved; :meth:`take` one or refuse."""

    __slots__ = ("_clock", "_t", "burst", "rate", "tokens")

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self._clock = clock
        self._t = clock()

    def take(self) -> bool:
        now = self._clock()
        self.tokens = min(self.burst, self.tokens + (now - self._t) * self.rate)
        self._t = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


class IslandMembership:
    """Every peer's current island, as the realm's core published it.

    Follows ``engine.peer.<addr>.island_changed`` (every connector receives all of
    them) as they come, and replaces the whole map with the members listed by each
    tick's ``engine.islands``, so peers that left, disconnected or expired (and
    islands that ended) drop out within one tick.
    """

    def __init__(self, pubsub: PubSub) -> None:
        self._island: dict[str, str] = {}
        self._subs: list[Subscription] = [
            pubsub.subscribe("engine.peer.*.island_changed", self._on_island_changed),
            pubsub.subscribe("engine.islands", self._on_islands),
        ]

    def close(self) -> None:
        for s in self._subs:
            s.unsubscribe()
        self._subs.clear()

    def __len__(self) -> int:
        return len(self._island)

    def island_of(self, address: str) -> str | None:
        return self._island.get(address)

    def same_island(self, a: str, b: str) -> bool:
        island = self._island.get(a)
        return island is not None and self._island.get(b) == island

    def _on_island_changed(self, subject: str, msg: IslandChanged) -> None:
        self._island[subject.split(".")[2]] = msg.island_id

    def _on_islands(self, _subject: str, msg: IslandStatus) -> None:
        self._island = {p: i.id for i in msg.islands for p in i.peers}


__all__ = [
    "SIGNAL_KINDS",
    "IslandMembership",
    "TokenBucket",
    "check_signal",
    "signal_target",
]
