"""Transport-node registry and the policy that balances islands across nodes.

Standalone ``rooms`` nodes announce themselves on ``dclcomms.transport.<node>.status``
(archipelago.md 6.3) with JSON ``{"nodeId","kind","url","maxIslandSize",
"availableSeats"(-1 = unlimited),"usersCount","rooms","ts"}``. A
:class:`NodeRegistry` keeps the latest announcement of every node and forgets a
node silent for ``transport_node_missed`` announcement intervals. :class:`NodeBalancedWsRooms`
places each new island on the least-loaded live ``ws-room`` node with seats and,
when that node disappears, moves the island to a live one: it reports the island
through :meth:`~dclcomms.policy.RealmPolicy.islands_to_recheck`, the core asks it
again and its transport-switch path re-issues ``island_changed`` (same island id,
new ``conn_str``) to every member.

Only this module's pure parts are here; the NATS feed lives in the core service
(:mod:`dclcomms.nats.processes`).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from dclcomms.errors import SubjectError
from dclcomms.policy import IslandView, RealmPolicy, Transport, Transports, WsRoomTransport

NODE_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,128}")
STATUS_PREFIX = "dclcomms.transport."


def check_node_id(token: str) -> str:
    """``token`` if it is a valid node id (as island ids), else ``SubjectError(bad_node_id)``."""
    if not isinstance(token, str) or NODE_ID_RE.fullmatch(token) is None:
        raise SubjectError(f"not a node id ([A-Za-z0-9_-]{{1,128}}): {token!r}", code="bad_node_id")
    return token


def status_subject(node_id: str) -> str:
    """``dclcomms.transport.<node>.status`` (the node id validated)."""
    return f"{STATUS_PREFIX}{check_node_id(node_id)}.status"


@dataclass(frozen=True)
class NodeStatus:
    """One announcement of a transport node."""

    node_id: str
    kind: str
    url: str
    max_island_size: int
    available_seats: int  # -1 = unlimited
    users_count: int
    rooms: int
    ts: int  # ms since the epoch, as sent

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "nodeId": self.node_id,
                "kind": self.kind,
                "url": self.url,
                "maxIslandSize": self.max_island_size,
                "availableSeats": self.available_seats,
                "usersCount": self.users_count,
                "rooms": self.rooms,
                "ts": self.ts,
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> NodeStatus:
        """Parse and validate; ``ValueError`` (or ``SubjectError`` for the id) if malformed."""
        try:
            d = json.loads(data)
        except (ValueError, UnicodeDecodeError) as e:
            raise ValueError(f"node status is not JSON: {e}") from None
        if not isinstance(d, dict):
            raise ValueError("node status is not a JSON object")

        def integer(key: str, minimum: int) -> int:
            v = d.get(key)
            if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
                raise ValueError(f"node status {key!r} must be an integer >= {minimum}: {v!r}")
            return v

        def text(key: str) -> str:
            v = d.get(key)
            if not isinstance(v, str) or not v:
                raise ValueError(f"node status {key!r} must be a non-empty string: {v!r}")
            return v

        return cls(
            node_id=check_node_id(text("nodeId")),
            kind=text("kind"),
            url=text("url"),
            max_island_size=integer("maxIslandSize", 1),
            available_seats=integer("availableSeats", -1),
            users_count=integer("usersCount", 0),
            rooms=integer("rooms", 0),
            ts=integer("ts", 0),
        )


class NodeRegistry:
    """Latest announcement per node; a node silent ``transport_node_missed *
    transport_node_interval_s`` seconds (the settings of the same names) is removed.

    Not thread-safe: feed and query it from one event loop. ``clock`` returns seconds
    (monotonic by default; tests inject their own).
    """

    def __init__(
        self,
        *,
        transport_node_interval_s: float = 10.0,
        transport_node_missed: int = 3,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if transport_node_interval_s <= 0 or transport_node_missed < 1:
            raise ValueError(
                "NodeRegistry needs transport_node_interval_s > 0 and transport_node_missed >= 1"
            )
        self.timeout_s = transport_node_interval_s * transport_node_missed
        self._clock = clock
        self._nodes: dict[str, tuple[NodeStatus, float]] = {}

    def update(self, status: NodeStatus) -> bool:
        """Record an announcement; True if the node was not known."""
        new = status.node_id not in self._nodes
        self._nodes[status.node_id] = (status, self._clock())
        return new

    def expire(self) -> list[str]:
        """Remove and return (sorted) the nodes silent longer than the timeout."""
        now = self._clock()
        gone = sorted(n for n, (_, seen) in self._nodes.items() if now - seen > self.timeout_s)
        for n in gone:
            del self._nodes[n]
        return gone

    def live(self) -> list[NodeStatus]:
        """The nodes not (yet) expired, by id."""
        return [self._nodes[n][0] for n in sorted(self._nodes)]

    def get(self, node_id: str) -> NodeStatus | None:
        entry = self._nodes.get(node_id)
        return entry[0] if entry is not None else None

    def __len__(self) -> int:
        return len(self._nodes)


class NodeBalancedWsRooms(RealmPolicy):
    """Islands on announced ``ws-room`` nodes: least loaded with seats, moved off dead nodes.

    Load of a node = max(its announced ``usersCount``, the peers of the islands this
    policy placed on it), ties by node id. A node is eligible when it has seats
    (``availableSeats`` -1 or > 0) and its ``maxIslandSize`` admits the island.
    Without an eligible node the island gets the realm's default transport. Tokens
    are signed with the realm's ws-room secret (shared with the nodes).
    """

    def __init__(self, transports: Transports, *, registry: NodeRegistry | None = None) -> None:
        super().__init__(transports)
        self.registry = registry if registry is not None else NodeRegistry()
        self._base = transports.ws_room
        self._max_island_size = transports.ws_room.max_island_size
        self._transports: dict[str, WsRoomTransport] = {}  # node id -> transport
        self.island_node: dict[str, str] = {}
        self._island_peers: dict[str, int] = {}
        self._recheck: dict[str, None] = {}

    def on_status(self, status: NodeStatus) -> None:
        """Feed one announcement (non ``ws-room`` kinds are ignored)."""
        if status.kind != "ws-room":
            return
        self.registry.update(status)
        known = self._transports.get(status.node_id)
        size = min(status.max_island_size, self._max_island_size)
        if (
            known is None
            or known.base_url != status.url.rstrip("/")
            or known.max_island_size != size
        ):
            t = self._base.with_base(status.url, max_island_size=size)
            self._transports[status.node_id] = t
            if known is not None:  # new address: its islands get fresh strings
                self._recheck.update(
                    (i, None) for i, n in self.island_node.items() if n == status.node_id
                )

    def expire(self) -> list[str]:
        """Drop silent nodes; their islands are rechecked on the next tick."""
        gone = self.registry.expire()
        for n in gone:
            self._transports.pop(n, None)
            self._recheck.update((i, None) for i, node in self.island_node.items() if node == n)
        return gone

    def islands_to_recheck(self) -> Iterable[str]:
        self.expire()
        out, self._recheck = list(self._recheck), {}
        return out

    def load(self, node_id: str) -> int:
        placed = sum(
            self._island_peers.get(i, 0) for i, n in self.island_node.items() if n == node_id
        )
        status = self.registry.get(node_id)
        return max(placed, status.users_count if status is not None else 0)

    def transport_for(self, island: IslandView) -> Transport:
        self.expire()
        n_peers = len(island.peers)
        self._island_peers[island.id] = n_peers
        current = self.island_node.get(island.id)
        if current is not None and current in self._transports:
            t = self._transports[current]
            if n_peers <= t.max_island_size:
                return t
        candidates = [
            s
            for s in self.registry.live()
            if s.node_id in self._transports
            and s.available_seats != 0
            and n_peers <= self._transports[s.node_id].max_island_size
        ]
        if not candidates:
            self.island_node.pop(island.id, None)
            return self.transports.default
        best = min(candidates, key=lambda s: (self.load(s.node_id), s.node_id))
        self.island_node[island.id] = best.node_id
        return self._transports[best.node_id]

    def island_removed(self, island_id: str) -> None:
        self.island_node.pop(island_id, None)
        self._island_peers.pop(island_id, None)
        self._recheck.pop(island_id, None)


__all__ = [
    "NODE_ID_RE",
    "NodeBalancedWsRooms",
    "NodeRegistry",
    "NodeStatus",
    "check_node_id",
    "status_subject",
]
