"""The live island map: ``GET /map`` and its feed (docs/map.md).

:class:`MapFeed` turns what the stats service already holds (peer positions
from heartbeats, ``engine.islands`` every tick) into one compact JSON frame per
core tick: a *delta* (peers added, removed or moved by at least one quantum,
islands whose membership, transport or shape changed, the counters) and, only
when a page needs one or the replay ring is due one, a *key* frame (the whole
map). Nothing runs per heartbeat: the work happens on ``engine.islands``.

Frames go to a :class:`FeedSink` (the C++ server's ``/map/feed`` WebSocket
pages: bounded per page, a slow page skips forward to the next key frame) and
into a bounded ring of recent ticks that ``GET /map/replay`` serves.

Frame format (JSON, one object per frame)::

    {"k": 1 (key) | 0 (delta), "seq": tick number, "ts": Unix ms, "q": metres per unit,
     "peers" (key) | "add" (delta): [slot, "0xaddr", x, z, ...] flat,
     "del": [slot, ...],                                      (delta)
     "mov": [slot step, dx, dz, ...] flat, by slot: the slot is the previous one plus
            the step (the first: 0 plus it), the position moves by (dx, dz)   (delta)
     "isl": [island, ...] (key: all; delta: new, or members or transport changed),
     "geo": [island id, x, z, r, ...] flat (delta: only the circle moved),
     "gone": [island id, ...],
     "counters": {"peers", "islands", "handshakes_per_s", "island_changes_per_s"},
     "hot": [[parcel x, parcel y, peers], ...],
     "scenes": [[name, base x, base y, peers], ...]}   (with a content server)
    island = {"id", "tr": "livekit" | "ws-room" | "p2p" | "fixed" | "", "x", "z", "r",
              "max", "m": [slot, ...], "since": Unix ms first seen,
              "ch": [[Unix ms, "+" | "-", "0xaddr"], ...] (key: the recent ones; delta: new)}

Positions are in quanta of ``q`` metres (x east, z north); island circles in
multiples of ``ISLAND_GRID`` quanta (a circle is re-sent when it crosses that grid). A
peer's slot is a small integer kept while it stays and reused after it leaves.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from itertools import repeat
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from dclcomms.clock import now_ms
from dclcomms.http import HttpError, Request, Response, Router, json_response
from dclcomms.metrics import Registry
from dclcomms.pubsub import IslandChanged, IslandStatus, PubSub, Subscription
from dclcomms.stats import PARCEL_SIZE, Stats

ISLAND_GRID = 4  # island centres and radii: multiples of 4 quanta
log = logging.getLogger("dclcomms.livemap")

RECENT_CHANGES = 10
SCENES_EVERY = 15  # ticks between hot-scene lookups (with a content server)
SWEEP_MS = 5000  # the stats service forgets silent peers at most this often for the map
HOT_PARCELS = 10


def transport_of(conn_str: str) -> str:
    """The transport family of a connection string (the island's colour on the map)."""
    for prefix, name in (("livekit:", "livekit"), ("ws-room:", "ws-room"), ("p2p:", "p2p")):
        if conn_str.startswith(prefix):
            return name
    return "fixed"


class FeedSink(Protocol):
    """Where live frames go (``dclcomms.ws.Server`` is one)."""

    def publish_feed(self, delta: str, key: str = "") -> None: ...

    def feed_wants_key(self) -> bool: ...


@dataclass
class _Island:
    id: str
    since: int
    members: tuple[str, ...] = ()
    x: int = 0
    z: int = 0
    r: int = 0
    max: int = 0
    tr: str = ""
    changes: deque[tuple[int, str, str]] | None = None


@dataclass(frozen=True)
class RingEntry:
    seq: int
    ts: int
    key: bool
    frame: str


class MapFeed:
    """Builds the live map's frames at each ``engine.islands`` and keeps a ring of them.

    ``ring_ticks``: ticks kept for replay (a key frame every ``key_every`` of them);
    ``quantum``: position resolution in metres.
    """

    def __init__(
        self,
        stats: Stats | None,
        pubsub: PubSub | None,
        sink: FeedSink | None = None,
        *,
        ring_ticks: int = 300,
        key_every: int = 30,
        quantum: float = 1.0,
        clock_ms: Callable[[], int] = now_ms,
        registry: Registry | None = None,
    ) -> None:
        if ring_ticks < 1 or key_every < 1 or not quantum > 0:
            raise ValueError("ring_ticks, key_every and quantum must be positive")
        self.stats = stats
        self.sink = sink
        self.key_every = key_every
        self.quantum = quantum
        self._clock = clock_ms
        self.ring: deque[RingEntry] = deque(maxlen=ring_ticks)
        self.seq = 0
        self.last_build_s = 0.0
        self.bytes_built = 0
        self.ring_bytes = 0
        self._slots: dict[str, int] = {}  # address -> slot
        self._free: list[int] = []
        # by slot: address, alive, quantised x and z (numpy: one tick is a few vector ops)
        self._addr_of: list[str | None] = []
        self._alive = np.zeros(0, dtype=np.bool_)
        self._qx = np.zeros(0, dtype=np.int64)
        self._qz = np.zeros(0, dtype=np.int64)
        self._islands: dict[str, _Island] = {}
        self._transport: dict[str, str] = {}
        self._handshakes = 0
        self._changes = 0
        self._last_ts: int | None = None
        self._last_key = ""
        self._last_sweep_ms = -SWEEP_MS
        # Hot scenes by name (with a content server): [[name, base x, base y, users], ...]
        self.scenes: list[list[Any]] = []
        self._scenes_task: asyncio.Task[None] | None = None
        if registry is not None:
            registry.gauge(
                "dcl_map_frame_build_seconds",
                "wall time of the last tick's live-map frames (delta, key when due)",
                fn=lambda: self.last_build_s,
            )
            registry.gauge(
                "dcl_map_delta_bytes",
                "bytes of the last live-map delta frame",
                fn=lambda: self.bytes_built,
            )
            registry.gauge(
                "dcl_map_replay_bytes",
                "bytes held by the live map's replay ring",
                fn=lambda: self.ring_bytes,
            )
        self._subs: list[Subscription] = []
        if pubsub is not None:  # else driven by push() (the simulator's recorder)
            self._subs = [
                pubsub.subscribe("engine.islands", self._on_islands),
                pubsub.subscribe("engine.peer.*.island_changed", self._on_island_changed),
                pubsub.subscribe("peer.*.connect", self._on_connect),
            ]

    def close(self) -> None:
        for s in self._subs:
            s.unsubscribe()
        self._subs.clear()
        if self._scenes_task is not None:
            self._scenes_task.cancel()

    # --- inputs ---------------------------------------------------------------------

    def _on_island_changed(self, _subject: str, msg: IslandChanged) -> None:
        self._changes += 1
        self._transport[msg.island_id] = transport_of(msg.conn_str)

    def _on_connect(self, _subject: str, _payload: object) -> None:
        self._handshakes += 1

    def _on_islands(self, _subject: str, status: IslandStatus) -> None:
        # engine.islands is the core tick's last message: build the frames right after the
        # tick (on the running loop), not inside it, so they never lengthen the tick.
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.tick(status)
        else:
            loop.call_soon(self.tick, status)

    # --- one tick -------------------------------------------------------------------

    def tick(self, status: IslandStatus | None = None) -> str:
        """This tick from the stats service's peers and ``status`` (default: its islands)."""
        stats = self.stats
        if stats is None:
            raise ValueError("a MapFeed without stats is driven by push()")
        now = self._clock()
        if now - self._last_sweep_ms >= SWEEP_MS:  # silent peers leave the map too
            self._last_sweep_ms = now
            stats.sweep()
        if stats.content_url and self.seq % SCENES_EVERY == 0:
            self._refresh_scenes()
        addresses, xyz = stats.positions()
        return self.push(stats.islands if status is None else status, addresses, xyz[:, ::2])

    def push(
        self,
        status: IslandStatus,
        addresses: Sequence[str],
        xz: NDArray[Any],
        *,
        now: int | None = None,
        transports: Mapping[str, str] | None = None,
    ) -> str:
        """Builds one tick's frames from every peer (``addresses``, their positions ``xz``:
        (n, 2) x and z) and the islands, publishes them, records them; returns the delta.
        ``transports``: island id -> transport name, besides those from ``island_changed``."""
        t0 = time.perf_counter()
        now = self._clock() if now is None else now
        if transports:
            self._transport.update(transports)
        self.seq += 1
        q = self.quantum
        add, dels, mov = self._peers(addresses, xz)
        # Islands: what changed since the last tick.
        changed: list[dict[str, Any]] = []
        geo: list[Any] = []
        present: set[str] = set()
        for d in status.islands:
            present.add(d.id)
            isl = self._islands.get(d.id)
            fresh = isl is None
            if isl is None:
                isl = self._islands[d.id] = _Island(d.id, now, changes=deque(maxlen=RECENT_CHANGES))
            new_changes: list[list[Any]] = []
            if isl.members != d.peers:
                before = set(isl.members)
                after = set(d.peers)
                new_changes = [[now, "+", p] for p in d.peers if p not in before]
                new_changes += [[now, "-", p] for p in isl.members if p not in after]
                assert isl.changes is not None
                isl.changes.extend((c[0], c[1], c[2]) for c in new_changes)
                isl.members = d.peers
            g = ISLAND_GRID * q
            shape = (
                round(d.center[0] / g) * ISLAND_GRID,
                round(d.center[2] / g) * ISLAND_GRID,
                math.ceil(d.radius / g) * ISLAND_GRID,
            )
            tr = self._transport.get(d.id, "")
            if fresh or new_changes or tr != isl.tr or d.max_peers != isl.max:
                isl.x, isl.z, isl.r = shape
                isl.max = d.max_peers
                isl.tr = tr
                changed.append(self._island_json(isl, new_changes))
            elif shape != (isl.x, isl.z, isl.r):
                isl.x, isl.z, isl.r = shape
                geo += (d.id, *shape)
        gone_islands = [i for i in self._islands if i not in present]
        for i in gone_islands:
            del self._islands[i]
            self._transport.pop(i, None)
        counters = self._counters(now, len(self._slots), len(present))
        hot = self._hot()
        delta = _dumps(
            {
                "k": 0,
                "seq": self.seq,
                "ts": now,
                "q": q,
                "add": add,
                "del": dels,
                "mov": mov,
                "isl": changed,
                "geo": geo,
                "gone": gone_islands,
                "counters": counters,
                "hot": hot,
                "scenes": self.scenes,
            }
        )
        ring_key = (self.seq - 1) % self.key_every == 0
        wants = self.sink is not None and self.sink.feed_wants_key()
        key = self._key(now, counters, hot) if (ring_key or wants) else ""
        if key:
            self._last_key = key
        if self.sink is not None:
            self.sink.publish_feed(delta, key if wants else "")
        if len(self.ring) == self.ring.maxlen:
            self.ring_bytes -= len(self.ring[0].frame)
        entry = RingEntry(self.seq, now, ring_key, key if ring_key else delta)
        self.ring.append(entry)
        self.ring_bytes += len(entry.frame)
        self.bytes_built = len(delta)
        self.last_build_s = time.perf_counter() - t0
        return delta

    def _peers(
        self, addresses: Sequence[str], xz: NDArray[Any]
    ) -> tuple[list[Any], list[int], list[int]]:
        """Slots, quantised positions and what changed: (add, del, mov) of the delta."""
        n = len(addresses)
        slots = self._slots
        qxz = np.rint(np.asarray(xz, dtype=np.float64).reshape(n, 2) / self.quantum)
        qxz = qxz.astype(np.int64)
        slot_of = np.fromiter(map(slots.get, addresses, repeat(-1)), dtype=np.int64, count=n)
        new = np.flatnonzero(slot_of < 0)
        old = np.flatnonzero(slot_of >= 0)
        # What moved among those already here (before any slot is reused).
        s_old = slot_of[old]
        dx = qxz[old, 0] - self._qx[s_old]
        dz = qxz[old, 1] - self._qz[s_old]
        m = (dx != 0) | (dz != 0)
        ms = s_old[m]
        order = np.argsort(ms, kind="stable")
        ms = ms[order]
        steps = np.diff(ms, prepend=0)
        mov: list[int] = np.column_stack((steps, dx[m][order], dz[m][order])).ravel().tolist()
        # Who left: alive slots not seen now.
        seen = np.zeros(len(self._alive), dtype=np.bool_)
        seen[s_old] = True
        dels: list[int] = np.flatnonzero(self._alive & ~seen).tolist()
        for s in dels:
            addr = self._addr_of[s]
            assert addr is not None
            del slots[addr]
            self._addr_of[s] = None
        self._alive[dels] = False
        # Newcomers: the slots just freed are reused next tick (a page applies del first).
        add: list[Any] = []
        if len(new):
            free = self._free
            need = max(0, len(new) - len(free)) + len(self._addr_of)
            if need > len(self._alive):
                self._grow(max(need, 2 * len(self._alive), 64))
            for i in new.tolist():
                addr = addresses[i]
                s = free.pop() if free else len(self._addr_of)
                if s == len(self._addr_of):
                    self._addr_of.append(addr)
                else:
                    self._addr_of[s] = addr
                slots[addr] = s
                slot_of[i] = s
                add += (s, addr, int(qxz[i, 0]), int(qxz[i, 1]))
            self._alive[slot_of[new]] = True
        self._free.extend(dels)
        self._qx[slot_of] = qxz[:, 0]
        self._qz[slot_of] = qxz[:, 1]
        return add, dels, mov

    def _grow(self, size: int) -> None:
        for name in ("_alive", "_qx", "_qz"):
            a = getattr(self, name)
            b = np.zeros(size, dtype=a.dtype)
            b[: len(a)] = a
            setattr(self, name, b)

    def _refresh_scenes(self) -> None:
        """Looks the hot parcels' scenes up (the stats service's cached content-server
        lookup) in the background; the next frames carry their names."""
        if self._scenes_task is not None and not self._scenes_task.done():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._scenes_task = loop.create_task(self._lookup_scenes())

    async def _lookup_scenes(self) -> None:
        assert self.stats is not None
        try:
            found = await self.stats.hot_scenes()
        except Exception as e:  # the content server is down: keep the last names
            log.warning("map: hot scenes lookup failed", extra={"error": str(e)})
            return
        self.scenes = [
            [str(s.get("name", "")), *(s.get("baseCoords") or [None, None]), s["usersTotalCount"]]
            for s in found[:HOT_PARCELS]
            if s.get("usersTotalCount")
        ]

    def _counters(self, now: int, peers: int, islands: int) -> dict[str, Any]:
        dt = (now - self._last_ts) / 1000 if self._last_ts is not None else 0.0
        self._last_ts = now
        hs = self._handshakes / dt if dt > 0 else 0.0
        ch = self._changes / dt if dt > 0 else 0.0
        self._handshakes = self._changes = 0
        return {
            "peers": peers,
            "islands": islands,
            "handshakes_per_s": round(hs, 2),
            "island_changes_per_s": round(ch, 2),
        }

    def _hot(self) -> list[list[int]]:
        """The busiest parcels: ``[[x, y, peers], ...]``, most peers first."""
        alive = self._alive
        if not alive.any():
            return []
        cell = PARCEL_SIZE / self.quantum
        px = np.floor(self._qx[alive] / cell).astype(np.int64)
        pz = np.floor(self._qz[alive] / cell).astype(np.int64)
        keys, counts = np.unique(
            (px + (1 << 20)) * (1 << 21) + (pz + (1 << 20)), return_counts=True
        )
        top = np.argsort(-counts, kind="stable")[:HOT_PARCELS]
        k = keys[top]
        xs = (k >> 21) - (1 << 20)
        zs = (k & ((1 << 21) - 1)) - (1 << 20)
        return np.column_stack((xs, zs, counts[top])).tolist()  # type: ignore[no-any-return]

    def _island_json(self, isl: _Island, changes: list[list[Any]] | None) -> dict[str, Any]:
        slots = self._slots
        return {
            "id": isl.id,
            "tr": isl.tr,
            "x": isl.x,
            "z": isl.z,
            "r": isl.r,
            "max": isl.max,
            "m": [slots[p] for p in isl.members if p in slots],
            "since": isl.since,
            "ch": [list(c) for c in isl.changes or ()] if changes is None else changes,
        }

    def _key(self, now: int, counters: dict[str, Any], hot: list[list[int]]) -> str:
        peers: list[Any] = []
        alive = np.flatnonzero(self._alive)
        addr_of = self._addr_of
        for s, x, z in zip(
            alive.tolist(), self._qx[alive].tolist(), self._qz[alive].tolist(), strict=True
        ):
            peers += (s, addr_of[s], x, z)
        return _dumps(
            {
                "k": 1,
                "seq": self.seq,
                "ts": now,
                "q": self.quantum,
                "peers": peers,
                "isl": [self._island_json(i, None) for i in self._islands.values()],
                "counters": counters,
                "hot": hot,
                "scenes": self.scenes,
            }
        )

    # --- replay and HTTP ------------------------------------------------------------

    def replay(self, seconds: float | None = None) -> list[str]:
        """The ring's frames from the last key frame at or before ``now - seconds`` (all
        kept when None) to the newest: a key frame first, then deltas (and later keys)."""
        entries = list(self.ring)
        cutoff = None if seconds is None else self._clock() - seconds * 1000
        start = None
        for i, e in enumerate(entries):
            if e.key and (start is None or cutoff is None or e.ts <= cutoff):
                start = i
                if cutoff is None:
                    break
        if start is None:
            return []
        return [e.frame for e in entries[start:]]

    def snapshot(self) -> str:
        """The whole map now, as a key frame (does not advance the tick)."""
        return self._key(self._clock(), self._counters_now(), self._hot())

    def _counters_now(self) -> dict[str, Any]:
        return {
            "peers": len(self._slots),
            "islands": len(self._islands),
            "handshakes_per_s": 0.0,
            "island_changes_per_s": 0.0,
        }

    def routes(self, router: Router) -> None:
        router.add("/map", _h_page)
        router.add("/map/replay.json", self._h_replay)
        router.add("/map/snapshot.json", lambda _r: _json_text(self.snapshot()))
        router.add("/map/{asset}", _h_asset)

    def _h_replay(self, req: Request) -> Response:
        raw = req.args.get("seconds", [""])[-1]
        seconds: float | None = None
        if raw:
            try:
                seconds = float(raw)
            except ValueError:
                seconds = math.nan
            if not (math.isfinite(seconds) and seconds >= 0):
                raise HttpError(400, "seconds must be a number >= 0", "bad_request")
        return _json_text('{"frames":[' + ",".join(self.replay(seconds)) + "]}")


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def _json_text(body: str) -> Response:
    return Response(200, body.encode(), {"Content-Type": "application/json"})


ASSETS = {
    "map.js": "application/javascript; charset=utf-8",
    "map.css": "text/css; charset=utf-8",
}


def asset(name: str) -> bytes:
    """A file of the page (package data under ``dclcomms/livemap/static``)."""
    return resources.files(__package__).joinpath("static", name).read_bytes()


def _h_page(_req: Request) -> Response:
    return Response(
        200,
        asset("index.html"),
        {"Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-cache"},
    )


def _h_asset(req: Request) -> Response:
    name = req.params["asset"]
    if name not in ASSETS:
        return json_response({"error": "Not Found"}, 404)
    return Response(200, asset(name), {"Content-Type": ASSETS[name], "Cache-Control": "no-cache"})


__all__ = ["FeedSink", "MapFeed", "RingEntry", "asset", "transport_of"]
