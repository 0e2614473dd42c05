"""The internal publish/subscribe between the connector glue, the archipelago core and stats.

Subjects are those of archipelago.md section 4, so that NATS can replace
the in-process one without touching its users:

====================================  ====================  ==========================
subject                               message               publisher -> subscribers
====================================  ====================  ==========================
``peer.<addr>.heartbeat``             :class:`Heartbeat`    connector -> core, stats
``peer.<addr>.disconnect``            ``None`` (empty)      connector -> core, stats
``engine.peer.<addr>.island_changed`` :class:`IslandChanged` core -> connector
``engine.island.<id>.peer_join``      :class:`IslandPeer`   core -> connector
``engine.island.<id>.peer_left``      :class:`IslandPeer`   core -> connector
``engine.islands``                    :class:`IslandStatus` core -> stats (every tick)
``engine.discovery``                  :class:`Discovery`    core -> stats (every 10 s)
====================================  ====================  ==========================

Handlers always receive typed messages: :meth:`PubSub.publish` accepts either the
typed message or its protobuf bytes (decoded by subject). The in-process pub/sub
hands objects over without encoding; the NATS one encodes with ``to_bytes()``.
An :class:`IslandChanged` carries its island's member map as an
:class:`IslandMembers`, shared by every ``island_changed`` of that island in a
tick: the map is encoded once per island (not once per recipient) and, on the
receiving side, decoded once per distinct map.
Heartbeats travel in batches (:meth:`PubSub.publish_heartbeats` /
:meth:`PubSub.subscribe_heartbeats`), as the one :class:`~dclcomms.heartbeats.HeartbeatBatch`
the C++ server hands over and the engine ingests: the in-process pub/sub never
splits them; the NATS one splits them into one message per subject and batches
again on the receiving side.

Handlers are synchronous and run on the publisher's thread (the realm's event
loop); an exception in one handler is logged and does not stop the others.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import (
    Callable,
    ItemsView,
    Iterable,
    Iterator,
    KeysView,
    Mapping,
    Sequence,
    ValuesView,
)
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dclcomms import _core, codec
from dclcomms.heartbeats import UNSET, HeartbeatBatch, Unset

log = logging.getLogger("dclcomms.pubsub")

V3 = "decentraland.kernel.comms.v3."
Vec3 = tuple[float, float, float]


_encode = codec.encode
_decode = codec.decode


@dataclass(frozen=True)
class Heartbeat:
    """One heartbeat. ``desired_room``: UNSET = field absent (keep), "" = clear."""

    position: Vec3
    desired_room: str | Unset = UNSET

    def to_bytes(self) -> bytes:

        x, y, z = self.position
        msg: dict[str, Any] = {"position": {"x": x, "y": y, "z": z}}
        if self.desired_room is not UNSET:
            msg["desiredRoom"] = self.desired_room
        return _encode(V3 + "Heartbeat", msg)

    @classmethod
    def from_bytes(cls, data: bytes) -> Heartbeat | None:
        """None when the heartbeat has no position (ignored by every consumer)."""

        msg = _decode(V3 + "Heartbeat", data)
        pos = msg.get("position")
        if pos is None:
            return None
        p = (float(pos.get("x", 0.0)), float(pos.get("y", 0.0)), float(pos.get("z", 0.0)))
        return cls(p, msg.get("desiredRoom", UNSET))


def split_batch(batch: HeartbeatBatch) -> list[tuple[str, Heartbeat]]:
    """``(address, Heartbeat)`` of each row: the per-peer ``peer.<addr>.heartbeat`` messages."""
    pos = batch.positions.tolist()
    return [
        (a, Heartbeat((p[0], p[1], p[2]), d))
        for a, p, d in zip(batch.addresses, pos, batch.desired_rooms, strict=True)
    ]


def batch_of_one(address: str, hb: Heartbeat) -> HeartbeatBatch:
    """The batch of one ``peer.<addr>.heartbeat`` message."""
    return HeartbeatBatch([address], np.asarray([hb.position], dtype=np.float32), [hb.desired_room])


class IslandMembers(Mapping[str, Vec3]):
    """An island's members -> last position, in member order (a read-only mapping).

    The core builds one per island per tick and every ``island_changed`` of that
    island carries the same object; :meth:`IslandChanged.from_bytes` returns one
    per distinct member map it decodes (shared between the messages that carry
    it). The encoded form - the ``peers`` entries of an ``IslandChangedMessage``,
    which every encoder writes last - is computed once, on first use
    (:meth:`to_bytes`), or kept from the bytes it was decoded from. Equal to any
    mapping with the same items. Built from a mapping or ``(peer_id, (x, y, z))``
    pairs, which it copies.
    """

    __slots__ = ("_peers", "_wire")

    def __init__(self, peers: Mapping[str, Vec3] | Iterable[tuple[str, Vec3]] = ()) -> None:
        self._peers: dict[str, Vec3] = dict(peers)
        self._wire: bytes | None = None

    @classmethod
    def _adopt(cls, peers: dict[str, Vec3], wire: bytes | None) -> IslandMembers:
        """Wrap a dict nobody else holds (no copy), with its encoded form if known."""
        m = cls.__new__(cls)
        m._peers = peers
        m._wire = wire
        return m

    def __getitem__(self, peer_id: str) -> Vec3:
        return self._peers[peer_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._peers)

    def __len__(self) -> int:
        return len(self._peers)

    def __contains__(self, peer_id: object) -> bool:
        return peer_id in self._peers

    def keys(self) -> KeysView[str]:
        return self._peers.keys()

    def items(self) -> ItemsView[str, Vec3]:
        return self._peers.items()

    def values(self) -> ValuesView[Vec3]:
        return self._peers.values()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, IslandMembers):
            return self is other or self._peers == other._peers
        if isinstance(other, dict):
            return self._peers == other
        if isinstance(other, Mapping):
            return self._peers == dict(other.items())
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # like dict

    def __repr__(self) -> str:
        return f"IslandMembers({self._peers!r})"

    def to_bytes(self) -> bytes:
        """The ``peers`` entries (field 4) of an ``IslandChangedMessage``, in member order.

        Computed once (positions as float32). Raises :class:`dclcomms.EncodeError`
        for malformed positions.
        """
        wire = self._wire
        if wire is None:
            wire = self._wire = _encode_peers(list(self._peers.items()))
        return wire


def _encode_peers(peers: Sequence[tuple[str, Vec3]]) -> bytes:
    # The peers entries alone are an IslandChangedMessage without header fields:
    # the fast encoder writes exactly the generic encoder's bytes.
    return _core.codec_encode_island_changed("", "", None, peers)


class _PeersCache:
    """The last decoded member map of each island, by island id (bounded).

    Every ``island_changed`` of one island in a tick carries the same peers
    entries, so a receiver decodes each island's map once: a message whose
    entries equal (byte for byte) those last decoded for its island gets the
    same :class:`IslandMembers`. Maps below ``min_bytes`` are decoded each time
    (cheap) and not kept; beyond ``max_islands`` the least recently decoded
    island is forgotten.
    """

    def __init__(self, max_islands: int = 4096, min_bytes: int = 512) -> None:
        self.max_islands = max_islands
        self.min_bytes = min_bytes
        self._maps: dict[str, tuple[bytes, IslandMembers]] = {}
        self._lock = threading.Lock()

    def members(self, island_id: str, data: bytes, at: int) -> IslandMembers:
        """The member map of the peers entries ``data[at:]`` (a message of ``island_id``)."""
        size = len(data) - at
        if size < self.min_bytes:
            tail = data[at:]
            return IslandMembers._adopt(_core.codec_decode_island_changed(tail)[3], tail)
        with self._lock:
            entry = self._maps.get(island_id)
        if entry is not None and len(entry[0]) == size and data.endswith(entry[0]):
            return entry[1]
        tail = data[at:]
        m = IslandMembers._adopt(_core.codec_decode_island_changed(tail)[3], tail)
        with self._lock:
            self._maps.pop(island_id, None)
            self._maps[island_id] = (tail, m)
            while len(self._maps) > self.max_islands:
                del self._maps[next(iter(self._maps))]
        return m

    def clear(self) -> None:
        with self._lock:
            self._maps.clear()


_PEERS_CACHE = _PeersCache()


@dataclass(frozen=True)
class IslandChanged:
    """``IslandChangedMessage``: where the recipient goes and who is there.

    ``peers``: every member incl. the recipient -> last position, in member
    order. Any mapping is accepted; the core publishes an :class:`IslandMembers`
    (encoded once per island) and :meth:`from_bytes` returns one.
    """

    island_id: str
    conn_str: str
    from_island_id: str | None
    peers: Mapping[str, Vec3]

    def to_bytes(self) -> bytes:

        # Header fields, then the peers entries (the field order of every
        # encoder): the entries are encoded once per member map.
        head = _core.codec_encode_island_changed(
            self.island_id, self.conn_str, self.from_island_id, ()
        )
        peers = self.peers
        if isinstance(peers, IslandMembers):
            return head + peers.to_bytes()
        return head + _encode_peers(list(peers.items()))

    @classmethod
    def from_bytes(cls, data: bytes) -> IslandChanged:

        data = bytes(data)
        try:
            island_id, conn_str, from_id, at = _core.codec_decode_island_changed_header(data)
            if at >= 0:  # the peers entries are the tail (always, from any encoder)
                return cls(island_id, conn_str, from_id, _PEERS_CACHE.members(island_id, data, at))
        except ValueError:
            pass  # undecodable: the whole-message decoder raises the canonical error
        island_id, conn_str, from_id, peers = _core.codec_decode_island_changed(data)
        return cls(island_id, conn_str, from_id, IslandMembers._adopt(peers, None))


@dataclass(frozen=True)
class IslandPeer:
    """``peer_join`` / ``peer_left`` of one island (JoinIslandMessage / LeftIslandMessage)."""

    island_id: str
    peer_id: str

    def to_bytes(self) -> bytes:

        return _encode(
            V3 + "JoinIslandMessage", {"islandId": self.island_id, "peerId": self.peer_id}
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> IslandPeer:

        m = _decode(V3 + "JoinIslandMessage", data)
        return cls(m.get("islandId", ""), m.get("peerId", ""))


@dataclass(frozen=True)
class IslandData:
    id: str
    peers: tuple[str, ...]
    max_peers: int
    center: Vec3  # y = 0
    radius: float


@dataclass(frozen=True)
class IslandStatus:
    islands: tuple[IslandData, ...]

    def to_bytes(self) -> bytes:

        data = [
            {
                "id": i.id,
                "peers": list(i.peers),
                "maxPeers": i.max_peers,
                "center": {"x": i.center[0], "y": i.center[1], "z": i.center[2]},
                "radius": i.radius,
            }
            for i in self.islands
        ]
        return _encode(V3 + "IslandStatusMessage", {"data": data})

    @classmethod
    def from_bytes(cls, data: bytes) -> IslandStatus:

        m = _decode(V3 + "IslandStatusMessage", data)
        out = []
        for d in m.get("data", []):
            c = d.get("center", {})
            out.append(
                IslandData(
                    d.get("id", ""),
                    tuple(d.get("peers", [])),
                    int(d.get("maxPeers", 0)),
                    (float(c.get("x", 0.0)), float(c.get("y", 0.0)), float(c.get("z", 0.0))),
                    float(d.get("radius", 0.0)),
                )
            )
        return cls(tuple(out))


@dataclass(frozen=True)
class Discovery:
    """``ServiceDiscoveryMessage{server_name, status{current_time, commit_hash, user_count}}``."""

    server_name: str
    current_time_ms: int
    commit_hash: str
    user_count: int

    def to_bytes(self) -> bytes:

        status = {
            "currentTime": str(self.current_time_ms),
            "commitHash": self.commit_hash,
            "userCount": self.user_count,
        }
        return _encode(
            V3 + "ServiceDiscoveryMessage", {"serverName": self.server_name, "status": status}
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Discovery:

        m = _decode(V3 + "ServiceDiscoveryMessage", data)
        s = m.get("status", {})
        return cls(
            m.get("serverName", ""),
            int(s.get("currentTime", 0)),
            s.get("commitHash", ""),
            int(s.get("userCount", 0)),
        )


@dataclass(frozen=True)
class AppData:
    """Opaque application data of ``client.peer.<addr>.<topic>`` / ``client.<topic>``
    (the /bus message bus; the payload travels as is)."""

    payload: bytes

    def to_bytes(self) -> bytes:
        return self.payload

    @classmethod
    def from_bytes(cls, data: bytes) -> AppData:
        return cls(bytes(data))


Message = Heartbeat | IslandChanged | IslandPeer | IslandStatus | Discovery | AppData | None
Handler = Callable[[str, Any], None]


def decode_payload(subject: str, data: bytes) -> Message:
    """The typed message of a subject from its wire bytes."""
    t = subject.split(".")
    if t[0] == "peer" and len(t) == 3:
        if t[2] == "heartbeat":
            return Heartbeat.from_bytes(data)
        if t[2] in ("disconnect", "connect"):
            return None
    if t[0] == "engine":
        if len(t) == 4 and t[1] == "peer" and t[3] == "island_changed":
            return IslandChanged.from_bytes(data)
        if len(t) == 4 and t[1] == "island" and t[3] in ("peer_join", "peer_left"):
            return IslandPeer.from_bytes(data)
        if subject == "engine.islands":
            return IslandStatus.from_bytes(data)
        if subject == "engine.discovery":
            return Discovery.from_bytes(data)
    if t[0] == "client" and len(t) >= 2:
        return AppData.from_bytes(data)
    raise ValueError(f"no message type for subject {subject!r}")


def encode_payload(message: Message) -> bytes:
    return b"" if message is None else message.to_bytes()


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS wildcards: ``*`` matches one token, a final ``>`` one or more."""
    p = pattern.split(".")
    s = subject.split(".")
    for i, tok in enumerate(p):
        if tok == ">":
            return i == len(p) - 1 and len(s) > i
        if i >= len(s) or (tok != "*" and tok != s[i]):
            return False
    return len(p) == len(s)


