"""``p2p:<island>:<peer>``: the island's members talk over a WebRTC mesh (transports.md 4).

The adapter connects its peer to a few other members of the island (``target``
connections, at most ``max_connections``) with `aiortc <https://github.com/aiortc/aiortc>`_
data channels, signalling through the realm's ``/bus``: it subscribes
``<self>.offer``, ``<self>.answer`` and ``<self>.candidate`` and publishes to
``<peer>.offer`` etc. (the server relays them only between members of one island).
Each connection carries two data channels opened by the initiator: ``data``
(reliable, ordered) and ``data-unreliable`` (unordered, no retransmissions).

**Topology.** The members, sorted by address, form a ring; each peer wants the
``target`` nearest members on it (distance 1, 2, ... on both sides), which makes a
connected graph that stays connected when any one member leaves. Of a pair, the
higher address offers at once; the lower one offers only if no offer came within
``offer_wait_s``. An offer not answered within ``offer_retry_s`` is sent again, then
after twice that, and so on (its addressee may not have been listening yet); a repeated
offer is answered again. Both
offering (glare): the lower address drops its own attempt and answers (spec rule); the
higher one repeats its offer at once. Offers from non-members are kept a while (their
``join_island`` may still be on its way), then ignored; from members, accepted while
below ``max_connections`` (or when the offerer is one of the wanted neighbours, closing
an unwanted connection to make room). A member heard for the first time gets our
``links`` at once (so a newcomer hears the whole island within a round trip). A
connection not open within ``connect_timeout_s`` is dropped and its peer skipped for
``retry_backoff_s``.

**Packets.** Every RFC-4 packet travels in an envelope (:func:`encode_envelope`):
``version, flags, hops, ttl, source address, instance, sequence`` then the payload.
Each peer periodically floods a ``links`` control packet listing its open
connections, so every member knows the mesh. Relaying:

* reliable packets go from the source to each of its neighbours and are relayed by
  every receiver to its neighbours except the one it came from, the source, and
  the source's own neighbours (they got it directly): every path is used, so a
  member leaving loses nothing; receivers drop duplicates and deliver each
  source's reliable packets **in order** (a gap not filled within
  ``reorder_timeout_s`` is skipped and counted);
* unreliable packets follow the source's shortest-path tree (breadth-first,
  lowest address first, over connections both ends report): one copy per member;
  receivers drop duplicates and packets older than the last 64 they saw. Each
  relay computes the tree from its own view of the links; one that may disagree
  with the others (the packet came from a neighbour that is not its parent, its
  view changed within a ``links`` period, or a copy it already had arrived)
  relays to every neighbour instead (:meth:`MeshRouter._relay_unreliable`).

A packet is relayed only while ``hops + 1 < ttl``.

``PEER_DISCONNECTED`` is emitted for members that leave the island
(:meth:`P2PAdapter.members_changed`); ``disconnect`` closes every connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import random
import struct
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dclcomms.auth import Identity
from dclcomms.client._events import MESSAGE, PEER_DISCONNECTED, Message, PeerDisconnected
from dclcomms.client.adapters import Adapter, parse_connection_string
from dclcomms.client.msgbus import MessageBusClient
from dclcomms.errors import TransportError

log = logging.getLogger("dclcomms.client.p2p")

VERSION = 1
F_RELIABLE = 0x01
F_LINKS = 0x02  # control: the source's open connections (20-byte addresses)
HEADER = struct.Struct(">BBBB20sII")
HEADER_BYTES = HEADER.size  # 32
SEQ_MOD = 1 << 32
UNRELIABLE_WINDOW = 64
#: seconds ``disconnect`` lets a negotiation step under way end (it gathers ICE candidates,
#: at most aioice's 5 s STUN timeout) before cancelling it
NEGOTIATION_END_S = 10.0


def _error(message: str, code: str) -> TransportError:
    return TransportError(message, code=code)


# --- envelope ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Envelope:
    flags: int
    hops: int
    ttl: int
    src: str  # lowercase 0x address
    instance: int
    seq: int
    payload: bytes

    @property
    def reliable(self) -> bool:
        return bool(self.flags & F_RELIABLE)

    @property
    def control(self) -> bool:
        return bool(self.flags & F_LINKS)


def encode_envelope(
    src: str, instance: int, seq: int, payload: bytes, *, flags: int, ttl: int, hops: int = 0
) -> bytes:
    """``version u8, flags u8, hops u8, ttl u8, src 20 bytes, instance u32, seq u32`` (big
    endian) followed by the payload."""
    raw = bytes.fromhex(src[2:])
    return HEADER.pack(VERSION, flags, hops, ttl, raw, instance, seq) + payload


def decode_envelope(data: bytes) -> Envelope:
    """The envelope of ``data``; ValueError when it is not one."""
    if len(data) < HEADER_BYTES:
        raise ValueError(f"{len(data)} bytes: shorter than the {HEADER_BYTES}-byte header")
    version, flags, hops, ttl, raw, instance, seq = HEADER.unpack_from(data)
    if version != VERSION:
        raise ValueError(f"unknown envelope version {version}")
    if flags & ~(F_RELIABLE | F_LINKS):
        raise ValueError(f"unknown flags {flags:#x}")
    if hops >= ttl:
        raise ValueError(f"hops {hops} >= ttl {ttl}")
    return Envelope(flags, hops, ttl, "0x" + raw.hex(), instance, seq, bytes(data[HEADER_BYTES:]))


def relayed(data: bytes) -> bytes:
    """``data`` with its hop count increased by one."""
    return data[:2] + bytes((data[2] + 1,)) + data[3:]


def encode_links(peers: Iterable[str]) -> bytes:
    return b"".join(bytes.fromhex(p[2:]) for p in sorted(peers))


def decode_links(payload: bytes) -> frozenset[str]:
    if len(payload) % 20:
        raise ValueError("links payload is not a list of 20-byte addresses")
    return frozenset("0x" + payload[i : i + 20].hex() for i in range(0, len(payload), 20))


# --- topology ------------------------------------------------------------------------


def ring_neighbours(me: str, members: Iterable[str], target: int) -> list[str]:
    """The ``target`` members nearest to ``me`` on the ring of sorted addresses
    (distance 1 on both sides, then 2, ...), nearest first."""
    ring = sorted(set(members) | {me})
    n = len(ring)
    if n <= 1:
        return []
    i = ring.index(me)
    out: list[str] = []
    for d in range(1, n):
        for j in (i + d, i - d):
            p = ring[j % n]
            if p != me and p not in out:
                out.append(p)
                if len(out) >= target:
                    return out
    return out


def bfs_parents(src: str, adjacency: Mapping[str, frozenset[str] | set[str]]) -> dict[str, str]:
    """Parent of every node reachable from ``src`` (breadth first, lowest address first)."""
    parents: dict[str, str] = {}
    seen = {src}
    frontier = [src]
    while frontier:
        nxt: list[str] = []
        for u in frontier:
            for v in sorted(adjacency.get(u, ())):
                if v not in seen:
                    seen.add(v)
                    parents[v] = u
                    nxt.append(v)
        frontier = nxt
    return parents


# --- routing -------------------------------------------------------------------------


@dataclass
class _Stream:
    """What one source instance sent us."""

    next_reliable: int | None = None
    buffer: dict[int, tuple[Envelope, bytes, str, float]] = field(default_factory=dict)
    unreliable_high: int | None = None
    unreliable_mask: int = 0  # bit i: seq (high - 1 - i) seen
    #: unreliable packets we relayed to every neighbour (the fallback), recent ones
    flooded: set[int] = field(default_factory=set)
    last_heard: float = 0.0


@dataclass(frozen=True, slots=True)
class Delivery:
    """A packet to hand to the application (``control``: a links update, consumed)."""

    src: str
    payload: bytes
    reliable: bool


class MeshRouter:
    """Envelopes, duplicate suppression, in-order reliable delivery and relay decisions.

    Pure logic (no I/O): :meth:`originate` builds our packets; :meth:`receive` takes
    the bytes a neighbour sent and returns what to deliver and where to relay it.
    ``settle_s``: how long after a change of our view of the links (the ``links``
    period) we still doubt that the other relays share it (unreliable packets: see
    :meth:`_relay_unreliable`).
    """

    def __init__(
        self,
        me: str,
        instance: int,
        *,
        ttl: int = 10,
        reorder_timeout_s: float = 5.0,
        settle_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 1 <= ttl <= 255:
            raise ValueError("ttl must be in [1, 255]")
        self.me = me
        self.instance = instance
        self.ttl = ttl
        self.reorder_timeout_s = reorder_timeout_s
        self.settle_s = settle_s
        self.clock = clock
        self._seq = {True: 0, False: 0}
        self.streams: dict[tuple[str, int], _Stream] = {}
        #: the open connections each source last reported (ours included)
        self.links: dict[str, frozenset[str]] = {me: frozenset()}
        #: when our view of the links last changed (any source's, ours, a member forgotten)
        self.links_changed_at = clock()
        self._parents: dict[str, dict[str, str]] = {}
        self.counters: Counter[str] = Counter()
        #: sources heard for the first time since the caller last cleared it
        self.new_sources: list[str] = []

    # -- our packets

    def originate(self, payload: bytes, *, reliable: bool, control: bool = False) -> bytes:
        flags = (F_RELIABLE if reliable or control else 0) | (F_LINKS if control else 0)
        key = bool(flags & F_RELIABLE)
        seq = self._seq[key]
        self._seq[key] = (seq + 1) % SEQ_MOD
        return encode_envelope(self.me, self.instance, seq, payload, flags=flags, ttl=self.ttl)

    def set_own_links(self, peers: Iterable[str]) -> bytes:
        """Record our open connections; the ``links`` packet to flood."""
        mine = frozenset(peers)
        if self.links.get(self.me) != mine:
            self.links[self.me] = mine
            self._links_changed()
        return self.originate(encode_links(mine), reliable=True, control=True)

    def forget(self, peer: str) -> None:
        """``peer`` left the island: drop its streams and links."""
        for key in [k for k in self.streams if k[0] == peer]:
            del self.streams[key]
        if self.links.pop(peer, None) is not None:
            self._links_changed()

    def _links_changed(self) -> None:
        self._parents.clear()
        self.links_changed_at = self.clock()

    # -- their packets

    def heard(self, src: str) -> float | None:
        """When ``src`` was last heard (any packet, duplicates included)."""
        times = [s.last_heard for (p, _), s in self.streams.items() if p == src]
        return max(times) if times else None

    def receive(
        self, data: bytes, from_peer: str, neighbours: Iterable[str]
    ) -> tuple[list[Delivery], list[tuple[bytes, list[str], bool]]]:
        """Deliveries and relays ``[(bytes, peers, reliable)]`` for ``data`` from ``from_peer``.

        ValueError for bytes that are not an envelope.
        """
        env = decode_envelope(data)
        if env.src == self.me:
            self.counters["own_echo"] += 1
            return [], []
        now = self.clock()
        stream = self.streams.get((env.src, env.instance))
        if stream is None:
            if not any(p == env.src for p, _ in self.streams):
                self.new_sources.append(env.src)
            stream = self.streams[(env.src, env.instance)] = _Stream()
        stream.last_heard = now
        nbrs = frozenset(neighbours)
        if env.reliable:
            return self._reliable(stream, env, data, from_peer, nbrs, now)
        seen = self._seen_unreliable(stream, env.seq)
        if seen == "stale":
            return [], []
        relays = self._relay_unreliable(stream, env, data, from_peer, nbrs, now, seen == "dup")
        return ([] if seen == "dup" else [Delivery(env.src, env.payload, False)]), relays

    def expire(self) -> tuple[list[Delivery], list[tuple[bytes, list[str], bool]]]:
        """Skip reliable gaps older than ``reorder_timeout_s`` (call periodically)."""
        now = self.clock()
        deliveries: list[Delivery] = []
        relays: list[tuple[bytes, list[str], bool]] = []
        for stream in self.streams.values():
            if not stream.buffer:
                continue
            oldest = min(t for _, _, _, t in stream.buffer.values())
            if now - oldest < self.reorder_timeout_s:
                continue
            first = min(stream.buffer, key=lambda s: (s - (stream.next_reliable or 0)) % SEQ_MOD)
            self.counters["reliable_gaps"] += 1
            stream.next_reliable = first
            d, r = self._drain(stream)
            deliveries += d
            relays += r
        return deliveries, relays

    def _reliable(
        self,
        stream: _Stream,
        env: Envelope,
        data: bytes,
        from_peer: str,
        nbrs: frozenset[str],
        now: float,
    ) -> tuple[list[Delivery], list[tuple[bytes, list[str], bool]]]:
        if stream.next_reliable is None:
            stream.next_reliable = env.seq  # first contact: the stream starts here
        ahead = (env.seq - stream.next_reliable) % SEQ_MOD
        if ahead >= SEQ_MOD // 2 or env.seq in stream.buffer:
            self.counters["duplicates"] += 1
            return [], []
        stream.buffer[env.seq] = (env, data, from_peer, now)
        if ahead:
            self.counters["reordered"] += 1
            if len(stream.buffer) > 1024:  # bound memory: skip the gap now
                stream.next_reliable = min(
                    stream.buffer, key=lambda s: (s - (stream.next_reliable or 0)) % SEQ_MOD
                )
                self.counters["reliable_gaps"] += 1
            else:
                return [], []
        # forward and deliver in order, with the links state of that point in the stream
        return self._drain_with(stream, nbrs)

    def _drain(self, stream: _Stream) -> tuple[list[Delivery], list[tuple[bytes, list[str], bool]]]:
        return self._drain_with(stream, None)

    def _drain_with(
        self, stream: _Stream, nbrs: frozenset[str] | None
    ) -> tuple[list[Delivery], list[tuple[bytes, list[str], bool]]]:
        deliveries: list[Delivery] = []
        relays: list[tuple[bytes, list[str], bool]] = []
        while stream.next_reliable in stream.buffer:
            env, data, from_peer, _ = stream.buffer.pop(stream.next_reliable)
            stream.next_reliable = (stream.next_reliable + 1) % SEQ_MOD
            if env.control:
                try:
                    links = decode_links(env.payload)
                except ValueError:
                    self.counters["bad_links"] += 1
                else:
                    if self.links.get(env.src) != links:
                        self.links[env.src] = links
                        self._links_changed()
            else:
                deliveries.append(Delivery(env.src, env.payload, True))
            neighbours = nbrs if nbrs is not None else self.links.get(self.me, frozenset())
            relays += self._relay(env, data, from_peer, neighbours)
        return deliveries, relays

    def _seen_unreliable(self, stream: _Stream, seq: int) -> str:
        """``"new"``, ``"dup"`` (seen already) or ``"stale"`` (older than the window)."""
        high = stream.unreliable_high
        if high is None:
            stream.unreliable_high = seq
            return "new"
        ahead = (seq - high) % SEQ_MOD
        if ahead == 0:
            self.counters["duplicates"] += 1
            self.counters["unreliable_duplicates"] += 1
            return "dup"
        if ahead < SEQ_MOD // 2:  # newer: slide the window
            stream.unreliable_mask = ((stream.unreliable_mask << ahead) | (1 << (ahead - 1))) & (
                (1 << UNRELIABLE_WINDOW) - 1
            )
            stream.unreliable_high = seq
            return "new"
        back = (high - seq) % SEQ_MOD  # older: inside the window and not seen yet?
        if back > UNRELIABLE_WINDOW:
            self.counters["stale"] += 1
            return "stale"
        bit = 1 << (back - 1)
        if stream.unreliable_mask & bit:
            self.counters["duplicates"] += 1
            self.counters["unreliable_duplicates"] += 1
            return "dup"
        stream.unreliable_mask |= bit
        return "new"

    def _relay(
        self, env: Envelope, data: bytes, from_peer: str, neighbours: frozenset[str]
    ) -> list[tuple[bytes, list[str], bool]]:
        """Reliable packets: to every neighbour but the source's own neighbours."""
        if env.hops + 1 >= env.ttl:
            return []
        direct = self.links.get(env.src, frozenset())  # they had it from the source
        targets = [p for p in neighbours if p != from_peer and p != env.src and p not in direct]
        if not targets:
            return []
        self.counters["relayed"] += len(targets)
        return [(relayed(data), sorted(targets), env.reliable)]

    def _relay_unreliable(
        self,
        stream: _Stream,
        env: Envelope,
        data: bytes,
        from_peer: str,
        neighbours: frozenset[str],
        now: float,
        dup: bool,
    ) -> list[tuple[bytes, list[str], bool]]:
        """Unreliable packets follow the source's shortest-path tree as we see it, unless
        the views of the links may disagree; then we relay to every neighbour but the one
        it came from and the source (the fallback, counted in ``unreliable_fallback``):

        * a copy we already had (in a settled mesh every member gets one: somebody
          relayed outside the tree), unless we relayed it that way already;
        * it came from a neighbour that is not our parent in the source's tree;
        * our view changed within ``settle_s`` (floods may still be on their way to the
          others), or our own connections differ from those we announced.

        Not the source's neighbours either, as reliable relaying does? Only the source's
        own stream says which connections it had when it sent; a view of its links newer
        or older than that would skip a member the source never sent to.
        """
        others = [p for p in neighbours if p != from_peer and p != env.src]
        if env.hops + 1 >= env.ttl or not others:
            return []
        if dup:
            if env.seq in stream.flooded:
                return []
            flood = True
        else:
            parents = self._tree(env.src)
            flood = (
                parents.get(self.me) != from_peer
                or now - self.links_changed_at < self.settle_s
                or neighbours != self.links.get(self.me)
            )
        if flood:
            if len(stream.flooded) >= 2 * UNRELIABLE_WINDOW:  # keep the recent ones
                high = stream.unreliable_high or 0
                stream.flooded = {
                    s for s in stream.flooded if (high - s) % SEQ_MOD <= UNRELIABLE_WINDOW
                }
            stream.flooded.add(env.seq)
            self.counters["unreliable_fallback"] += 1
            targets = others
        else:
            # our children in the source's tree; members the tree does not know: flood
            targets = [p for p in others if parents.get(p, self.me) == self.me]
        if not targets:
            return []
        self.counters["relayed"] += len(targets)
        return [(relayed(data), sorted(targets), False)]

    def _tree(self, src: str) -> dict[str, str]:
        parents = self._parents.get(src)
        if parents is None:
            # connections both ends report (a one-sided claim is not routed on)
            adj = {u: {v for v in vs if u in self.links.get(v, ())} for u, vs in self.links.items()}
            parents = self._parents[src] = bfs_parents(src, adj)
        return parents


