"""The C++ converge engine against a naive transcription of the same rules.

`NaiveConverge` below implements archipelago.md §2.6 as docs/archipelago.md
describes it, with no spatial index at all: every candidate search scans every
island, every touch test every member pair. The C++ engine adds a grid of island
cells, hidden full islands, a flat peer index and bounding-box prefilters; none
of them may change a single decision. So on seeded random worlds with moves,
arrivals, disconnects and preferences, both must produce the same changes (in
order) and the same islands (ids and members in order) after every flush.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest

from dclcomms.archipelago import Engine, IslandChange

_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


def _b36(n: int) -> str:
    s = ""
    while True:
        n, r = divmod(n, 36)
        s = _DIGITS[r] + s
        if n == 0:
            return s


class NaiveConverge:
    def __init__(self, join: float, leave: float, cap: int) -> None:
        self.j2, self.l2, self.cap = join * join, leave * leave, cap
        self.pos: dict[str, tuple[float, float]] = {}
        self.island: dict[str, int | None] = {}
        self.pref: dict[str, str] = {}
        self.members: dict[int, list[str]] = {}  # seq -> members
        self.next_seq = 1
        self.pending: list[str] = []
        self.split_q: list[int] = []
        self.merge_q: deque[int] = deque()
        self.split_flag: set[int] = set()
        self.merge_flag: set[int] = set()
        self.departures: list[tuple[str, int]] = []
        self.touched: dict[str, int | None] = {}

    # inputs
    def update(self, pid: str, x: float, z: float, pref: str | None) -> None:
        x, z = float(np.float32(x)), float(np.float32(z))
        if pid not in self.pos:
            self.pending.append(pid)
            self.island[pid] = None
        elif self.island[pid] is not None and self.pos[pid] != (x, z):
            self.q_split(self.island[pid])  # type: ignore[arg-type]
            self.q_merge(self.island[pid])  # type: ignore[arg-type]
        self.pos[pid] = (x, z)
        if pref is not None:
            self.pref[pid] = pref

    def disconnect(self, pid: str) -> None:
        seq = self.island.pop(pid)
        del self.pos[pid]
        self.pref.pop(pid, None)
        if seq is None:
            self.pending.remove(pid)
            return
        self.members[seq].remove(pid)
        if not self.members[seq]:
            self.delete(seq)
        else:
            self.q_split(seq)
            self.q_merge(seq)
        self.departures.append((pid, seq))

    # helpers
    def q_split(self, seq: int) -> None:
        if seq not in self.split_flag:
            self.split_flag.add(seq)
            self.split_q.append(seq)

    def q_merge(self, seq: int) -> None:
        if seq not in self.merge_flag:
            self.merge_flag.add(seq)
            self.merge_q.append(seq)

    def new_island(self) -> int:
        seq = self.next_seq
        self.next_seq += 1
        self.members[seq] = []
        return seq

    def delete(self, seq: int) -> None:
        del self.members[seq]
        self.split_flag.discard(seq)
        self.merge_flag.discard(seq)

    def rank(self, seq: int) -> tuple[int, int]:
        return (-len(self.members[seq]), seq)

    def d2(self, a: str, b: str) -> float:
        (ax, az), (bx, bz) = self.pos[a], self.pos[b]
        return (ax - bx) * (ax - bx) + (az - bz) * (az - bz)

    def touch(self, pid: str) -> None:
        if pid not in self.touched:
            self.touched[pid] = self.island[pid]

    def slot_of(self, name: str) -> int | None:
        if not name.startswith("I"):
            return None
        for seq in self.members:
            if "I" + _b36(seq) == name:
                return seq
        return None

    def touches(self, a: int, b: int) -> bool:
        return any(self.d2(p, q) <= self.j2 for p in self.members[a] for q in self.members[b])

    # flush
    def split(self, seq: int) -> None:
        m = self.members[seq]
        comp = [-1] * len(m)
        n = 0
        for i in range(len(m)):
            if comp[i] >= 0:
                continue
            comp[i] = n
            stack = [i]
            while stack:
                u = stack.pop()
                for v in range(len(m)):
                    if comp[v] < 0 and self.d2(m[u], m[v]) <= self.l2:
                        comp[v] = n
                        stack.append(v)
            n += 1
        if n == 1:
            return
        sizes = [comp.count(c) for c in range(n)]
        keep = sizes.index(max(sizes))
        slots = [seq if c == keep else self.new_island() for c in range(n)]
        old, self.members[seq] = m, []
        for i, p in enumerate(old):
            dst = slots[comp[i]]
            if dst != seq:
                self.touch(p)
                self.island[p] = dst
            self.members[dst].append(p)
        for s in slots:
            self.q_merge(s)

    def admit(self, p: str) -> None:
        cands = [s for s in self.members if len(self.members[s]) < self.cap]
        near = [s for s in cands if any(self.d2(p, q) <= self.j2 for q in self.members[s])]
        target = None
        want = self.slot_of(self.pref.get(p, ""))
        if want in near:
            target = want
        elif near:
            target = min(near, key=self.rank)
        if target is None:
            target = self.new_island()
        self.touch(p)
        self.island[p] = target
        self.members[target].append(p)
        self.q_merge(target)

    def vote(self, seq: int) -> int | None:
        counts: dict[str, int] = {}
        leader, best = None, 0
        for p in self.members[seq]:
            if p in self.pref:
                counts[self.pref[p]] = counts.get(self.pref[p], 0) + 1
                if counts[self.pref[p]] > best:
                    leader, best = self.pref[p], counts[self.pref[p]]
        return None if leader is None else self.slot_of(leader)

    def merge_step(self, x: int) -> None:
        xs = len(self.members[x])
        if xs + 1 > self.cap:
            return
        higher = sorted(
            (t for t in self.members if t != x and self.rank(t) < self.rank(x)),
            key=self.rank,
        )
        higher = [t for t in higher if xs + len(self.members[t]) <= self.cap]
        lower = sorted(
            (t for t in self.members if t != x and self.rank(t) > self.rank(x)),
            key=self.rank,
        )
        lower = [t for t in lower if xs + len(self.members[t]) <= self.cap]
        if higher:
            want = self.vote(x)
            order = ([want] if want in higher else []) + [t for t in higher if t != want]
            for t in order:
                if self.touches(x, t):
                    for p in self.members[x]:
                        self.touch(p)
                        self.island[p] = t
                        self.members[t].append(p)
                    self.delete(x)
                    self.q_merge(t)
                    return
        for t in lower:
            if self.touches(x, t):
                self.q_merge(t)

    def flush(self) -> list[IslandChange]:
        splits, self.split_q = self.split_q, []
        for s in splits:
            if s in self.members and s in self.split_flag:
                self.split_flag.discard(s)
                self.split(s)
        for p in self.pending:
            self.admit(p)
        self.pending = []
        while self.merge_q:
            s = self.merge_q.popleft()
            if s in self.members and s in self.merge_flag:
                self.merge_flag.discard(s)
                self.merge_step(s)
        out = [IslandChange(p, "left", "I" + _b36(s), None) for p, s in self.departures]
        for p, start in self.touched.items():
            end = self.island.get(p)
            if end is not None and end != start:
                frm = None if start is None else "I" + _b36(start)
                out.append(IslandChange(p, "changed", "I" + _b36(end), frm))
        self.departures, self.touched = [], {}
        return out

    def islands(self) -> list[tuple[str, tuple[str, ...]]]:
        return [("I" + _b36(s), tuple(m)) for s, m in sorted(self.members.items())]


@pytest.mark.parametrize("seed", range(12))
def test_engine_matches_naive_converge(seed: int) -> None:
    rng = np.random.default_rng(seed)
    cap = int(rng.integers(2, 25))
    join = float(rng.uniform(30, 70))
    leave = join + float(rng.uniform(0, 25))
    half = float(rng.uniform(100, 600))
    engine, naive = Engine(join, leave, cap), NaiveConverge(join, leave, cap)
    alive: list[str] = []
    serial = 0
    for step in range(8):
        batch: dict[str, tuple[float, float, str | None]] = {}
        for _ in range(int(rng.integers(5, 60))):  # arrivals
            pid = f"p{serial}"
            serial += 1
            batch[pid] = (rng.uniform(-half, half), rng.uniform(-half, half), None)
        for pid in rng.permutation(alive)[: len(alive) // 4]:  # moves
            x, z = naive.pos[str(pid)]
            batch[str(pid)] = (x + rng.uniform(-60, 60), z + rng.uniform(-60, 60), None)
        for pid in list(batch)[:: int(rng.integers(3, 9))]:  # preferences
            x, z, _ = batch[pid]
            batch[pid] = (x, z, f"I{_b36(int(rng.integers(1, naive.next_seq + 2)))}")
        for pid, (x, z, pref) in batch.items():
            engine.update(pid, (x, 0.0, z), pref) if pref else engine.update(pid, (x, 0.0, z))
            naive.update(pid, x, z, pref)
        alive = list(dict.fromkeys([*alive, *batch]))
        for pid in [str(p) for p in rng.permutation(alive)[: int(rng.integers(0, 4))]]:
            engine.disconnect(pid)
            naive.disconnect(pid)
            alive.remove(pid)
        got, want = engine.flush(), naive.flush()
        assert got == want, f"seed={seed} step={step}"
        assert [(i.id, i.peers) for i in engine.islands()] == naive.islands(), (
            f"seed={seed} step={step}"
        )
