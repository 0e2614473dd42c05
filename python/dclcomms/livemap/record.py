"""Saving a simulator run for the live map (``dclcomms sim --save FILE``).

:class:`SimMapRecorder` turns the engine snapshot after each flush into the map's
frames (the same builder as the realm's live feed: a key frame every ``key_every``
flushes, deltas between) and writes them as JSON lines (``.jsonl``, one frame per
line after a header line) or as one self-contained HTML page (``.html``: the map page
with the frames inside; opens in a browser without a realm or a server).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO, Any

import numpy as np

from dclcomms.livemap import MapFeed, asset
from dclcomms.pubsub import IslandData, IslandStatus
from dclcomms.sim.simulation import Simulation, Snapshot

# transport kinds of the simulator's policies -> the map's colours
_KINDS = {"livekit": "livekit", "ws-room": "ws-room", "ws_room": "ws-room", "p2p": "p2p"}


def islands_of(snap: Snapshot) -> IslandStatus:
    """The snapshot's islands with their members, as ``engine.islands`` carries them."""
    placed = snap.placed()
    order = np.argsort(placed.island, kind="stable")
    ids = placed.peer_ids[order].tolist()
    bounds = np.searchsorted(placed.island[order], np.arange(len(placed.island_ids) + 1))
    out = []
    for row, iid in enumerate(placed.island_ids.tolist()):
        c = placed.centers[row]
        out.append(
            IslandData(
                str(iid),
                tuple(ids[bounds[row] : bounds[row + 1]]),
                int(placed.max_peers[row]),
                (float(c[0]), 0.0, float(c[-1])),
                float(placed.radii[row]),
            )
        )
    return IslandStatus(tuple(out))


class SimMapRecorder:
    """Records a :class:`Simulation` flush by flush: call :meth:`capture` after each."""

    def __init__(self, sim: Simulation, *, key_every: int = 30, quantum: float = 1.0) -> None:
        self.sim = sim
        self.feed = MapFeed(None, None, ring_ticks=1, key_every=key_every, quantum=quantum)
        self.frames: list[str] = []

    def capture(self) -> None:
        snap = self.sim.snapshot()
        xz = np.asarray(snap.positions)[:, [0, -1]]
        kinds = {i: _KINDS.get(k, "fixed") for i, k in self.sim.island_kinds.items()}
        self.feed.push(
            islands_of(snap), snap.peer_ids.tolist(), xz, now=self.sim.now_ms, transports=kinds
        )
        self.frames.append(self.feed.ring[-1].frame)

    def header(self, **meta: Any) -> str:
        return json.dumps({"dclcomms_map": 1, **meta}, separators=(",", ":"))

    def save(self, path: str | Path, **meta: Any) -> None:
        """``.html``: a self-contained page; anything else: JSON lines."""
        p = Path(path)
        with p.open("w", encoding="utf-8") as f:
            if p.suffix.lower() in (".html", ".htm"):
                self._html(f, meta)
            else:
                f.write(self.header(**meta) + "\n")
                for frame in self.frames:
                    f.write(frame + "\n")

    def _html(self, f: IO[str], meta: dict[str, Any]) -> None:
        page = asset("index.html").decode()
        css = asset("map.css").decode()
        js = asset("map.js").decode()
        data = "[" + ",".join(self.frames) + "]"
        # JSON inside <script>: "</" would end the element.
        data = data.replace("</", "<\\/")
        page = page.replace(
            '<link rel="stylesheet" href="/map/map.css">', f"<style>\n{css}</style>"
        )
        assert "</" not in js, "map.js must not contain '</' (it is inlined in a <script>)"
        page = page.replace(
            '<script src="/map/map.js"></script>',
            f'<script type="application/json" id="replay-data">{data}</script>\n'
            f"<script>\n{js}</script>",
        )
        page = page.replace("<title>dclcomms live map</title>", "<title>dclcomms saved run</title>")
        f.write(page)


__all__ = ["SimMapRecorder", "islands_of"]