# --- options -------------------------------------------------------------------------


@dataclass(frozen=True)
class P2POptions:
    """Settings of the P2P adapter (``CommunicationsDirector(p2p_options=...)``).

    ``ice_servers``: STUN/TURN servers, each ``"stun:host:port"`` or a mapping
    ``{"urls": ..., "username": ..., "credential": ...}`` (none: host candidates only,
    enough on one machine or one LAN; across NATs a STUN server, and TURN behind
    symmetric NATs, are needed). ``host_addresses``: gather host candidates on these
    local addresses only (e.g. ``("127.0.0.1",)``; default: every interface but
    loopback, aioice's choice). ``trickle``: send ICE candidates as separate
    ``candidate`` messages instead of inside the SDP (what browsers do).
    """

    ice_servers: Sequence[str | Mapping[str, Any]] = ()
    host_addresses: Sequence[str] | None = None
    target_connections: int = 4
    max_connections: int = 6
    ttl: int = 10
    connect_timeout_s: float = 10.0
    offer_wait_s: float = 0.5
    offer_retry_s: float = 1.0
    retry_backoff_s: float = 5.0
    maintain_interval_s: float = 0.5
    links_interval_s: float = 2.0
    reorder_timeout_s: float = 5.0
    unreliable_buffer_bytes: int = 256 * 1024
    trickle: bool = False
    seed: int | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.target_connections <= self.max_connections:
            raise ValueError("need 1 <= target_connections <= max_connections")
        if not 2 <= self.ttl <= 255:
            raise ValueError("ttl must be in [2, 255]")


