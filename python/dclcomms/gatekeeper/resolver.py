"""Owner-or-admin resolution (control-plane.md 1.5), pluggable.

A :class:`Scene` names what a request is about (a Genesis City scene of a realm, or
a world). A :class:`Resolver` answers the questions the gatekeeper cannot answer
from its own database:

* :meth:`Resolver.place_id`: the key scene bans and admins are stored under (the
  Places API id; the static table's ``id``; default the scene id);
* :meth:`Resolver.is_owner`: land or world-name owner, or an extended permission
  (operator, update operator/manager, approved-for-all, land lease; world
  ``deployment``/``streaming``);
* :meth:`Resolver.world_access`: may this wallet enter the world;
* :meth:`Resolver.world_scene_id`: the scene of a world named by its name;
* :meth:`Resolver.name_owner`: the wallet owning a Decentraland NAME (routes that
  take ``{"name"}`` / ``{"banned_name"}`` instead of an address);
* :meth:`Resolver.scene_operators`: every wallet with owner rights over the scene
  (owner, operators, managers, world deployers/streamers), listed by ``GET
  /scene-admin`` as admins that cannot be removed;
* :meth:`Resolver.display_names`: display names of wallets for listings.

Two implementations: :class:`StaticResolver` (a TOML table, for operators without
Decentraland's services and for tests) and :class:`HttpResolver` (lambdas, worlds
content server and Places API shapes). A lookup that cannot be answered raises
:class:`ResolverUnavailable`; the gatekeeper then answers 503 (fail closed).

:class:`OwnerOrAdmin` combines a resolver with the ``scene_admin`` rows: it is
the check every moderation route (and the server bridge's scene scopes) uses.
"""

from __future__ import annotations

import asyncio
import re
import time
import tomllib
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp

from dclcomms.errors import ConfigError, Error
from dclcomms.metrics import Registry

T = TypeVar("T")


class ResolverUnavailable(Error):
    """An ownership/permission lookup failed (service down, bad answer): HTTP 503."""


_NAME = re.compile(r"^[A-Za-z0-9]{1,15}$")


def normalize_name(name: Any) -> str | None:
    """A Decentraland NAME as the names API takes it (``alice``; ``alice.dcl.eth`` is
    the same name), or None when ``name`` cannot be one (1-15 letters and digits)."""
    if not isinstance(name, str):
        return None
    if name.lower().endswith(".dcl.eth"):
        name = name[: -len(".dcl.eth")]
    return name if _NAME.match(name) else None


@dataclass(frozen=True)
class Scene:
    """A scene as a signed request names it.

    ``realm``: the realm's name (Genesis City) or the world name (``*.eth``);
    ``world``: whether it is a world; ``parcel``: ``"x,y"`` when known.
    """

    realm: str
    scene_id: str
    parcel: str | None = None
    world: bool = False


_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")


def _lower_all(xs: Any) -> frozenset[str]:
    if not isinstance(xs, list) or not all(isinstance(x, str) for x in xs):
        raise ConfigError("expected a list of strings", code="bad_value")
    return frozenset(x.lower() for x in xs)


class Resolver(ABC):
    """What the gatekeeper asks about land, worlds and places."""

    @abstractmethod
    async def place_id(self, scene: Scene) -> str: ...

    @abstractmethod
    async def is_owner(self, scene: Scene, address: str) -> bool: ...

    @abstractmethod
    async def world_access(self, world: str, address: str) -> bool: ...

    async def world_scene_id(self, world: str) -> str | None:
        """The first scene of ``world`` (None when it has none)."""
        return None

    async def place_name(self, scene: Scene) -> str:
        return scene.realm if scene.world else f"{scene.realm}:{scene.scene_id}"

    async def name_owner(self, name: str) -> str | None:
        """The lowercase wallet owning the NAME ``name`` (already normalised by
        :func:`normalize_name`); None when no one owns it."""
        return None

    async def scene_operators(self, scene: Scene) -> list[str]:
        """Every lowercase wallet with owner rights over the scene, owner first."""
        return []

    async def display_names(self, addresses: list[str]) -> dict[str, str]:
        """address -> display name for those that have one (best effort: listings only)."""
        return {}

    async def close(self) -> None:
        return None