@dataclass(eq=False)
class Subscription:
    pattern: str
    handler: Handler
    pubsub: PubSub = field(repr=False)
    batch: bool = False  # a heartbeat-batch subscription

    def unsubscribe(self) -> None:
        self.pubsub._remove(self)


HeartbeatHandler = Callable[[HeartbeatBatch], None]
HEARTBEATS = "peer.*.heartbeat"


class PubSub(ABC):
    """Publish/subscribe on NATS-shaped subjects with typed payloads."""

    @abstractmethod
    def publish(self, subject: str, payload: bytes | Message) -> None: ...

    @abstractmethod
    def subscribe(self, pattern: str, handler: Handler) -> Subscription: ...

    @abstractmethod
    def _remove(self, sub: Subscription) -> None: ...

    def publish_heartbeats(self, batch: HeartbeatBatch) -> None:
        """Publish a batch; the default splits it into ``peer.<addr>.heartbeat`` messages."""
        for addr, hb in split_batch(batch):
            self.publish(f"peer.{addr}.heartbeat", hb)

    def publish_island_changed(self, items: Sequence[tuple[str, IslandChanged]]) -> None:
        """``engine.peer.<addr>.island_changed`` of many peers, in order (one call per
        tick from the core; the default publishes them one by one)."""
        for peer, msg in items:
            self.publish(f"engine.peer.{peer}.island_changed", msg)

    def publish_island_peers(self, kind: str, items: Sequence[IslandPeer]) -> None:
        """``engine.island.<id>.<kind>`` (``peer_join`` or ``peer_left``) of many peers, in
        order (the default publishes them one by one)."""
        for msg in items:
            self.publish(f"engine.island.{msg.island_id}.{kind}", msg)

    def subscribe_heartbeats(self, handler: HeartbeatHandler) -> Subscription:
        """Receive heartbeats as batches; the default wraps each message in a batch of one."""

        def one(subject: str, hb: Heartbeat | None) -> None:
            if hb is not None:
                handler(batch_of_one(subject.split(".")[1], hb))

        return self.subscribe(HEARTBEATS, one)

    def close(self) -> None:  # noqa: B027 - nothing to release in memory
        """Release connections (no-op in process)."""