def ice_servers(servers: Sequence[str | Mapping[str, Any]]) -> list[Any]:
    """aiortc ``RTCIceServer`` objects from URLs or ``{"urls", "username", "credential"}``."""
    from aiortc import RTCIceServer

    out = []
    for s in servers:
        if isinstance(s, str):
            out.append(RTCIceServer(urls=s))
        else:
            out.append(
                RTCIceServer(
                    urls=s["urls"], username=s.get("username"), credential=s.get("credential")
                )
            )
    return out


def _restrict_host_candidates(pc: Any, addresses: Sequence[str]) -> None:
    """Make ``pc`` gather host candidates on ``addresses`` only (before gathering)."""
    try:
        conn = pc.sctp.transport.transport.iceGatherer._connection
        original = conn.get_component_candidates
    except AttributeError:  # another aiortc layout: keep its default
        log.warning("cannot restrict ICE host candidates with this aiortc version")
        return
    allowed = list(addresses)

    async def restricted(component: int, addresses: list[str], timeout: int = 5) -> Any:
        return await original(component=component, addresses=allowed, timeout=timeout)

    conn.get_component_candidates = restricted


def _split_candidates(sdp: str) -> tuple[str, list[dict[str, Any]]]:
    """The SDP without its candidate lines, and those candidates as RTCIceCandidateInit."""
    lines = sdp.split("\r\n")
    keep: list[str] = []
    found: list[dict[str, Any]] = []
    mline, mid, ufrag = -1, None, None
    for line in lines:
        if line.startswith("m="):
            mline += 1
            mid = None
        elif line.startswith("a=mid:"):
            mid = line[len("a=mid:") :]
        elif line.startswith("a=ice-ufrag:"):
            ufrag = line[len("a=ice-ufrag:") :]
        if line.startswith("a=candidate:"):
            found.append({"candidate": line[2:], "sdpMLineIndex": max(mline, 0), "_mid": mid})
            continue
        if line == "a=end-of-candidates":
            continue
        keep.append(line)
    for c in found:
        c["sdpMid"] = c.pop("_mid")
        c["usernameFragment"] = ufrag
    return "\r\n".join(keep), found


