"""The reference clustering algorithm (spec archipelago.md §2.3), quirks included.

Pure Python, for notebooks and differential tests: ``Engine(mode="reference")``
uses it behind the same API as the C++ converge engine. It reproduces
archipelago-workers' engine step by step (singleton newcomers, dirty flags
cleared by geometry reads, split/merge order, the preference vote, id
consumption), so its updates match the ``reference_trace`` of the conformance
scenarios exactly, including the quirks Q1-Q5 of §2.5. It is O(islands²) per
flush like the original: keep worlds small (≤ ~10k peers).

Differences from upstream, by necessity: the transport accepts every peer
(no evictions), and ``now_ms``/``expire`` exist (upstream expires with its own
timer). Like upstream, a preference can be set but never cleared (Q5).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from dclcomms.errors import ConfigError
from dclcomms.heartbeats import PreferenceOp, Unset, preference_op

__all__ = ["ReferenceCore"]

_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"
_SET = PreferenceOp.SET


def _base36(n: int) -> str:
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = _DIGITS[r] + out
        if n == 0:
            return out


@dataclass(eq=False)
class _Peer:
    id: str
    x: float
    y: float
    z: float
    preferred: str | None = None
    island: str | None = None
    last_ms: int = 0


@dataclass(eq=False)
class _Island:
    id: str
    sequence: int
    max_peers: int
    peers: list[_Peer] = field(default_factory=list)
    dirty: bool = True
    _geometry: tuple[float, float, float] | None = None  # (cx, cz, radius)

    def geometry(self, *, clear_dirty: bool) -> tuple[float, float, float]:
        # Upstream recomputes lazily and clears the dirty flag on every read.
        if self._geometry is None or self.dirty:
            n = len(self.peers)
            cx = sum(p.x for p in self.peers) / n
            cz = sum(p.z for p in self.peers) / n
            r2 = max((p.x - cx) ** 2 + (p.z - cz) ** 2 for p in self.peers)
            self._geometry = (cx, cz, math.sqrt(r2))
        if clear_dirty:
            self.dirty = False
        return self._geometry

    def touch(self) -> None:
        self.dirty = True
        self._geometry = None


def _f32(v: float) -> float:
    return float(np.float32(v))


class ReferenceCore:
    """Same interface as ``_core.ArchipelagoEngine``, running the reference algorithm."""

    def __init__(
        self, join_distance: float, leave_distance: float, max_island_size: int, id_prefix: str
    ) -> None:
        if not id_prefix or any(c in ".*>" or c.isspace() or ord(c) < 0x20 for c in id_prefix):
            raise ConfigError(
                "id_prefix must be non-empty without '.', '*', '>', whitespace or control "
                "characters",
                code="invalid_parameter",
            )
        self._join2 = join_distance * join_distance
        self._leave2 = leave_distance * leave_distance
        self._join = join_distance
        self._cap = max_island_size
        self._prefix = id_prefix
        self._counter = 0
        self._peers: dict[str, _Peer] = {}
        self._pending: dict[str, _Peer] = {}
        self._islands: dict[str, _Island] = {}  # creation order
        self._updates: dict[str, tuple[str, str, str | None]] = {}
        self._flushes = 0

    # --- inputs ---------------------------------------------------------------

    def update(
        self,
        peer_id: str,
        x: float,
        y: float,
        z: float,
        op: PreferenceOp,
        preferred: str,
        now_ms: int,
    ) -> None:
        if not peer_id:
            raise ConfigError("peer id must be non-empty", code="invalid_peer_id")
        xyz = (_f32(x), _f32(y), _f32(z))
        if not all(math.isfinite(v) for v in xyz):
            raise ConfigError("position must be finite float32 values", code="invalid_position")
        self._apply(peer_id, xyz, op, preferred, now_ms)

    def _apply(
        self,
        peer_id: str,
        xyz: tuple[float, float, float],
        op: PreferenceOp,
        pref: str,
        now_ms: int,
    ) -> None:
        peer = self._peers.get(peer_id)
        if peer is None:
            peer = self._pending.get(peer_id)
            if peer is None:
                peer = _Peer(peer_id, *xyz)
                self._pending[peer_id] = peer
        peer.x, peer.y, peer.z = xyz
        peer.last_ms = now_ms
        if op == _SET and pref:  # Q5: set only if non-empty, never cleared
            peer.preferred = pref
        if peer.island is not None:
            self._islands[peer.island].touch()  # any heartbeat marks the island dirty

    def update_many(
        self,
        peer_ids: list[str],
        positions: npt.NDArray[np.float32],
        preferred: list[str | Unset | None] | None,
        now_ms: int,
    ) -> None:
        pos = np.asarray(positions, dtype=np.float32)
        for i, pid in enumerate(peer_ids):
            if not isinstance(pid, str) or not pid:
                raise ConfigError(f"invalid peer id (row {i})", code="invalid_peer_id")
        if pos.shape != (len(peer_ids), 3):
            raise ConfigError("positions must have shape (n, 3)", code="invalid_parameter")
        if preferred is not None and len(preferred) != len(peer_ids):
            raise ConfigError(
                f"preferred must have {len(peer_ids)} entries, got {len(preferred)}",
                code="invalid_parameter",
            )
        prefs = [preference_op(p) for p in preferred] if preferred is not None else None
        bad = np.nonzero(~np.isfinite(pos).all(axis=1))[0]
        if len(bad):
            raise ConfigError(
                f"position must be finite float32 values (row {bad[0]})", code="invalid_position"
            )
        keep = (PreferenceOp.KEEP, "")
        for i, pid in enumerate(peer_ids):
            x, y, z = (float(v) for v in pos[i])
            op, pref = prefs[i] if prefs is not None else keep
            self._apply(pid, (x, y, z), op, pref, now_ms)

    def disconnect(self, peer_id: str) -> bool:
        if self._pending.pop(peer_id, None) is not None:
            return True
        peer = self._peers.pop(peer_id, None)
        if peer is None:
            return False
        assert peer.island is not None
        island = self._islands[peer.island]
        island.peers.remove(peer)
        if island.peers:
            island.touch()
        else:
            del self._islands[island.id]
        self._updates[peer_id] = ("left", island.id, None)
        return True

    def disconnect_many(self, peer_ids: list[str]) -> int:
        return sum(self.disconnect(p) for p in peer_ids)

    def expire(self, now_ms: int, timeout_ms: int) -> int:
        gone = [
            p.id
            for p in [*self._peers.values(), *self._pending.values()]
            if p.last_ms < now_ms - timeout_ms
        ]
        for pid in gone:
            self.disconnect(pid)
        return len(gone)

    # --- flush (spec §2.3) ------------------------------------------------------

    def _create(self, peers: list[_Peer]) -> _Island:
        self._counter += 1
        island = _Island(self._prefix + _base36(self._counter), self._counter, self._cap)
        self._islands[island.id] = island
        for p in peers:
            self._move(p, island)
        return island

    def _move(self, peer: _Peer, to: _Island) -> None:
        if peer.island is not None and peer.island in self._islands:
            old = self._islands[peer.island]
            if peer in old.peers:
                old.peers.remove(peer)
        frm = peer.island
        peer.island = to.id
        to.peers.append(peer)
        to.touch()
        self._updates[peer.id] = ("changed", to.id, frm)

    def _near(self, a: list[_Peer], b: list[_Peer], d2: float) -> bool:
        return any((p.x - q.x) ** 2 + (p.z - q.z) ** 2 <= d2 for p in a for q in b)

    def _split(self, island: _Island, affected: list[_Island]) -> None:
        groups: list[list[_Peer]] = []
        for peer in island.peers:
            hit = [g for g in groups if self._near([peer], g, self._leave2)]
            if not hit:
                groups.append([peer])
                continue
            final, *rest = hit
            final.append(peer)
            for g in rest:
                groups.remove(g)
                final.extend(g)
        if len(groups) <= 1:
            return
        biggest = groups[0]
        for g in groups[1:]:
            if len(g) > len(biggest):
                biggest = g
        island.peers = list(biggest)
        island.touch()
        for g in groups:
            if g is not biggest:
                affected.append(self._create(list(g)))

    def _vote(self, island: _Island) -> str | None:
        counts: dict[str, int] = {}
        leader, best = None, 0
        for p in island.peers:
            if p.preferred:
                counts[p.preferred] = counts.get(p.preferred, 0) + 1
                if counts[p.preferred] > best:
                    leader, best = p.preferred, counts[p.preferred]
        return leader

    def _merge(self, island: _Island, processed: set[str]) -> None:
        cx, cz, r = island.geometry(clear_dirty=True)
        hits = []
        for other in list(self._islands.values()):
            if other is island:
                continue
            ox, oz, orad = other.geometry(clear_dirty=True)
            reach = r + orad + self._join
            if (cx - ox) ** 2 + (cz - oz) ** 2 <= reach * reach and self._near(
                island.peers, other.peers, self._join2
            ):
                hits.append(other)
        if not hits:
            return
        processed.add(island.id)
        ordered = sorted([island, *hits], key=lambda i: (-len(i.peers), i.sequence))
        biggest = [ordered[0]]
        for x in ordered[1:]:
            want = self._vote(x)
            candidates = [t for t in biggest if t.id == want] + [t for t in biggest if t.id != want]
            for target in candidates:
                if len(target.peers) + len(x.peers) <= target.max_peers:
                    for p in list(x.peers):
                        self._move(p, target)
                    del self._islands[x.id]
                    break
            else:
                biggest.append(x)

    def flush(
        self,
    ) -> tuple[list[str], list[Literal["changed", "left"]], list[str], list[str | None]]:
        self._flushes += 1
        for peer in list(self._pending.values()):  # 1. newcomers become singletons
            self._peers[peer.id] = peer
            self._create([peer])
        self._pending.clear()
        affected = [i for i in self._islands.values() if i.dirty]  # 2.
        for island in affected:  # 3. (grows while iterating)
            if island.id in self._islands:
                self._split(island, affected)
        processed: set[str] = set()
        for island in affected:  # 4.
            if island.id in self._islands and island.id not in processed:
                self._merge(island, processed)
        updates, self._updates = self._updates, {}
        peers = list(updates)
        kinds: list[Literal["changed", "left"]] = []
        islands: list[str] = []
        froms: list[str | None] = []
        for kind, island_id, frm in updates.values():
            kinds.append("left" if kind == "left" else "changed")
            islands.append(island_id)
            froms.append(frm)
        return peers, kinds, islands, froms

    # --- queries --------------------------------------------------------------

    def islands(
        self,
    ) -> list[
        tuple[str, list[str], tuple[float, float, float], float, int, npt.NDArray[np.float32]]
    ]:
        out = []
        for i in self._islands.values():
            cx, cz, r = i.geometry(clear_dirty=False)
            pos = np.array([(p.x, p.y, p.z) for p in i.peers], dtype=np.float32).reshape(-1, 3)
            out.append((i.id, [p.id for p in i.peers], (cx, 0.0, cz), r, i.max_peers, pos))
        return out

    def island_of(self, peer_id: str) -> str | None:
        peer = self._peers.get(peer_id)
        return None if peer is None else peer.island

    @property
    def peer_count(self) -> int:
        return len(self._peers) + len(self._pending)

    @property
    def island_count(self) -> int:
        return len(self._islands)

    def snapshot(self) -> dict[str, Any]:
        table = list(self._islands.values())
        row = {i.id: r for r, i in enumerate(table)}
        everyone = [*self._peers.values(), *self._pending.values()]
        geo = [i.geometry(clear_dirty=False) for i in table]
        return {
            "peer_ids": [p.id for p in everyone],
            "positions": np.array([[p.x, p.y, p.z] for p in everyone], dtype=np.float32).reshape(
                -1, 3
            ),
            "island_index": np.array(
                [row.get(p.island or "", -1) for p in everyone], dtype=np.int32
            ),
            "island_ids": [i.id for i in table],
            "centers": np.array([[g[0], 0.0, g[1]] for g in geo], dtype=np.float64).reshape(-1, 3),
            "radii": np.array([g[2] for g in geo], dtype=np.float64),
            "sizes": np.array([len(i.peers) for i in table], dtype=np.uint32),
            "max_peers": np.array([i.max_peers for i in table], dtype=np.uint32),
        }

    def last_flush_stats(self) -> dict[str, int]:
        return {"flushes": self._flushes}