@dataclass(frozen=True)
class _Place:
    id: str
    name: str
    scene_ids: frozenset[str] = frozenset()
    parcels: frozenset[str] = frozenset()
    world: str | None = None
    owners: frozenset[str] = frozenset()


@dataclass(frozen=True)
class _World:
    name: str
    owner: str | None
    access: str = "unrestricted"  # or "allow-list"
    allowed: frozenset[str] = frozenset()
    deployers: frozenset[str] = frozenset()
    scene_id: str | None = None


@dataclass
class StaticResolver(Resolver):
    """Owners from a table (TOML)::

        [[places]]
        id = "place-1"                 # scene-ban key (default: the scene id)
        name = "Plaza"
        scene_ids = ["bafy..."]        # and/or
        parcels = ["0,0", "0,1"]       # and/or
        world = "name.eth"
        owners = ["0x..."]

        [[worlds]]
        name = "name.eth"
        owner = "0x..."
        access = "allow-list"          # or "unrestricted" (default)
        allowed = ["0x..."]
        deployers = ["0x..."]          # deployment/streaming permission = owner rights
        scene_id = "bafy..."           # what a world name sent as sceneId resolves to

        [names]                        # Decentraland NAMEs -> owner wallet
        alice = "0x..."

    Unknown scenes have no owner (only ``scene_admin`` rows and moderators act on
    them); unknown worlds are open to everyone; unknown names have no owner. A
    wallet's display name is the first NAME it owns in the table.
    """

    places: list[_Place] = field(default_factory=list)
    worlds: dict[str, _World] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)  # lowercase name -> address

    @classmethod
    def from_file(cls, path: str | Path) -> StaticResolver:
        try:
            doc = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as e:
            raise ConfigError(f"moderation file {path}: {e}", code="config_not_found") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(
                f"moderation file {path}: invalid TOML: {e}", code="bad_toml"
            ) from None
        return cls.from_dict(doc, where=str(path))

    @classmethod
    def from_dict(cls, doc: dict[str, Any], *, where: str = "table") -> StaticResolver:
        try:
            places = [
                _Place(
                    id=str(p.get("id") or (p.get("scene_ids") or [p.get("world", "")])[0]),
                    name=str(p.get("name") or p.get("id") or ""),
                    scene_ids=frozenset(p.get("scene_ids", [])),
                    parcels=frozenset(p.get("parcels", [])),
                    world=p["world"].lower() if p.get("world") else None,
                    owners=_lower_all(p.get("owners", [])),
                )
                for p in doc.get("places", [])
            ]
            worlds = {
                w["name"].lower(): _World(
                    name=w["name"].lower(),
                    owner=w["owner"].lower() if w.get("owner") else None,
                    access=str(w.get("access", "unrestricted")),
                    allowed=_lower_all(w.get("allowed", [])),
                    deployers=_lower_all(w.get("deployers", [])),
                    scene_id=w.get("scene_id"),
                )
                for w in doc.get("worlds", [])
            }
            names: dict[str, str] = {}
            raw_names = doc.get("names", {})
            if not isinstance(raw_names, dict):
                raise ConfigError("[names] must be a table of name = address", code="bad_value")
            for n, owner in raw_names.items():
                key = normalize_name(n)
                if key is None or not isinstance(owner, str) or not _ADDRESS.match(owner):
                    raise ConfigError(f"names: {n} = {owner!r}", code="bad_value")
                names[key.lower()] = owner.lower()
        except (KeyError, TypeError, AttributeError, IndexError, ConfigError) as e:
            raise ConfigError(
                f"moderation {where}: malformed entry: {e}", code="bad_value"
            ) from None
        return cls(places, worlds, names)

    def _place(self, scene: Scene) -> _Place | None:
        for p in self.places:
            if scene.world and p.world == scene.realm.lower():
                return p
            if scene.scene_id in p.scene_ids or (scene.parcel and scene.parcel in p.parcels):
                return p
        return None

    async def place_id(self, scene: Scene) -> str:
        p = self._place(scene)
        return p.id if p is not None else scene.scene_id

    async def place_name(self, scene: Scene) -> str:
        p = self._place(scene)
        return p.name if p is not None and p.name else await super().place_name(scene)

    async def is_owner(self, scene: Scene, address: str) -> bool:
        a = address.lower()
        p = self._place(scene)
        if p is not None and a in p.owners:
            return True
        if scene.world:
            w = self.worlds.get(scene.realm.lower())
            return w is not None and (a == w.owner or a in w.deployers)
        return False

    async def world_access(self, world: str, address: str) -> bool:
        w = self.worlds.get(world.lower())
        if w is None or w.access == "unrestricted":
            return True
        a = address.lower()
        return a == w.owner or a in w.allowed or a in w.deployers

    async def world_scene_id(self, world: str) -> str | None:
        w = self.worlds.get(world.lower())
        return w.scene_id if w is not None else None

    async def name_owner(self, name: str) -> str | None:
        return self.names.get(name.lower())

    async def scene_operators(self, scene: Scene) -> list[str]:
        out: list[str] = []
        if scene.world:
            w = self.worlds.get(scene.realm.lower())
            if w is not None:
                out += ([w.owner] if w.owner else []) + sorted(w.deployers)
        p = self._place(scene)
        if p is not None:
            out += sorted(p.owners)
        return list(dict.fromkeys(out))

    async def display_names(self, addresses: list[str]) -> dict[str, str]:
        wanted = {a.lower() for a in addresses}
        out: dict[str, str] = {}
        for name, owner in self.names.items():
            if owner in wanted and owner not in out:
                out[owner] = name
        return out