async def load_aiortc() -> None:
    """Import aiortc (and PyAV) off the event loop: the first import takes 0.2-1 s, which
    would stall every other task of the client. TransportError ``p2p_unavailable`` when it
    is not installed (the ``p2p`` extra)."""
    if "aiortc" in sys.modules:
        return
    try:
        await asyncio.to_thread(importlib.import_module, "aiortc")
    except ImportError as e:
        raise _error("P2P needs aiortc (pip install 'dclcomms[p2p]')", "p2p_unavailable") from e


# --- signalling ----------------------------------------------------------------------

SignalHandler = Callable[[str | None, bytes], None]


class SignalHub:
    """The three signalling subscriptions of one identity, kept across islands.

    A director makes one when it opens its ``/bus`` session and hands it to every P2P
    adapter it creates: the subscriptions outlive the adapters, and signals that arrive
    while no adapter is attached (an offer that overtook our own ``island_changed``) are
    kept for ``keep_s`` and given to the next adapter in arrival order.
    """

    KINDS = ("offer", "answer", "candidate")

    def __init__(self, bus: MessageBusClient, *, keep_s: float = 5.0, keep_max: int = 256) -> None:
        self.bus = bus
        self.me = bus.address
        self.keep_s = keep_s
        self.keep_max = keep_max
        self._target: dict[str, SignalHandler] | None = None
        self._kept: list[tuple[float, str, str | None, bytes]] = []
        self._offs: list[Callable[[], None]] = []

    async def start(self) -> SignalHub:
        """Subscribe ``<me>.offer|answer|candidate`` (MessageBusError when refused)."""
        try:
            offs = await asyncio.gather(
                *(
                    self.bus.subscribe(f"{self.me}.{kind}", self._handler(kind))
                    for kind in self.KINDS
                ),
                return_exceptions=True,
            )
        except BaseException:
            self.close()
            raise
        self._offs += [o for o in offs if not isinstance(o, BaseException)]
        for o in offs:
            if isinstance(o, BaseException):
                self.close()
                raise o
        return self

    def close(self) -> None:
        for off in self._offs:
            with contextlib.suppress(Exception):
                off()
        self._offs.clear()
        self._target = None
        self._kept.clear()

    @property
    def started(self) -> bool:
        return len(self._offs) == len(self.KINDS) and not self.bus.closed

    def attach(self, handlers: dict[str, SignalHandler]) -> None:
        """Deliver to ``handlers`` (kind -> handler) from now on, kept signals first."""
        self._target = handlers
        now = time.monotonic()
        kept, self._kept = self._kept, []
        for t, kind, sender, payload in kept:
            if now - t <= self.keep_s:
                handlers[kind](sender, payload)

    def detach(self, handlers: dict[str, SignalHandler]) -> None:
        if self._target is handlers:
            self._target = None

    def _handler(self, kind: str) -> SignalHandler:
        def on_signal(sender: str | None, payload: bytes) -> None:
            target = self._target
            if target is not None:
                target[kind](sender, payload)
                return
            self._kept.append((time.monotonic(), kind, sender, payload))
            if len(self._kept) > self.keep_max:
                del self._kept[0]

        return on_signal


