"""The stats service (archipelago.md section 5): pub/sub traffic turned into HTTP JSON.

:class:`Stats` subscribes to ``peer.*.heartbeat`` (batched), ``peer.*.disconnect``,
``engine.islands`` and ``engine.discovery`` and answers the reference stats
routes with the reference JSON shapes. Peers are forgotten on disconnect and,
unlike the reference, after ``heartbeat_timeout_ms`` of silence (the setting of the
same name, as the core's).

Positions are kept once per process: next to the core (the realm) the stats read
them from the core's engine (:meth:`Engine.snapshot`: every peer's last position,
placed on an island or not yet) and keep only each peer's last heartbeat time; a
stats process of its own (``dclcomms stats``) keeps the positions its heartbeats carry.

Hot scenes count users per parcel (16 m); with a content server configured the
parcels are resolved to scenes with ``POST <content>/entities/active`` (cached),
otherwise each occupied parcel is reported as its own unnamed entry.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from itertools import chain, repeat
from operator import attrgetter
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from dclcomms.clock import now_ms
from dclcomms.config import RealmConfig
from dclcomms.http import HttpError, Request, Response, Router, json_response
from dclcomms.pubsub import Discovery, HeartbeatBatch, IslandStatus, PubSub, Subscription

if TYPE_CHECKING:
    from dclcomms.archipelago.engine import Engine

log = logging.getLogger("dclcomms.stats")

PARCEL_SIZE = 16.0
HOT_SCENES_LIMIT = 100
CORE_HEALTHY_MS = 90_000
_POSITION = attrgetter("position")


def to_parcel(x: float, z: float) -> tuple[int, int]:
    return math.floor(x / PARCEL_SIZE), math.floor(z / PARCEL_SIZE)


@dataclass
class PeerInfo:
    address: str
    last_ping_ms: int
    position: tuple[float, float, float]

    def json(self) -> dict[str, Any]:
        x, y, z = self.position
        px, pz = to_parcel(x, z)
        return {
            "id": self.address,
            "address": self.address,
            "lastPing": self.last_ping_ms,
            "parcel": [px, pz],
            "position": [x, y, z],
        }


# POST /entities/active fetcher: pointers -> entity JSON list
SceneFetcher = Callable[[list[str]], Awaitable[list[dict[str, Any]]]]


class Stats:
    """Peers, islands, parcels and hot scenes as the reference stats service serves them.

    ``engine``: the core's engine when it runs in this process; the peers' positions
    are then the engine's (no copy here). Without one the positions come from the
    heartbeats.
    """

    def __init__(
        self,
        pubsub: PubSub,
        *,
        engine: Engine | None = None,
        heartbeat_timeout_ms: int = 60_000,
        content_url: str = "",
        hot_scenes_cache_s: float = 60.0,
        fetch_scenes: SceneFetcher | None = None,
        clock_ms: Callable[[], int] = now_ms,
    ) -> None:
        self.engine = engine
        self._peers: dict[str, PeerInfo] = {}  # without an engine: positions from heartbeats
        self._last_ping: dict[str, int] = {}  # with an engine: address -> last heartbeat
        self.islands = IslandStatus(())
        self.last_discovery: Discovery | None = None
        self.last_discovery_at_ms: int | None = None
        self.heartbeat_timeout_ms = heartbeat_timeout_ms
        self.content_url = content_url.rstrip("/")
        self.hot_scenes_cache_s = hot_scenes_cache_s
        self._fetch_scenes = fetch_scenes
        self._scene_cache: dict[str, tuple[float, dict[str, Any] | None]] = {}
        self._clock = clock_ms
        self._last_sweep = 0
        self._subs: list[Subscription] = [
            pubsub.subscribe_heartbeats(self._on_heartbeats),
            pubsub.subscribe("peer.*.disconnect", self._on_disconnect),
            pubsub.subscribe("engine.islands", self._on_islands),
            pubsub.subscribe("engine.discovery", self._on_discovery),
        ]

    def close(self) -> None:
        for s in self._subs:
            s.unsubscribe()
        self._subs.clear()

    # --- pub/sub handlers ----------------------------------------------------

    def _on_heartbeats(self, batch: HeartbeatBatch) -> None:
        now = self._clock()
        if self.engine is not None:  # the engine keeps the positions
            self._last_ping.update(zip(batch.addresses, repeat(now)))
            return
        pos = batch.positions.tolist()
        peers = self._peers
        for addr, p in zip(batch.addresses, pos, strict=True):
            info = peers.get(addr)
            if info is None:
                peers[addr] = PeerInfo(addr, now, (p[0], p[1], p[2]))
            else:
                info.last_ping_ms = now
                info.position = (p[0], p[1], p[2])

    def _on_disconnect(self, subject: str, _payload: object) -> None:
        addr = subject.split(".")[1]
        self._peers.pop(addr, None)
        self._last_ping.pop(addr, None)

    def _on_islands(self, _subject: str, status: IslandStatus) -> None:
        self.islands = status

    def _on_discovery(self, _subject: str, d: Discovery) -> None:
        self.last_discovery = d
        self.last_discovery_at_ms = self._clock()

    def sweep(self) -> int:
        """Forget peers silent for ``heartbeat_timeout_ms``; returns how many."""
        cutoff = self._clock() - self.heartbeat_timeout_ms
        if self.engine is not None:
            pings = self._last_ping
            gone = [a for a, t in pings.items() if t < cutoff]
            for a in gone:
                del pings[a]
            return len(gone)
        gone = [a for a, p in self._peers.items() if p.last_ping_ms < cutoff]
        for a in gone:
            del self._peers[a]
        return len(gone)

    def _fresh(self) -> None:
        now = self._clock()
        if now - self._last_sweep >= 1000:
            self._last_sweep = now
            self.sweep()

    # --- views ----------------------------------------------------------------

    @property
    def peers(self) -> dict[str, PeerInfo]:
        """Live peers by address (with an engine: a fresh view of the engine's peers)."""
        if self.engine is None:
            return self._peers
        addresses, xyz = self._engine_peers()
        pings = self._last_ping
        return {
            a: PeerInfo(a, pings[a], (x, y, z))
            for a, (x, y, z) in zip(addresses, xyz.tolist(), strict=True)
        }

    def positions(self) -> tuple[list[str], NDArray[np.float64]]:
        """Every live peer's address and position ((n, 3) float64, same order)."""
        if self.engine is None:
            peers = self._peers
            n = len(peers)
            # one C-level pass over the positions (no tuple per peer)
            flat = chain.from_iterable(map(_POSITION, peers.values()))
            return list(peers), np.fromiter(flat, dtype=np.float64, count=3 * n).reshape(n, 3)
        addresses, xyz = self._engine_peers()
        return addresses, xyz.astype(np.float64)

    def _engine_peers(self) -> tuple[list[str], NDArray[np.float32]]:
        """The engine's peers that heartbeated within the timeout, and their positions."""
        assert self.engine is not None
        snap = self.engine.snapshot()
        ids: list[str] = snap.peer_ids.tolist()
        pings = self._last_ping
        if len(pings) == len(ids) and all(map(pings.__contains__, ids)):
            return ids, snap.positions
        keep = [i for i, a in enumerate(ids) if a in pings]  # swept or gone, not expired yet
        return [ids[i] for i in keep], snap.positions[keep]

    def core_healthy(self) -> bool:
        if self.last_discovery is None:
            return False
        return self._clock() - self.last_discovery.current_time_ms < CORE_HEALTHY_MS

    def island_json(self, island_id: str) -> dict[str, Any] | None:
        for i in self.islands.islands:
            if i.id == island_id:
                return self._island(i)
        return None

    def _island(self, i: Any, known: dict[str, PeerInfo] | None = None) -> dict[str, Any]:
        known = self.peers if known is None else known
        peers = [known[p].json() for p in i.peers if p in known]
        return {
            "id": i.id,
            "peers": peers,
            "maxPeers": i.max_peers,
            "center": list(i.center),
            "radius": i.radius,
        }

    def parcels(self) -> dict[tuple[int, int], int]:
        counts: dict[tuple[int, int], int] = {}
        for p in self.peers.values():
            k = to_parcel(p.position[0], p.position[2])
            counts[k] = counts.get(k, 0) + 1
        return counts

    async def hot_scenes(self) -> list[dict[str, Any]]:
        counts = self.parcels()
        tiles = {f"{x},{y}": n for (x, y), n in counts.items()}
        if not self.content_url and self._fetch_scenes is None:
            out = [
                {
                    "id": tile,
                    "name": "",
                    "baseCoords": [x, y],
                    "usersTotalCount": n,
                    "parcels": [[x, y]],
                }
                for ((x, y), n), tile in zip(counts.items(), tiles, strict=True)
            ]
        else:
            out = []
            for scene in await self._scenes(list(tiles)):
                info = self._scene_info(scene)
                meta_parcels = ((scene.get("metadata") or {}).get("scene") or {}).get("parcels")
                info["usersTotalCount"] = sum(tiles.get(p, 0) for p in meta_parcels or [])
                out.append(info)
        out.sort(key=lambda s: -int(s["usersTotalCount"]))  # type: ignore[call-overload]
        return out[:HOT_SCENES_LIMIT]

    def _scene_info(self, scene: dict[str, Any]) -> dict[str, Any]:
        meta = scene.get("metadata") or {}
        display = meta.get("display") or {}
        sc = meta.get("scene") or {}

        def coords(s: str) -> list[int]:
            return [int(part, 10) for part in s.split(",")]

        info: dict[str, Any] = {
            "id": scene.get("id", ""),
            "name": display.get("title", ""),
            "baseCoords": coords(sc["base"]) if sc.get("base") else None,
            "usersTotalCount": 0,
            "parcels": [coords(p) for p in sc.get("parcels") or []],
        }
        thumb = display.get("navmapThumbnail")
        if thumb:
            if "://" not in thumb:  # a file of the entity: resolve to its content hash
                for c in scene.get("content") or []:
                    if c.get("file") == thumb:
                        thumb = f"{self.content_url}/contents/{c.get('hash')}"
                        break
            info["thumbnail"] = thumb
        if (meta.get("contact") or {}).get("name"):
            info["creator"] = meta["contact"]["name"]
        if (meta.get("source") or {}).get("projectId"):
            info["projectId"] = meta["source"]["projectId"]
        if display.get("description"):
            info["description"] = display["description"]
        return info

    async def _scenes(self, pointers: list[str]) -> list[dict[str, Any]]:
        """Scenes covering ``pointers``, each once; cached per pointer."""
        now = time.monotonic()
        missing = [
            p for p in pointers if p not in self._scene_cache or self._scene_cache[p][0] < now
        ]
        if missing:
            try:
                fetched = await self._fetch(missing)
            except Exception as e:
                log.warning("content server lookup failed", extra={"error": str(e)})
                raise HttpError(503, "content server unavailable", "content_unavailable") from e
            expiry = now + self.hot_scenes_cache_s
            for p in missing:
                self._scene_cache[p] = (expiry, None)
            for ent in fetched:
                for p in ent.get("pointers") or []:
                    self._scene_cache[p] = (expiry, ent)
        seen: set[str] = set()
        out = []
        for p in pointers:
            cached = self._scene_cache.get(p, (0.0, None))[1]
            if cached is not None and cached.get("id") not in seen:
                ent = cached
                seen.add(ent.get("id", ""))
                out.append(ent)
        return out

    async def _fetch(self, pointers: list[str]) -> list[dict[str, Any]]:
        if self._fetch_scenes is not None:
            return await self._fetch_scenes(pointers)
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=5)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.post(f"{self.content_url}/entities/active", json={"pointers": pointers}) as r,
        ):
            r.raise_for_status()
            data = await r.json()
        if not isinstance(data, list):
            raise ValueError("entities/active did not return a list")
        return [d for d in data if isinstance(d, dict)]

    # --- HTTP -------------------------------------------------------------------

    def routes(self, router: Router) -> None:
        for prefix in ("", "/comms"):
            router.add(prefix + "/peers", self._h_peers)
            router.add(prefix + "/peers/{id}", self._h_peer)
            router.add(prefix + "/islands", self._h_islands)
            router.add(prefix + "/islands/{id}", self._h_island)
            router.add(prefix + "/parcels", self._h_parcels)
        router.add("/hot-scenes", self._h_hot_scenes)
        router.add("/core-status", self._h_core_status)

    def _h_peers(self, req: Request) -> Response:
        self._fresh()
        ids = [i.lower() for i in req.args.get("id", [])]
        known = self.peers
        if ids:
            peers = [known[i].json() for i in ids if i in known]
        else:
            peers = [p.json() for p in known.values()]
        return json_response({"ok": True, "peers": peers})

    def _h_peer(self, req: Request) -> Response:
        self._fresh()
        p = self.peers.get(req.params["id"].lower())
        if p is None:
            return json_response({"ok": False, "peer": None}, 404)
        return json_response({"ok": True, "peer": p.json()})

    def _h_islands(self, req: Request) -> Response:
        self._fresh()
        known = self.peers
        return json_response(
            {"ok": True, "islands": [self._island(i, known) for i in self.islands.islands]}
        )

    def _h_island(self, req: Request) -> Response:
        self._fresh()
        island = self.island_json(req.params["id"])
        if island is None:
            return Response(404)
        return json_response(island)

    def _h_parcels(self, req: Request) -> Response:
        self._fresh()
        parcels = [
            {"peersCount": n, "parcel": {"x": x, "y": y}} for (x, y), n in self.parcels().items()
        ]
        return json_response({"parcels": parcels})

    async def _h_hot_scenes(self, req: Request) -> Response:
        self._fresh()
        return json_response(await self.hot_scenes())

    def _h_core_status(self, req: Request) -> Response:
        d = self.last_discovery
        return json_response(
            {"healthy": self.core_healthy(), "userCount": d.user_count if d is not None else 0}
        )


def stats_from_config(
    config: RealmConfig, pubsub: PubSub, *, engine: Engine | None = None
) -> Stats:
    """The stats a realm or ``dclcomms stats`` serves, timings from ``config``;
    ``engine``: the core's, when it runs in the same process."""
    return Stats(
        pubsub,
        engine=engine,
        heartbeat_timeout_ms=config.heartbeat_timeout_ms,
        content_url=config.content_url,
        hot_scenes_cache_s=config.hot_scenes_cache_s,
    )


__all__ = ["PeerInfo", "Stats", "stats_from_config", "to_parcel"]