class HttpResolver(Resolver):
    """Decentraland's services, by their public API shapes:

    * land: ``GET {lambdas}/users/{address}/parcels/{x}/{y}/permissions`` →
      ``{"owner", "operator", "updateOperator", "updateManager", "approvedForAll",
      "lease"}`` (booleans; any true = owner rights);
    * worlds: ``GET {worlds}/world/{name}/permissions`` →
      ``{"owner", "permissions": {"access": {"type", "wallets"}, "deployment": {"wallets"},
      "streaming": {"wallets"}}}``; ``GET {worlds}/world/{name}/about`` →
      ``{"configurations": {"scenesUrn": ["urn:decentraland:entity:<id>?…"]}}``;
    * places: ``GET {places}/places?positions=x,y`` and ``{places}/worlds?names=<name>``
      → ``{"data": [{"id", "title"}]}`` (no answer: the scene id is the key);
    * names: ``GET {lambdas}/names/{name}/owner`` → ``{"owner": "0x…"}`` (404: no
      owner);
    * land operators: ``GET {lambdas}/parcels/{x}/{y}/operators`` → ``{"owner",
      "operator", "updateOperator", "updateManagers": [], "approvedForAll": []}``;
    * display names: ``POST {lambdas}/profiles`` ``{"ids": [...]}`` → ``[{"avatars":
      [{"ethAddress", "name", "hasClaimedName"}]}]`` (unclaimed: ``name#last4``).

    Answers are cached ``cache_s`` seconds (owners and permissions change rarely;
    ban decisions never use a cached "unknown"). Any failure raises
    :class:`ResolverUnavailable`.
    """

    def __init__(
        self,
        *,
        lambdas_url: str = "",
        worlds_url: str = "",
        places_url: str = "",
        timeout_s: float = 3.0,
        cache_s: float = 60.0,
        registry: Registry | None = None,
    ) -> None:
        self.lambdas_url = lambdas_url.rstrip("/")
        self.worlds_url = worlds_url.rstrip("/")
        self.places_url = places_url.rstrip("/")
        self.timeout_s = timeout_s
        self.cache_s = cache_s
        self._http: aiohttp.ClientSession | None = None
        self._cache: dict[str, tuple[float, Any]] = {}
        reg = registry or Registry()
        self.m_latency = reg.histogram(
            "dcl_gatekeeper_resolver_seconds",
            "owner/permission lookups to lambdas, worlds and places (seconds)",
            (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.m_failures = reg.counter(
            "dcl_gatekeeper_resolver_failures_total", "failed lookups, by service"
        )

    async def _get(self, service: str, url: str) -> Any:
        hit = self._cache.get(url)
        now = time.monotonic()
        if hit is not None and now - hit[0] < self.cache_s:
            return hit[1]
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s))
        t0 = time.perf_counter()
        try:
            async with self._http.get(url) as r:
                if r.status == 404:
                    body: Any = None
                else:
                    r.raise_for_status()
                    body = await r.json(content_type=None)
        except Exception as e:
            self.m_failures.inc(service=service)
            raise ResolverUnavailable(
                f"{service} lookup failed: {type(e).__name__}: {e}", code="resolver_unavailable"
            ) from None
        finally:
            self.m_latency.observe(time.perf_counter() - t0)
        self._cache[url] = (now, body)
        return body

    def _need(self, url: str, what: str) -> str:
        if not url:
            raise ResolverUnavailable(f"no {what} URL configured", code="resolver_unavailable")
        return url

    async def _world_permissions(self, world: str) -> dict[str, Any]:
        base = self._need(self.worlds_url, "worlds content server")
        body = await self._get(
            "worlds", f"{base}/world/{quote(world.lower(), safe='')}/permissions"
        )
        return body if isinstance(body, dict) else {}

    async def _places(self, scene: Scene) -> dict[str, Any] | None:
        if not self.places_url:
            return None
        if scene.world:
            url = f"{self.places_url}/worlds?names={quote(scene.realm.lower(), safe='')}"
        elif scene.parcel:
            url = f"{self.places_url}/places?positions={quote(scene.parcel, safe=',-')}"
        else:
            return None
        body = await self._get("places", url)
        data = body.get("data") if isinstance(body, dict) else None
        if isinstance(data, list) and data and isinstance(data[0], dict):
            return data[0]
        return None

    async def place_id(self, scene: Scene) -> str:
        p = await self._places(scene)
        return str(p["id"]) if p is not None and p.get("id") else scene.scene_id

    async def place_name(self, scene: Scene) -> str:
        p = await self._places(scene)
        if p is not None and p.get("title"):
            return str(p["title"])
        return await super().place_name(scene)

    async def is_owner(self, scene: Scene, address: str) -> bool:
        a = address.lower()
        if scene.world:
            perms = await self._world_permissions(scene.realm)
            if str(perms.get("owner", "")).lower() == a:
                return True
            p = perms.get("permissions") or {}
            for kind in ("deployment", "streaming"):
                wallets = (p.get(kind) or {}).get("wallets") or []
                if a in (str(w).lower() for w in wallets):
                    return True
            return False
        if not scene.parcel:
            return False
        x, _, y = scene.parcel.partition(",")
        base = self._need(self.lambdas_url, "lambdas")
        body = await self._get(
            "lambdas",
            f"{base}/users/{quote(a, safe='')}/parcels/{quote(x.strip(), safe='-')}/"
            f"{quote(y.strip(), safe='-')}/permissions",
        )
        if not isinstance(body, dict):
            return False
        keys = ("owner", "operator", "updateOperator", "updateManager", "approvedForAll", "lease")
        return any(body.get(k) is True for k in keys)

    async def world_access(self, world: str, address: str) -> bool:
        perms = await self._world_permissions(world)
        a = address.lower()
        if str(perms.get("owner", "")).lower() == a:
            return True
        access = (perms.get("permissions") or {}).get("access") or {}
        kind = access.get("type", "unrestricted")
        if kind == "unrestricted":
            return True
        if kind == "allow-list":
            return a in (str(w).lower() for w in access.get("wallets") or [])
        return False  # shared-secret / nft-ownership: not decidable here

    async def name_owner(self, name: str) -> str | None:
        base = self._need(self.lambdas_url, "lambdas")
        body = await self._get("lambdas", f"{base}/names/{quote(name, safe='')}/owner")
        if body is None:
            return None  # 404: no one owns it
        owner = body.get("owner") if isinstance(body, dict) else None
        if owner is None:
            return None
        if not isinstance(owner, str) or not _ADDRESS.match(owner):
            self.m_failures.inc(service="lambdas")
            raise ResolverUnavailable(
                f"lambdas: unexpected name owner answer {body!r:.200}",
                code="resolver_unavailable",
            )
        return owner.lower()

    async def scene_operators(self, scene: Scene) -> list[str]:
        out: list[str] = []

        def add(value: Any) -> None:
            values = value if isinstance(value, list) else [value]
            out.extend(v.lower() for v in values if isinstance(v, str) and _ADDRESS.match(v))

        if scene.world:
            perms = await self._world_permissions(scene.realm)
            add(perms.get("owner"))
            p = perms.get("permissions") or {}
            for kind in ("deployment", "streaming"):
                add((p.get(kind) or {}).get("wallets") or [])
        elif scene.parcel:
            x, _, y = scene.parcel.partition(",")
            base = self._need(self.lambdas_url, "lambdas")
            body = await self._get(
                "lambdas",
                f"{base}/parcels/{quote(x.strip(), safe='-')}/{quote(y.strip(), safe='-')}"
                "/operators",
            )
            if isinstance(body, dict):
                for k in (
                    "owner",
                    "operator",
                    "updateOperator",
                    "updateManagers",
                    "approvedForAll",
                ):
                    add(body.get(k))
        return list(dict.fromkeys(out))

    async def display_names(self, addresses: list[str]) -> dict[str, str]:
        if not addresses or not self.lambdas_url:
            return {}
        out: dict[str, str] = {}
        missing: list[str] = []
        now = time.monotonic()
        for a in addresses:
            hit = self._cache.get("profile:" + a)
            if hit is not None and now - hit[0] < self.cache_s:
                if hit[1]:
                    out[a] = hit[1]
            else:
                missing.append(a)
        if not missing:
            return out
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s))
        t0 = time.perf_counter()
        try:
            async with self._http.post(f"{self.lambdas_url}/profiles", json={"ids": missing}) as r:
                r.raise_for_status()
                profiles = await r.json(content_type=None)
        except Exception as e:  # the listing's caller decides (names are cosmetic there)
            self.m_failures.inc(service="profiles")
            raise ResolverUnavailable(
                f"profiles lookup failed: {type(e).__name__}: {e}", code="resolver_unavailable"
            ) from None
        finally:
            self.m_latency.observe(time.perf_counter() - t0)
        found: dict[str, str] = {}
        for prof in profiles if isinstance(profiles, list) else []:
            avatars = prof.get("avatars") if isinstance(prof, dict) else None
            if not isinstance(avatars, list) or not avatars or not isinstance(avatars[0], dict):
                continue
            av = avatars[0]
            addr, name = av.get("ethAddress"), av.get("name")
            if not isinstance(addr, str) or not isinstance(name, str) or not name:
                continue
            addr = addr.lower()
            found[addr] = name if av.get("hasClaimedName") is True else f"{name}#{addr[-4:]}"
        for a in missing:
            self._cache["profile:" + a] = (now, found.get(a, ""))
            if found.get(a):
                out[a] = found[a]
        return out

    async def world_scene_id(self, world: str) -> str | None:
        base = self._need(self.worlds_url, "worlds content server")
        body = await self._get("worlds", f"{base}/world/{quote(world.lower(), safe='')}/about")
        try:
            urn = body["configurations"]["scenesUrn"][0]
        except (TypeError, KeyError, IndexError):
            return None
        # urn:decentraland:entity:<id>?…
        return str(urn).split("?", 1)[0].rsplit(":", 1)[-1] or None

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None


class OwnerOrAdmin:
    """Owner (resolver) or an active ``scene_admin`` row of the scene's place.

    ``is_admin(place_id, address)`` reads the rows (a blocking store call, run in a
    thread). :meth:`check` raises :class:`ResolverUnavailable` when the resolver
    cannot answer and the rows do not already grant the right.
    """

    def __init__(self, resolver: Resolver, is_admin: Callable[[str, str], bool]) -> None:
        self.resolver = resolver
        self._is_admin = is_admin

    async def check(self, scene: Scene, address: str, *, place_id: str | None = None) -> bool:
        pid = place_id if place_id is not None else await self.resolver.place_id(scene)
        if await asyncio.to_thread(self._is_admin, pid, address.lower()):
            return True
        return await self.resolver.is_owner(scene, address)


__all__ = [
    "HttpResolver",
    "OwnerOrAdmin",
    "Resolver",
    "ResolverUnavailable",
    "Scene",
    "StaticResolver",
    "normalize_name",
]