class InProcessPubSub(PubSub):
    """Synchronous in-process delivery of typed objects (no encoding)."""

    def __init__(self) -> None:
        self._subs: list[Subscription] = []
        self.published = 0  # messages, a batch counting its heartbeats
        self.handler_errors = 0

    def _deliver(self, sub: Subscription, subject: str, payload: Any) -> None:
        try:
            sub.handler(subject, payload)
        except Exception:
            self.handler_errors += 1
            log.exception("pub/sub handler failed", extra={"subject": subject})

    def publish(self, subject: str, payload: bytes | Message) -> None:
        if isinstance(payload, bytes | bytearray):
            payload = decode_payload(subject, bytes(payload))
        self.published += 1
        for sub in list(self._subs):
            if subject_matches(sub.pattern, subject):
                if sub.batch:
                    assert isinstance(payload, Heartbeat)
                    self._deliver(sub, subject, batch_of_one(subject.split(".")[1], payload))
                else:
                    self._deliver(sub, subject, payload)

    def publish_heartbeats(self, batch: HeartbeatBatch) -> None:
        if len(batch) == 0:
            return
        self.published += len(batch)
        plain = False
        for sub in list(self._subs):
            if sub.batch:
                self._deliver(sub, HEARTBEATS, batch)
            elif subject_matches(sub.pattern, "peer.x.heartbeat"):
                plain = True
        if plain:  # somebody subscribed the per-peer subjects: split for them only
            for addr, hb in split_batch(batch):
                subject = f"peer.{addr}.heartbeat"
                for sub in list(self._subs):
                    if not sub.batch and subject_matches(sub.pattern, subject):
                        self._deliver(sub, subject, hb)

    def subscribe(self, pattern: str, handler: Handler) -> Subscription:
        sub = Subscription(pattern, handler, self)
        self._subs.append(sub)
        return sub

    def subscribe_heartbeats(self, handler: HeartbeatHandler) -> Subscription:
        sub = Subscription(HEARTBEATS, lambda _s, b: handler(b), self, batch=True)
        self._subs.append(sub)
        return sub

    def _remove(self, sub: Subscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)

    def close(self) -> None:
        self._subs.clear()


__all__ = [
    "UNSET",
    "AppData",
    "Discovery",
    "Heartbeat",
    "HeartbeatBatch",
    "InProcessPubSub",
    "IslandChanged",
    "IslandData",
    "IslandMembers",
    "IslandPeer",
    "IslandStatus",
    "Message",
    "PubSub",
    "Subscription",
    "Unset",
    "batch_of_one",
    "decode_payload",
    "encode_payload",
    "subject_matches",
]
