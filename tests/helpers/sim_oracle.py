"""An independent pure-Python clustering oracle for the simulator tests, and its invariants."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np


class Change(NamedTuple):
    peer_id: str
    kind: str
    island_id: str | None
    from_island_id: str | None


def _b36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if n == 0:
            return out


class OracleEngine:
    """Converge-mode clustering by brute force (small worlds only)."""

    def __init__(
        self,
        join_distance: float = 64.0,
        leave_distance: float = 80.0,
        max_island_size: int = 100,
        id_prefix: str = "I",
    ) -> None:
        self.join = join_distance
        self.leave = leave_distance
        self.cap = max_island_size
        self.prefix = id_prefix
        self.pos: dict[str, tuple[float, float, float]] = {}
        self.seen: dict[str, int] = {}
        self.pending: list[str] = []
        self.island: dict[str, str] = {}
        self.members: dict[str, list[str]] = {}
        self.max_peers: dict[str, int] = {}
        self.order: list[str] = []  # islands in creation order
        self.counter = 0
        self.left: dict[str, str] = {}

    # -- inputs ------------------------------------------------------------
    def update_many(
        self,
        peer_ids: Sequence[str],
        positions: Any,
        preferred: Any = None,
        *,
        now_ms: int | None = None,
    ) -> None:
        pos = np.asarray(positions, dtype=np.float32)
        assert pos.shape == (len(peer_ids), 3)
        for pid, p in zip(peer_ids, pos.tolist(), strict=True):
            self.pos[pid] = (p[0], p[1], p[2])
            self.seen[pid] = now_ms or 0
            if pid not in self.island and pid not in self.pending:
                self.pending.append(pid)

    def _remove(self, pid: str) -> None:
        self.pos.pop(pid, None)
        self.seen.pop(pid, None)
        if pid in self.pending:
            self.pending.remove(pid)
            return
        iid = self.island.pop(pid, None)
        if iid is None:
            return
        self.members[iid].remove(pid)
        self.left[pid] = iid
        if not self.members[iid]:
            del self.members[iid]
            self.order.remove(iid)

    def disconnect_many(self, peer_ids: Sequence[str]) -> None:
        for pid in peer_ids:
            self._remove(pid)

    def expire(self, now_ms: int, timeout_ms: int = 60_000) -> None:
        for pid in [p for p, t in self.seen.items() if now_ms - t > timeout_ms]:
            self._remove(pid)

    # -- geometry ----------------------------------------------------------
    def _xz(self, peers: list[str]) -> Any:
        return np.array(
            [(self.pos[p][0], self.pos[p][2]) for p in peers], dtype=np.float64
        ).reshape(-1, 2)

    def _touch(self, a: list[str], b: list[str], d: float) -> bool:
        xa, xb = self._xz(a), self._xz(b)
        d2 = ((xa[:, None, :] - xb[None, :, :]) ** 2).sum(-1)
        return bool((d2 <= d * d).any())

    def _new_island(self, peers: list[str]) -> str:
        self.counter += 1
        iid = self.prefix + _b36(self.counter)
        self.members[iid] = list(peers)
        self.max_peers[iid] = self.cap
        self.order.append(iid)
        for p in peers:
            self.island[p] = iid
        return iid

    def _older(self, a: str, b: str) -> bool:
        return self.order.index(a) < self.order.index(b)

    # -- flush -------------------------------------------------------------
    def flush(self) -> list[Change]:
        start = dict(self.island)
        # Split every island into components under the leave distance.
        for iid in list(self.order):
            peers = self.members[iid]
            xz = self._xz(peers)
            d2 = ((xz[:, None, :] - xz[None, :, :]) ** 2).sum(-1)
            adj = d2 <= self.leave * self.leave
            comp = [-1] * len(peers)
            groups: list[list[int]] = []
            for i in range(len(peers)):
                if comp[i] >= 0:
                    continue
                comp[i] = len(groups)
                stack, g = [i], [i]
                while stack:
                    j = stack.pop()
                    for k in np.flatnonzero(adj[j]).tolist():
                        if comp[k] < 0:
                            comp[k] = comp[i]
                            stack.append(k)
                            g.append(k)
                groups.append(sorted(g))
            if len(groups) > 1:
                keep = max(range(len(groups)), key=lambda g: (len(groups[g]), -g))
                self.members[iid] = [peers[i] for i in groups[keep]]
                for gi, g in enumerate(groups):
                    if gi != keep:
                        for p in (peers[i] for i in g):
                            del self.island[p]
                        self._new_island([peers[i] for i in g])
        # Admit new peers: biggest (then oldest) island within join distance with room.
        for pid in self.pending:
            best = None
            for iid in self.order:
                fits = len(self.members[iid]) < self.max_peers[iid]
                bigger = best is None or len(self.members[iid]) > len(self.members[best])
                if fits and bigger and self._touch([pid], self.members[iid], self.join):
                    best = iid
            if best is None:
                self._new_island([pid])
            else:
                self.members[best].append(pid)
                self.island[pid] = best
        self.pending = []
        # Merge passes until nothing merges.
        merged = True
        while merged:
            merged = False
            ranked = sorted(self.order, key=lambda i: (-len(self.members[i]), self.order.index(i)))
            for x in reversed(ranked):
                for t in ranked:
                    if t == x or len(self.members[t]) + len(self.members[x]) > self.max_peers[t]:
                        continue
                    big_t = (len(self.members[t]), -self.order.index(t)) > (
                        len(self.members[x]),
                        -self.order.index(x),
                    )
                    if big_t and self._touch(self.members[x], self.members[t], self.join):
                        for p in self.members[x]:
                            self.island[p] = t
                        self.members[t].extend(self.members[x])
                        del self.members[x]
                        self.order.remove(x)
                        merged = True
                        break
                if merged:
                    break
        out: list[Change] = []
        for pid, iid in self.left.items():
            if pid not in self.island:
                out.append(Change(pid, "left", iid, None))
        self.left = {}
        for iid in self.order:
            for p in self.members[iid]:
                if start.get(p) != iid:
                    out.append(Change(p, "changed", iid, start.get(p)))
        return out

    def snapshot(self) -> dict[str, Any]:
        peers: list[str] = []
        island: list[int] = []
        centers, radii = [], []
        for row, iid in enumerate(self.order):
            m = self.members[iid]
            peers.extend(m)
            island.extend([row] * len(m))
            xz = self._xz(m)
            c = xz.mean(axis=0)
            centers.append((c[0], 0.0, c[1]))
            radii.append(math.sqrt(float(((xz - c) ** 2).sum(-1).max())))
        return {
            "peer_ids": np.array(peers, dtype=object),
            "positions": np.array([self.pos[p] for p in peers], dtype=np.float32).reshape(-1, 3),
            "island_index": np.array(island, dtype=np.int64),
            "island_ids": np.array(self.order, dtype=object),
            "island_centers": np.array(centers, dtype=np.float64).reshape(-1, 3),
            "island_radii": np.array(radii, dtype=np.float64),
            "island_sizes": np.array([len(self.members[i]) for i in self.order], dtype=np.int64),
            "island_max_peers": np.array([self.max_peers[i] for i in self.order], dtype=np.int64),
        }


def check_invariants(snap: Any, join: float, leave: float, cap: int) -> None:
    """I1 connected under leave, I2 no mergeable touching pair, I3 one island each, I4 capacity."""
    snap = snap.placed()
    ids = snap.peer_ids.tolist()
    assert len(ids) == len(set(ids)), "I3: a peer is in two islands"
    xz = snap.positions[:, [0, 2]].astype(np.float64)
    n_isl = len(snap.island_ids)
    assert (snap.sizes <= snap.max_peers).all(), "I4: island over capacity"
    assert np.bincount(snap.island, minlength=n_isl).tolist() == snap.sizes.tolist()
    members = [np.flatnonzero(snap.island == k) for k in range(n_isl)]
    for k, m in enumerate(members):
        p = xz[m]
        adj = ((p[:, None] - p[None]) ** 2).sum(-1) <= leave * leave
        seen = {0}
        stack = [0]
        while stack:
            j = stack.pop()
            for i in np.flatnonzero(adj[j]).tolist():
                if i not in seen:
                    seen.add(i)
                    stack.append(i)
        assert len(seen) == len(m), f"I1: island {snap.island_ids[k]} not connected"
    for a in range(n_isl):
        for b in range(a + 1, n_isl):
            if len(members[a]) + len(members[b]) > min(snap.max_peers[a], snap.max_peers[b]):
                continue
            pa, pb = xz[members[a]], xz[members[b]]
            d2 = ((pa[:, None] - pb[None]) ** 2).sum(-1)
            assert not (d2 <= join * join).any(), (
                f"I2: {snap.island_ids[a]} and {snap.island_ids[b]} touch and fit together"
            )