# --- the adapter ---------------------------------------------------------------------


@dataclass(eq=False)
class _Link:
    peer: str
    pc: Any
    initiator: bool
    created: float
    reliable: Any = None
    unreliable: Any = None
    opened: float | None = None
    closed: bool = False
    remote_set: bool = False
    offer_sdp: str | None = None  # responder: the offer it answered (repeats are re-answered)
    sent_at: float | None = None  # when our description was last published
    repeats: int = 0  # times our unanswered offer was sent again
    pending_candidates: list[dict[str, Any]] = field(default_factory=list)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def open(self) -> bool:
        return (
            not self.closed
            and self.reliable is not None
            and self.unreliable is not None
            and self.reliable.readyState == "open"
            and self.unreliable.readyState == "open"
        )


class P2PAdapter(Adapter):
    """``p2p:<island>:<peer>``: a WebRTC mesh among the island's members (module docs).

    ``bus``: a connected :class:`~dclcomms.client.msgbus.MessageBusClient` of the same
    identity (the director's); ``members``: the island's members from
    ``island_changed`` (kept current with :meth:`members_changed`).
    """

    protocol = "p2p"

    def __init__(
        self,
        conn_str: str,
        identity: Identity,
        *,
        bus: MessageBusClient,
        members: Iterable[str] = (),
        options: P2POptions | None = None,
        hub: SignalHub | None = None,
    ) -> None:
        super().__init__(conn_str)
        _, params = parse_connection_string(conn_str)
        island, sep, peer = params.rpartition(":")
        me = identity.address.lower()
        if not sep or not island or peer.lower() != me:
            raise _error(
                f"p2p connection string for another peer or malformed: {conn_str[:120]!r}",
                "bad_connection_string",
            )
        self.island_id = island
        self.me = me
        self.identity = identity
        self.bus = bus
        self.hub = hub
        self._own_hub = hub is None
        self.options = options or P2POptions()
        self.members: set[str] = {m.lower() for m in members} - {me}
        rng = random.Random(self.options.seed)
        self.router = MeshRouter(
            me,
            rng.getrandbits(32),
            ttl=self.options.ttl,
            reorder_timeout_s=self.options.reorder_timeout_s,
            settle_s=self.options.links_interval_s,
        )
        self.links: dict[str, _Link] = {}
        self.counters: Counter[str] = Counter()
        self.bytes_sent = 0  # envelopes handed to data channels (ours and relayed)
        self.opened_at = time.monotonic()
        #: when every current member had been heard through the mesh (None: not yet; a
        #: newcomer not heard yet resets it)
        self.mesh_open_at: float | None = None
        #: when the last member was added (island_changed or join_island)
        self.members_changed_at = self.opened_at
        self._backoff: dict[str, float] = {}
        self._wanted_since: dict[str, float] = {}
        self._offs: list[Callable[[], None]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._maintainer: asyncio.Task[None] | None = None
        self._kick = asyncio.Event()
        self._last_links = 0.0
        self._closers: set[asyncio.Task[Any]] = set()
        self._parked: dict[str, tuple[float, bytes]] = {}  # offers from not-yet members
        self._expire_handle: asyncio.TimerHandle | None = None
        self._hello_handle: asyncio.TimerHandle | None = None
        self._mesh_waiters: list[asyncio.Future[None]] = []
        self._handlers: dict[str, SignalHandler] | None = None

    # --- ADR-81 -----------------------------------------------------------------------

    async def connect(self) -> None:
        await load_aiortc()
        if self.bus.closed:
            raise _error("the /bus session for P2P signalling is closed", "bus_unavailable")
        try:
            if self.hub is None:
                self.hub = await SignalHub(self.bus).start()
            elif not self.hub.started:
                await self.hub.start()
        except Exception as e:
            await self._close()
            raise _error(f"cannot subscribe the signalling topics: {e}", "connect_failed") from e
        handlers: dict[str, SignalHandler] = {
            "offer": self._on_offer,
            "answer": self._on_answer,
            "candidate": self._on_candidate,
        }
        self._handlers = handlers
        self.hub.attach(handlers)
        self._offs.append(lambda: self.hub.detach(handlers) if self.hub is not None else None)
        self._offs.append(self.bus.on_error(self._on_bus_error))
        self.connected = True
        self._maintainer = asyncio.create_task(self._maintain(), name=f"p2p-mesh {self.me[:10]}")

    async def send(self, data: bytes, *, reliable: bool) -> None:
        if not self.connected or self._closing:
            raise _error("p2p adapter is not connected", "not_connected")
        packet = self.router.originate(bytes(data), reliable=reliable)
        sent = self._send_to(packet, [p for p, link in self.links.items() if link.open], reliable)
        if not sent and self.members:
            self.counters["unsent"] += 1
        self.messages_sent += 1

    def use_bus(self, bus: MessageBusClient, hub: SignalHub) -> None:
        """Signal through another ``/bus`` session from now on (the director reopened it);
        open connections are not affected."""
        if self._closing:
            return
        old = self._handlers
        if self.hub is not None and old is not None:
            self.hub.detach(old)
            if self._own_hub:
                self.hub.close()
        self.bus, self.hub, self._own_hub = bus, hub, False
        if old is not None:
            hub.attach(old)
        self._offs.append(bus.on_error(self._on_bus_error))
        self._kick.set()

    def members_changed(self, members: Iterable[str]) -> None:
        """The island's members now (``island_changed`` + ``join_island``/``left_island``)."""
        now = {m.lower() for m in members} - {self.me}
        gone, new = self.members - now, now - self.members
        self.members = now
        if new:
            self.members_changed_at = time.monotonic()
            if any(self.router.heard(m) is None for m in new):
                self.mesh_open_at = None  # open again once the newcomers are heard
        for peer in sorted(new & set(self._parked)):
            _, offer = self._parked.pop(peer)
            self._on_offer(peer, offer)
        for peer in sorted(gone):
            self._drop(peer, reason="left")
            self.router.forget(peer)
            self._backoff.pop(peer, None)
            self._wanted_since.pop(peer, None)
            if not self._closing:
                self.events.emit(PEER_DISCONNECTED, PeerDisconnected(peer))
        if self.mesh_open_at is None:
            self._check_mesh()
        self._kick.set()

    async def _close(self) -> None:
        self.connected = False
        for off in self._offs:
            with contextlib.suppress(Exception):
                off()
        self._offs.clear()
        if self._own_hub and self.hub is not None:
            self.hub.close()
        for handle in (self._expire_handle, self._hello_handle):
            if handle is not None:
                handle.cancel()
        links, self.links = list(self.links.values()), {}
        for link in links:
            link.closed = True  # a negotiation step under way returns after its await
        me = asyncio.current_task()
        if self._maintainer is not None and self._maintainer is not me:
            self._maintainer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._maintainer
        # Negotiation steps end rather than being cancelled: one cancelled while it gathers
        # ICE candidates leaves the UDP sockets it had opened to nobody (aioice keeps them
        # in the gathering's locals until it ends). They end within aioice's timeouts.
        steps = [t for t in self._tasks if t is not me]
        if steps:
            _, late = await asyncio.wait(steps, timeout=NEGOTIATION_END_S)
            for t in late:
                t.cancel()
            for t in late:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
        closing = [self._close_pc(link) for link in links] + list(self._closers)
        await asyncio.gather(*closing, return_exceptions=True)
        for fut in self._mesh_waiters:
            if not fut.done():
                fut.cancel()

    # --- state for tests, bots and benches --------------------------------------------

    @property
    def open_links(self) -> list[str]:
        return sorted(p for p, link in self.links.items() if link.open)

    @property
    def mesh_open(self) -> bool:
        """Every current member has been heard through the mesh."""
        return self.mesh_open_at is not None

    async def wait_mesh_open(self, timeout: float) -> float:
        """Seconds from the last member change (or ``connect``) until every member was
        heard; TimeoutError after ``timeout``."""
        if self.mesh_open_at is None:
            fut = asyncio.get_running_loop().create_future()
            self._mesh_waiters.append(fut)
            await asyncio.wait_for(fut, timeout)
        assert self.mesh_open_at is not None
        return max(self.mesh_open_at - self.members_changed_at, 0.0)

    def reachable(self) -> set[str]:
        """Members heard recently (within three ``links`` periods)."""
        now = time.monotonic()
        horizon = 3 * self.options.links_interval_s
        return {m for m in self.members if (t := self.router.heard(m)) and now - t <= horizon}

    def stats(self) -> dict[str, Any]:
        return {
            "island": self.island_id,
            "members": len(self.members),
            "links": len(self.open_links),
            "mesh_open_s": None
            if self.mesh_open_at is None
            else round(max(self.mesh_open_at - self.members_changed_at, 0.0), 3),
            "bytes_sent": self.bytes_sent,
            **dict(self.counters),
            **{f"router_{k}": v for k, v in self.router.counters.items()},
        }

    def transport_bytes_sent(self) -> int:
        """DTLS bytes written by every open connection (SCTP and DTLS overhead included;
        UDP/IP headers not). Uses aiortc internals; 0 where they are not available."""
        total = 0
        for link in self.links.values():
            try:
                report = link.pc.sctp.transport._get_stats()
            except AttributeError:
                continue
            total += sum(int(getattr(s, "bytesSent", 0)) for s in report.values())
        return total

    # --- sending ----------------------------------------------------------------------

    def _send_to(self, packet: bytes, peers: Iterable[str], reliable: bool) -> int:
        n = 0
        for peer in peers:
            link = self.links.get(peer)
            if link is None or not link.open:
                continue
            channel = link.reliable if reliable else link.unreliable
            if not reliable and channel.bufferedAmount > self.options.unreliable_buffer_bytes:
                self.counters["unreliable_dropped"] += 1
                continue
            try:
                channel.send(packet)
            except Exception:  # closed under us (InvalidStateError)
                self.counters["send_failed"] += 1
                continue
            self.bytes_sent += len(packet)
            n += 1
        return n

    def _flood_links(self) -> None:
        packet = self.router.set_own_links(self.open_links)
        self._send_to(packet, self.open_links, True)
        self._last_links = time.monotonic()

    # --- receiving --------------------------------------------------------------------

    def _on_channel_message(self, link: _Link, data: Any) -> None:
        if self._closing or link.closed or not isinstance(data, bytes | bytearray):
            return
        try:
            deliveries, relays = self.router.receive(bytes(data), link.peer, self.open_links)
        except ValueError as e:
            self.counters["bad_packets"] += 1
            self._protocol_error(_error(f"bad packet from {link.peer}: {e}", "protocol_error"))
            return
        self._apply(deliveries, relays)
        if self.router.new_sources:
            # a member we never heard (a newcomer): let it hear us soon, not in a period
            self.router.new_sources.clear()
            if self._hello_handle is None:
                self._hello_handle = asyncio.get_running_loop().call_later(0.05, self._hello)
        if self.router.streams and any(s.buffer for s in self.router.streams.values()):
            self._schedule_expire()

    def _hello(self) -> None:
        self._hello_handle = None
        if not self._closing:
            self._flood_links()

    def _apply(
        self, deliveries: list[Delivery], relays: list[tuple[bytes, list[str], bool]]
    ) -> None:
        for packet, peers, reliable in relays:
            self._send_to(packet, peers, reliable)
        for d in deliveries:
            if d.src not in self.members:  # not (or no longer) on our island
                self.counters["foreign_packets"] += 1
                continue
            self.messages_received += 1
            self.events.emit(MESSAGE, Message(d.src, d.payload))
        if self.mesh_open_at is None:
            self._check_mesh()

    def _schedule_expire(self) -> None:
        if self._expire_handle is not None or self._closing:
            return

        def run() -> None:
            self._expire_handle = None
            self._apply(*self.router.expire())
            if any(s.buffer for s in self.router.streams.values()):
                self._schedule_expire()

        loop = asyncio.get_running_loop()
        self._expire_handle = loop.call_later(self.options.reorder_timeout_s / 2, run)

    def _check_mesh(self) -> None:
        if self.members and all(self.router.heard(m) is not None for m in self.members):
            self.mesh_open_at = time.monotonic()
            for fut in self._mesh_waiters:
                if not fut.done():
                    fut.set_result(None)
            self._mesh_waiters.clear()

    # --- mesh maintenance -------------------------------------------------------------

    async def _maintain(self) -> None:
        while not self._closing:
            try:
                self._maintain_once()
            except Exception:
                log.exception("p2p mesh maintenance failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), self.options.maintain_interval_s)
            self._kick.clear()

    def wanted(self) -> list[str]:
        """The neighbours this peer wants now (ring order, peers in back-off skipped)."""
        now = time.monotonic()
        candidates = [m for m in self.members if self._backoff.get(m, 0.0) <= now]
        return ring_neighbours(self.me, candidates, self.options.target_connections)

    def _maintain_once(self) -> None:
        now = time.monotonic()
        opt = self.options
        for peer, link in list(self.links.items()):
            if peer not in self.members:
                self._drop(peer, reason="left")
            elif link.opened is None and now - link.created > opt.connect_timeout_s:
                self.counters["connect_timeouts"] += 1
                self._drop(peer, reason="timeout", backoff=True)
        wanted = self.wanted()
        for peer in list(self._wanted_since):
            if peer not in wanted:
                del self._wanted_since[peer]
        for peer in wanted:
            since = self._wanted_since.setdefault(peer, now)
            if peer in self.links:
                continue
            if self.me > peer or now - since >= opt.offer_wait_s:
                self._start(peer)
        for link in list(self.links.values()):  # offers not answered yet: say them again
            if (
                link.initiator
                and not link.remote_set
                and link.sent_at is not None
                and now - link.sent_at >= opt.offer_retry_s * 2**link.repeats  # 1, 2, 4 s...
            ):
                link.repeats += 1
                self.counters["offers_repeated"] += 1
                self._publish_description(link, "offer")
        extra = len(self.links) - opt.max_connections
        if extra > 0:  # over the limit: close unwanted ones, oldest first
            unwanted = sorted(
                (link.created, p) for p, link in self.links.items() if p not in wanted
            )
            for _, p in unwanted[:extra]:
                self._drop(p, reason="over_max")
        for peer, (t, _) in list(self._parked.items()):
            if now - t > opt.connect_timeout_s:
                del self._parked[peer]
        if now - self._last_links >= opt.links_interval_s:
            self._flood_links()

    def _drop(self, peer: str, *, reason: str, backoff: bool = False) -> None:
        link = self.links.pop(peer, None)
        if link is None:
            return
        link.closed = True
        self.counters[f"closed_{reason}"] += 1
        if backoff:
            self._backoff[peer] = time.monotonic() + self.options.retry_backoff_s
        closer = asyncio.ensure_future(self._close_pc(link))
        self._closers.add(closer)
        closer.add_done_callback(self._closers.discard)
        if link.opened is not None:
            self._flood_links()  # at once: relays must not count on this connection

    @staticmethod
    async def _close_pc(link: _Link) -> None:
        """Closes ``link``'s connection once no negotiation step is under way on it. aioice
        adds the UDP sockets of a candidate gathering to its connection only when the
        gathering ends: a close in the middle (a member leaving while we gather for it)
        closed none of them, and they stayed open until the garbage collector found them
        ("unclosed transport") after their event loop had ended."""
        async with link.lock:
            await link.pc.close()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- WebRTC -----------------------------------------------------------------------

    def _new_link(self, peer: str, *, initiator: bool) -> _Link:
        from aiortc import RTCConfiguration, RTCPeerConnection

        # an empty list, not None: aiortc's default would be a public STUN server
        pc = RTCPeerConnection(RTCConfiguration(iceServers=ice_servers(self.options.ice_servers)))
        link = _Link(peer, pc, initiator, time.monotonic())

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc.connectionState in ("failed", "closed") and self.links.get(peer) is link:
                self.counters[f"connection_{pc.connectionState}"] += 1
                self._drop(peer, reason=pc.connectionState, backoff=link.opened is None)
                self._kick.set()

        @pc.on("datachannel")
        def on_datachannel(channel: Any) -> None:
            self._attach(link, channel)

        return link

    def _attach(self, link: _Link, channel: Any) -> None:
        if channel.label == "data":
            link.reliable = channel
        elif channel.label == "data-unreliable":
            link.unreliable = channel
        else:
            self.counters["unknown_channels"] += 1
            return

        @channel.on("message")  # type: ignore[untyped-decorator]
        def on_message(data: Any) -> None:
            self._on_channel_message(link, data)

        @channel.on("open")  # type: ignore[untyped-decorator]
        def on_open() -> None:
            self._channel_opened(link)

        @channel.on("close")  # type: ignore[untyped-decorator]
        def on_close() -> None:
            if self.links.get(link.peer) is link:
                self._drop(link.peer, reason="channel_closed")
                self._kick.set()

        if channel.readyState == "open":
            self._channel_opened(link)

    def _channel_opened(self, link: _Link) -> None:
        if link.open and link.opened is None and self.links.get(link.peer) is link:
            link.opened = time.monotonic()
            self.counters["links_opened"] += 1
            self._backoff.pop(link.peer, None)
            self._flood_links()  # tell the mesh at once (and send the newcomer our links)

    def _start(self, peer: str) -> None:
        link = self._new_link(peer, initiator=True)
        self.links[peer] = link
        self.counters["offers"] += 1
        self._attach(link, link.pc.createDataChannel("data"))
        self._attach(
            link, link.pc.createDataChannel("data-unreliable", ordered=False, maxRetransmits=0)
        )
        self._spawn(self._offer(link))

    async def _offer(self, link: _Link) -> None:
        async with link.lock:
            if link.closed:  # dropped before its turn: nothing to gather
                return
            try:
                if self.options.host_addresses is not None:
                    _restrict_host_candidates(link.pc, self.options.host_addresses)
                offer = await link.pc.createOffer()
                await link.pc.setLocalDescription(offer)
            except Exception as e:
                self._link_failed(link, e)
                return
            if link.closed:
                return
            self._publish_description(link, "offer")

    def _publish_description(self, link: _Link, kind: str) -> None:
        link.sent_at = time.monotonic()
        desc = link.pc.localDescription
        sdp: str = desc.sdp
        candidates: list[dict[str, Any]] = []
        if self.options.trickle:
            sdp, candidates = _split_candidates(sdp)
        self._signal(link.peer, kind, {"type": desc.type, "sdp": sdp})
        for c in candidates:
            self._signal(link.peer, "candidate", {"candidate": c, "initiator": link.initiator})
        if self.options.trickle:  # end of candidates
            end = {"candidate": {"candidate": ""}, "initiator": link.initiator}
            self._signal(link.peer, "candidate", end)

    def _signal(self, peer: str, kind: str, body: dict[str, Any]) -> None:
        try:
            self.bus.publish(f"{peer}.{kind}", json.dumps(body, separators=(",", ":")).encode())
        except Exception as e:
            self.counters["signal_failed"] += 1
            log.warning("cannot signal %s: %s", peer, e)
            return
        self.counters[f"sent_{kind}"] += 1

    def _link_failed(self, link: _Link, error: BaseException) -> None:
        self.counters["negotiation_failed"] += 1
        log.warning("P2P negotiation with %s failed: %s", link.peer, error)
        if self.links.get(link.peer) is link:
            self._drop(link.peer, reason="failed", backoff=True)

    # --- signalling in ----------------------------------------------------------------

    def _parse(self, sender: str | None, payload: bytes, kind: str) -> dict[str, Any] | None:
        if self._closing or sender is None:
            return None
        if sender not in self.members:
            self.counters[f"{kind}_from_stranger"] += 1
            if kind == "offer":  # its join_island may still be on the way: keep it a while
                self._parked[sender] = (time.monotonic(), payload)
            return None
        try:
            body = json.loads(payload)
        except ValueError:
            self.counters["bad_signals"] += 1
            return None
        return body if isinstance(body, dict) else None

    def _on_offer(self, sender: str | None, payload: bytes) -> None:
        body = self._parse(sender, payload, "offer")
        if body is None or sender is None:
            return
        self.counters["offers_received"] += 1
        current = self.links.get(sender)
        if current is not None and not current.initiator and current.offer_sdp == body.get("sdp"):
            # the same offer again (ours got lost, or theirs crossed our answer): answer again
            self.counters["offers_repeated_received"] += 1
            if current.sent_at is not None and not current.closed:
                self._publish_description(current, "answer")
            return
        if current is not None:
            if current.initiator and current.opened is None:
                if self.me > sender:  # glare: the higher address keeps its own offer
                    self.counters["glare_kept"] += 1
                    if current.sent_at is not None:  # theirs may mean ours was lost: again
                        self._publish_description(current, "offer")
                    return
                self.counters["glare_yielded"] += 1  # the lower address drops its attempt
            self._drop(sender, reason="replaced")
        elif len(self.links) >= self.options.max_connections:
            wanted = self.wanted()
            if sender not in wanted:
                self.counters["offers_refused_full"] += 1
                return
            unwanted = sorted((ln.created, p) for p, ln in self.links.items() if p not in wanted)
            if not unwanted:
                self.counters["offers_refused_full"] += 1
                return
            self._drop(unwanted[0][1], reason="over_max")
        link = self._new_link(sender, initiator=False)
        link.offer_sdp = body.get("sdp")
        self.links[sender] = link
        self._spawn(self._answer(link, body))

    async def _answer(self, link: _Link, offer: dict[str, Any]) -> None:
        from aiortc import RTCSessionDescription

        async with link.lock:
            if link.closed:
                return
            try:
                await link.pc.setRemoteDescription(
                    RTCSessionDescription(sdp=str(offer.get("sdp", "")), type="offer")
                )
                link.remote_set = True
                await self._add_pending(link)
                if self.options.host_addresses is not None:
                    _restrict_host_candidates(link.pc, self.options.host_addresses)
                answer = await link.pc.createAnswer()
                await link.pc.setLocalDescription(answer)
            except Exception as e:
                self._link_failed(link, e)
                return
            if link.closed:
                return
            self._publish_description(link, "answer")

    def _on_answer(self, sender: str | None, payload: bytes) -> None:
        body = self._parse(sender, payload, "answer")
        if body is None or sender is None:
            return
        link = self.links.get(sender)
        if link is None or not link.initiator or link.remote_set:
            self.counters["stale_answers"] += 1
            return
        self._spawn(self._accept_answer(link, body))

    async def _accept_answer(self, link: _Link, answer: dict[str, Any]) -> None:
        from aiortc import RTCSessionDescription

        async with link.lock:
            if link.closed or link.remote_set:
                return
            try:
                await link.pc.setRemoteDescription(
                    RTCSessionDescription(sdp=str(answer.get("sdp", "")), type="answer")
                )
                link.remote_set = True
                await self._add_pending(link)
            except Exception as e:
                self._link_failed(link, e)

    def _on_candidate(self, sender: str | None, payload: bytes) -> None:
        body = self._parse(sender, payload, "candidate")
        if body is None or sender is None:
            return
        link = self.links.get(sender)
        # "initiator" is the sender's role: the candidate belongs to our opposite-role link
        if link is None or link.initiator == bool(body.get("initiator")):
            self.counters["stale_candidates"] += 1
            return
        cand = body.get("candidate")
        if not isinstance(cand, dict):
            self.counters["bad_signals"] += 1
            return
        link.pending_candidates.append(cand)
        if link.remote_set:
            self._spawn(self._add_candidates(link))

    async def _add_candidates(self, link: _Link) -> None:
        async with link.lock:
            if not link.closed:
                await self._add_pending(link)

    async def _add_pending(self, link: _Link) -> None:
        from aiortc.sdp import candidate_from_sdp

        pending, link.pending_candidates = link.pending_candidates, []
        for cand in pending:
            line = str(cand.get("candidate", ""))
            try:
                if not line:
                    await link.pc.addIceCandidate(None)  # end of candidates
                    continue
                c = candidate_from_sdp(line.split(":", 1)[1])
                c.sdpMid = cand.get("sdpMid")
                c.sdpMLineIndex = cand.get("sdpMLineIndex")
                await link.pc.addIceCandidate(c)
                self.counters["candidates_added"] += 1
            except Exception as e:
                self.counters["bad_candidates"] += 1
                log.warning("cannot add an ICE candidate from %s: %s", link.peer, e)

    def _on_bus_error(self, code: str, topic: str | None, message: str) -> None:
        if topic is None:
            return
        peer, _, kind = topic.partition(".")
        if kind not in ("offer", "answer", "candidate"):
            return
        self.counters[f"signal_refused_{code}"] += 1
        link = self.links.get(peer)
        if link is not None and link.opened is None and kind != "candidate":
            self._drop(peer, reason="refused", backoff=True)


__all__ = [
    "F_LINKS",
    "F_RELIABLE",
    "HEADER_BYTES",
    "Delivery",
    "Envelope",
    "MeshRouter",
    "P2PAdapter",
    "P2POptions",
    "SignalHub",
    "bfs_parents",
    "decode_envelope",
    "encode_envelope",
    "ice_servers",
    "load_aiortc",
    "ring_neighbours",
]
