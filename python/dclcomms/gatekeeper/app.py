"""The gatekeeper's HTTP routes (control-plane.md 1.3-1.7) on a :class:`dclcomms.http.Router`.

:class:`Gatekeeper` holds the store, the scene-room backend, the resolver and the
signed-fetch verifier; :meth:`Gatekeeper.routes` adds its routes to a router, so
the same object serves the standalone ``dclcomms gatekeeper`` process and is
mounted in ``dclcomms realm`` on the realm's port. Errors are
``{"error": text, "code": code}`` with 400 invalid, 401 unauthorized/denied,
403 banned, 404 not found, 409 conflict, 503 dependency down.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import re
import secrets
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii
from typing import Any
from urllib.parse import quote, urlsplit

import dclcomms
from dclcomms.auth import SignedFetchVerifier, signed_fetch_status
from dclcomms.gatekeeper import tokens
from dclcomms.gatekeeper.config import GatekeeperConfig
from dclcomms.gatekeeper.resolver import (
    OwnerOrAdmin,
    Resolver,
    ResolverUnavailable,
    Scene,
    normalize_name,
)
from dclcomms.gatekeeper.rooms import SceneRooms
from dclcomms.gatekeeper.storage import Admission, Conflict, Snapshot, Store, now_ms
from dclcomms.http import HttpError, Request, Response, Router, json_response
from dclcomms.metrics import Registry

log = logging.getLogger("dclcomms.gatekeeper")

SCENE_SIGNER = "decentraland-kernel-scene"
SERVER_SIGNER = "dcl:authoritative-server"
EXPLORER_SIGNER = "dcl:explorer"
PREVIEW_REALMS = ("localpreview", "preview")
MAX_SPEAK_REQUESTS = 100
WEBHOOK_REFRESH_S = 60.0
#: the in-memory snapshot answers the connector's ban checks while younger than this; an
#: older one (the database unreachable that long) sends them to the database (archipelago.md
#: 1.5: no verdict younger than 10 min and no answer -> close 1013)
SNAPSHOT_TRUST_S = 600.0
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_TOKEN_RE = re.compile(r"(access_token=|\"token\":\s*\")[A-Za-z0-9._-]+")


def redact_tokens(text: str) -> str:
    """Log-safe text: JWTs after ``access_token=`` / ``"token":`` replaced by ``***``."""
    return _TOKEN_RE.sub(lambda m: m.group(1) + "***", text)


class RedactTokens(logging.Filter):
    """Scrubs tokens from every record of the gatekeeper's loggers (message and extras)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact_tokens(record.msg)
        for k, v in list(record.__dict__.items()):
            if isinstance(v, str) and ("token" in v or "eyJ" in v):
                record.__dict__[k] = redact_tokens(v)
        return True


log.addFilter(RedactTokens())


def _iso(ms: int) -> str:
    return (
        datetime.fromtimestamp(ms / 1000, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def _no_content() -> Response:
    return Response(204, b"", {})


def _body(req: Request) -> dict[str, Any]:
    if not req.body:
        return {}
    try:
        doc = json.loads(req.body)
    except (ValueError, UnicodeDecodeError):
        raise HttpError(400, "body is not JSON", "bad_json") from None
    if not isinstance(doc, dict):
        raise HttpError(400, "body must be a JSON object", "bad_json")
    return doc


def _address(value: Any, what: str) -> str:
    if not isinstance(value, str) or not _ADDRESS.match(value):
        raise HttpError(400, f"{what} must be a 0x address", "bad_address")
    return value.lower()


@dataclass(frozen=True)
class Signed:
    """A verified signed fetch: the signer (lowercase) and the metadata."""

    address: str
    metadata: dict[str, Any]


class RoomState:
    """Per-room gatekeeper state kept in memory (metadata writes are serialised)."""

    def __init__(self, room: str, scene: Scene, place_id: str) -> None:
        self.room = room
        self.scene = scene
        self.place_id = place_id
        self.lock = asyncio.Lock()
        self.speak_requests: deque[str] = deque(maxlen=MAX_SPEAK_REQUESTS)
        self.refreshed_at = 0.0
        self.metadata: dict[str, Any] = {}
        #: the resolver's owner-rights wallets at the last successful lookup
        self.operators: list[str] = []


class Gatekeeper:
    def __init__(
        self,
        config: GatekeeperConfig,
        store: Store,
        rooms: SceneRooms,
        resolver: Resolver,
        *,
        registry: Registry | None = None,
        deny_list: Callable[[], Collection[str]] | None = None,
        on_platform_ban: Callable[[str], Awaitable[None] | None] | None = None,
        on_platform_unban: Callable[[str], Awaitable[None] | None] | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.rooms = rooms
        self.resolver = resolver
        self.owner_or_admin = OwnerOrAdmin(resolver, store.is_scene_admin)
        self.registry = registry if registry is not None else Registry()
        self.deny_list = deny_list or (lambda: ())
        self.on_platform_ban = on_platform_ban
        self.on_platform_unban = on_platform_unban
        self.verifier = SignedFetchVerifier(
            window_ms=config.max_age_ms, max_future_ms=config.max_future_ms
        )
        self.base_path = urlsplit(config.http_base_url).path.rstrip("/")
        self.room_states: dict[str, RoomState] = {}
        self._stream_seq = 0
        self._devices: dict[str, str] = {}  # address -> last device id recorded
        # In-memory copy of bans, moderated rooms and roles for token requests: reloaded
        # after every write of this process, when the database's moderation change
        # counter moves (writes of other processes sharing the database, polled every
        # change_poll_s) and every snapshot_interval_s.
        self.snapshot: Snapshot | None = None
        self.snapshot_at = 0.0  # time.monotonic() of the last successful load
        self.snapshot_interval_s = 5.0
        self.change_poll_s = config.change_poll_ms / 1000
        self._snapshot_lock = asyncio.Lock()
        self._webhook: Any = None
        reg = self.registry
        self.m_requests = reg.counter(
            "dcl_gatekeeper_requests_total", "gatekeeper requests by route and status"
        )
        self.m_tokens = reg.counter(
            "dcl_gatekeeper_tokens_total", "scene-room tokens minted, by kind and transport"
        )
        self.m_bans = reg.counter(
            "dcl_gatekeeper_bans_total", "bans and unbans, by kind and action"
        )
        self.m_kicks = reg.counter(
            "dcl_gatekeeper_kicks_total", "participants removed from rooms by bans, by kind"
        )
        self.m_room_errors = reg.counter(
            "dcl_gatekeeper_room_service_errors_total",
            "failed room-service actions (kick, metadata, permissions), by action",
        )
        self.m_latency = reg.histogram(
            "dcl_gatekeeper_request_seconds",
            "gatekeeper request latency (seconds)",
            (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1),
        )

    # --- plumbing -------------------------------------------------------------------

    def routes(self, router: Router, *, status: bool = True) -> None:
        """Adds every route; ``status=False`` leaves ``/status`` to the embedder."""
        add = self._add(router)
        add("/ping", "ping", self.h_ping)
        if status:
            add("/status", "status", self.h_status)
        add("/get-scene-adapter", "get-scene-adapter", self.h_get_scene_adapter, ("POST",))
        add(
            "/get-server-scene-adapter",
            "get-server-scene-adapter",
            self.h_get_server_scene_adapter,
            ("POST",),
        )
        add("/users/{address}/bans", "user-bans", self.h_user_bans, ("GET", "POST", "DELETE"))
        add("/users/{address}/warnings", "user-warnings", self.h_user_warnings, ("GET", "POST"))
        add("/bans", "bans", self.h_bans)
        add("/scene-admin", "scene-admin", self.h_scene_admin, ("GET", "POST", "DELETE"))
        add("/scene-bans", "scene-bans", self.h_scene_bans, ("GET", "POST", "DELETE"))
        add("/scene-bans/addresses", "scene-bans", self.h_scene_ban_addresses)
        add("/livekit-webhook", "livekit-webhook", self.h_webhook, ("POST",))
        add("/cast/generate-stream-link", "cast", self.h_cast_generate, ("POST",))
        add("/cast/stream-info/{key}", "cast", self.h_cast_info)
        add("/cast/streamer-token", "cast", self.h_cast_streamer, ("POST",))
        add("/cast/watcher-token", "cast", self.h_cast_watcher, ("POST",))
        add("/cast/presenters", "cast", self.h_cast_presenters, ("GET", "POST", "DELETE"))
        add("/scene-rooms/moderation", "speakers", self.h_moderation, ("PUT",))
        add("/scene-rooms/speak-requests", "speakers", self.h_speak_request, ("POST",))
        add("/scene-rooms/speakers", "speakers", self.h_speakers, ("POST", "DELETE"))
        add("/scene-rooms/{room}/metadata", "room-metadata", self.h_room_metadata)

    def _add(self, router: Router) -> Callable[..., None]:
        def add(
            path: str,
            name: str,
            handler: Callable[[Request], Response | Awaitable[Response]],
            methods: tuple[str, ...] = ("GET",),
        ) -> None:
            def wrapped(req: Request) -> Response | Awaitable[Response]:
                # A handler answers at once (a Response) or gives an awaitable for what
                # waits (I/O); both are counted alike.
                t0 = time.perf_counter()
                try:
                    result = handler(req)
                    if not isinstance(result, Response):
                        return self._counted(name, t0, result)
                    resp = result
                except (HttpError, ResolverUnavailable) as e:
                    resp = self._error_response(name, e)
                self._count(name, t0, resp)
                return resp

            router.add(path, wrapped, methods)

        return add

    async def _counted(self, name: str, t0: float, pending: Awaitable[Response]) -> Response:
        try:
            resp = await pending
        except (HttpError, ResolverUnavailable) as e:
            resp = self._error_response(name, e)
        self._count(name, t0, resp)
        return resp

    @staticmethod
    def _error_response(name: str, e: HttpError | ResolverUnavailable) -> Response:
        if isinstance(e, HttpError):
            return e.response()
        log.warning("resolver unavailable", extra={"route": name, "error": str(e)})
        return HttpError(503, str(e), e.code).response()

    def _count(self, name: str, t0: float, resp: Response) -> None:
        self.m_requests.inc(route=name, status=str(resp.status))
        self.m_latency.observe(time.perf_counter() - t0)

    async def close(self) -> None:
        await self.resolver.close()
        await self.rooms.close()

    async def reload(self) -> set[str]:
        """Re-read the in-memory snapshot and act on what changed since the previous one:
        the newly platform-banned are kicked everywhere (scene rooms and, through
        ``on_platform_ban``, the connector), the newly scene-banned from the rooms of
        their place, lifted bans unbar, and rooms whose scene bans, admins, roles or
        moderation changed get fresh metadata. Called after
        every write of this process and when the database's change counter moves (a
        write of another process, e.g. ``dclcomms gatekeeper ban``), so each change is
        acted on once, by whichever reload sees it first. Returns the rooms whose
        metadata it refreshed."""
        async with self._snapshot_lock:
            old = self.snapshot
            new: Snapshot = await self._db(self.store.snapshot)
            self.snapshot, self.snapshot_at = new, time.monotonic()
        if old is None:
            return set()
        return await self._apply_changes(old, new)

    async def _apply_changes(self, old: Snapshot, new: Snapshot) -> set[str]:
        for address in sorted(new.platform.keys() - old.platform.keys()):
            await self.kick_platform_banned(address)
        for address in sorted(old.platform.keys() - new.platform.keys()):  # lifted, expired
            await self._room_call("unbar", self.rooms.unbar(None, address))
            if self.on_platform_unban is not None:
                r = self.on_platform_unban(address)
                if asyncio.iscoroutine(r):
                    await r
        added, lifted = new.scene - old.scene, old.scene - new.scene
        changed_places = {place for place, _ in added | lifted | (old.admins ^ new.admins)}
        changed_rooms = {key[0] for key, _ in old.roles.items() ^ new.roles.items()}
        changed_rooms |= old.moderated ^ new.moderated
        refreshed: set[str] = set()
        for st in list(self.room_states.values()):
            if st.place_id not in changed_places and st.room not in changed_rooms:
                continue
            for place, address in sorted(added):
                if place == st.place_id:
                    self.m_kicks.inc(kind="scene")
                    await self._room_call(
                        "kick", self.rooms.kick(st.room, address, "banned from this scene")
                    )
            for place, address in sorted(lifted):
                if place == st.place_id:
                    await self._room_call("unbar", self.rooms.unbar(st.room, address))
            await self.refresh_metadata(st, reload=False)
            refreshed.add(st.room)
        return refreshed

    async def run(self, stop: asyncio.Event) -> None:
        """Background work: poll the database's moderation change counter every
        ``change_poll_s`` and apply what other processes wrote (a ban from the shell kicks
        within about that long); a full snapshot reload at least every
        ``snapshot_interval_s``. A failed poll or reload keeps the last snapshot."""
        last_full = time.monotonic()
        last_error, last_logged = "", 0.0
        while not stop.is_set():
            try:
                version = await self._db(self.store.change_version)
                snap = self.snapshot
                stale = time.monotonic() - last_full >= self.snapshot_interval_s
                if snap is None or version != snap.version or stale:
                    await self.reload()
                    last_full = time.monotonic()
                last_error = ""
            except Exception as e:  # the database away: logged when new, else every 30 s
                now = time.monotonic()
                if repr(e) != last_error or now - last_logged >= 30.0:
                    log.warning("snapshot reload failed", extra={"error": repr(e)})
                    last_error, last_logged = repr(e), now
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.change_poll_s)

    async def _admission(self, address: str, place_id: str, room: str) -> Admission:
        snap = self.snapshot
        if snap is not None:
            return snap.admission(address, place_id, room, now_ms())
        adm: Admission = await self._db(self.store.admission, address, place_id, room)
        return adm

    async def _platform_banned(self, address: str) -> bool:
        snap = self.snapshot
        if snap is not None:
            exp = snap.platform.get(address, 0)
            return exp is None or exp > now_ms()
        return await self._db(self.store.platform_ban, address) is not None

    async def _room_call(self, what: str, coro: Awaitable[None]) -> None:
        """A room-service action after the state change is stored: a failure (LiveKit
        down) is logged and counted, the request still succeeds; the next token or
        metadata refresh carries the change."""
        try:
            await coro
        except Exception as e:
            self.m_room_errors.inc(action=what)
            log.warning("room service call failed", extra={"action": what, "error": repr(e)})

    async def _db(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def signed(self, req: Request, *, signers: Collection[str] | None = None) -> Signed:
        """Verify the signed fetch (C++ chain check, window, replay cache) or raise 400/401;
        ``signers``: the metadata ``signer`` values accepted (None: not checked)."""
        return self.verify_signed(req, signers=signers)

    def verify_signed(self, req: Request, *, signers: Collection[str] | None = None) -> Signed:
        """:meth:`signed` without waiting: the C++ chain check is ~0.1 ms with the
        delegation cache, less than a thread hop costs, so it runs inline."""
        path = self.base_path + req.path.split("?", 1)[0]
        result = self.verifier.verify(req.method.upper(), path, req.headers, body=req.body)
        if not result.ok or result.signer is None:
            raise HttpError(
                signed_fetch_status(result.code),
                f"Invalid signed fetch: {result.message}",
                result.code,
            )
        metadata = json.loads(req.header("x-identity-metadata") or "{}")
        if signers is not None and metadata.get("signer") not in signers:
            raise HttpError(
                401,
                f"signer {metadata.get('signer')!r} may not call this route "
                f"(expected {' or '.join(sorted(signers))})",
                "wrong_signer",
            )
        return Signed(result.signer.lower(), metadata)

    def _scene_from_scene_metadata(self, md: Mapping[str, Any]) -> Scene:
        realm = md.get("realm")
        scene_id = md.get("sceneId")
        if not isinstance(realm, dict) or not isinstance(realm.get("serverName"), str):
            raise HttpError(400, "metadata.realm.serverName is required", "missing_metadata")
        if not isinstance(scene_id, str) or not scene_id:
            raise HttpError(400, "metadata.sceneId is required", "missing_metadata")
        hostname = str(realm.get("hostname") or "")
        parcel = md.get("parcel") if isinstance(md.get("parcel"), str) else None
        return Scene(
            realm=realm["serverName"],
            scene_id=scene_id,
            parcel=parcel,
            world="worlds-content-server" in hostname,
        )

    def _scene_from_explorer_metadata(self, md: Mapping[str, Any]) -> Scene:
        if "realm" in md and "realmName" not in md:
            return self._scene_from_scene_metadata(md)
        realm = md.get("realmName")
        scene_id = md.get("sceneId")
        if not isinstance(realm, str) or not realm:
            raise HttpError(401, "metadata.realmName is required", "missing_metadata")
        if not isinstance(scene_id, str) or not scene_id:
            raise HttpError(400, "metadata.sceneId is required", "missing_metadata")
        parcel = md.get("parcel") if isinstance(md.get("parcel"), str) else None
        return Scene(realm=realm, scene_id=scene_id, parcel=parcel, world=realm.endswith(".eth"))

    def room_name(self, scene: Scene) -> str:
        """control-plane.md 1.4: Genesis City ``prefix + realm:sceneId``, worlds
        ``prefix + world-sceneId``."""
        if scene.world:
            return f"{self.config.world_room_prefix}{scene.realm}-{scene.scene_id}"
        return f"{self.config.scene_room_prefix}{scene.realm}:{scene.scene_id}"

    def _is_preview(self, scene: Scene) -> bool:
        return self.config.allow_local_preview and scene.realm in PREVIEW_REALMS

    async def _state(self, scene: Scene) -> RoomState:
        room = self.room_name(scene)
        st = self.room_states.get(room)
        if st is None:
            place_id = await self.resolver.place_id(scene)
            st = self.room_states.setdefault(room, RoomState(room, scene, place_id))
        return st

    async def _require_owner_or_admin(self, scene: Scene, address: str, place_id: str) -> None:
        if address in self.config.moderator_list:
            return
        if not await self.owner_or_admin.check(scene, address, place_id=place_id):
            raise HttpError(401, "Only the scene's owner or admins may do this", "not_admin")

    # --- core routes --------------------------------------------------------------------

    async def h_ping(self, req: Request) -> Response:
        return Response(200, req.path.encode(), {"Content-Type": "text/plain; charset=utf-8"})

    async def h_status(self, _req: Request) -> Response:
        return json_response(
            {
                "version": dclcomms.__version__,
                "currentTime": now_ms(),
                "commitHash": self.config.commit_hash,
            }
        )

    def h_get_scene_adapter(self, req: Request) -> Response | Awaitable[Response]:
        """control-plane.md 1.3, checks answered in the spec's order. The common case
        (the scene id given, its room known, bans and roles in the in-memory snapshot,
        no resolver or database call to make) is answered at once: one verification,
        dictionary lookups and a token; anything else continues in
        :meth:`_scene_adapter`, which answers every case."""
        signed = self.verify_signed(req)
        resp = self._scene_adapter_now(signed)
        return resp if resp is not None else self._scene_adapter(signed)

    def _scene_adapter_now(self, signed: Signed) -> Response | None:
        """The answer of :meth:`_scene_adapter` when no step of it waits, else None
        (before any state changed: the caller then runs :meth:`_scene_adapter`)."""
        md = signed.metadata
        realm = md.get("realmName")
        scene_id = md.get("sceneId")
        snap = self.snapshot
        if (
            snap is None
            or not isinstance(realm, str)
            or not realm
            or realm.endswith(".eth")  # worlds: access list and world names via the resolver
            or (self.config.allow_local_preview and realm in PREVIEW_REALMS)
            or not isinstance(scene_id, str)
            or not scene_id
        ):
            return None
        address = signed.address
        device = md.get("deviceIdentifier")
        if isinstance(device, str) and device and self._devices.get(address) != device:
            return None  # a connection-info row to write
        parcel = md.get("parcel") if isinstance(md.get("parcel"), str) else None
        scene = Scene(realm=realm, scene_id=scene_id, parcel=parcel, world=False)
        st = self.room_states.get(self.room_name(scene))
        if st is None:
            return None  # the place id to resolve
        adm = snap.admission(address, st.place_id, st.room, now_ms())
        if adm.platform_ban is not None:
            raise HttpError(403, "User is banned from the platform", "platform_banned")
        if address in self.deny_list():
            raise HttpError(401, "Access denied, deny-listed wallet", "deny_listed")
        if adm.scene_banned:
            raise HttpError(403, "User is banned from this scene", "scene_banned")
        sources: tuple[str, ...] = tokens.MICROPHONE
        if "presenter" in adm.roles:
            sources = tokens.STREAMER_SOURCES
        elif (
            adm.moderated
            and "speaker" not in adm.roles
            and address not in self.config.moderator_list
        ):
            return None  # the owner-or-admin check
        return self._adapter(scene, address, "explorer", sources=sources)

    async def _scene_adapter(self, signed: Signed) -> Response:
        md = signed.metadata
        if not isinstance(md.get("realmName"), str) or not md["realmName"]:
            raise HttpError(401, "metadata.realmName is required", "missing_metadata")
        address = signed.address
        realm: str = md["realmName"]
        preview = self.config.allow_local_preview and realm in PREVIEW_REALMS
        scene_id = md.get("sceneId")
        world = realm.endswith(".eth")
        named_world = (  # a world name sent as sceneId: resolved after the ban checks
            world and isinstance(scene_id, str) and scene_id.lower() == realm.lower()
        )
        parcel = md.get("parcel") if isinstance(md.get("parcel"), str) else None
        st: RoomState | None = None
        adm = None
        if not preview:
            if isinstance(scene_id, str) and scene_id and not named_world:
                st = await self._state(Scene(realm, scene_id, parcel, world))
                adm = await self._admission(address, st.place_id, st.room)
                banned = adm.platform_ban is not None
            else:
                banned = await self._platform_banned(address)
            if banned:
                raise HttpError(403, "User is banned from the platform", "platform_banned")
            if address in self.deny_list():
                raise HttpError(401, "Access denied, deny-listed wallet", "deny_listed")
        if not isinstance(scene_id, str) or not scene_id:
            raise HttpError(400, "metadata.sceneId is required", "missing_metadata")
        if named_world:
            resolved = await self.resolver.world_scene_id(realm)
            if not resolved:
                raise HttpError(400, f"world {realm} has no scene", "unknown_world")
            scene_id = resolved
        scene = Scene(realm=realm, scene_id=scene_id, parcel=parcel, world=world)
        if preview:
            return self._adapter(scene, address, "explorer")
        if st is None:
            st = await self._state(scene)
            adm = await self._admission(address, st.place_id, st.room)
        assert adm is not None
        if adm.platform_ban is not None:
            raise HttpError(403, "User is banned from the platform", "platform_banned")
        if adm.scene_banned:
            raise HttpError(403, "User is banned from this scene", "scene_banned")
        if world and not await self.resolver.world_access(realm, address):
            raise HttpError(401, "Access denied to this world", "world_access_denied")
        sources: tuple[str, ...] = tokens.MICROPHONE
        if "presenter" in adm.roles:
            sources = tokens.STREAMER_SOURCES
        elif adm.moderated and "speaker" not in adm.roles:
            is_admin = address in self.config.moderator_list or await self.owner_or_admin.check(
                scene, address, place_id=st.place_id
            )
            sources = tokens.MICROPHONE if is_admin else ()
        resp = self._adapter(scene, address, "explorer", sources=sources)
        device = md.get("deviceIdentifier")
        if isinstance(device, str) and device and self._devices.get(address) != device:
            # player_connection_info: written when the device changes, not per request
            await self._db(self.store.record_connection, address, device_id=device[:200])
            if len(self._devices) >= 100_000:
                self._devices.clear()
            self._devices[address] = device
        return resp

    def _adapter(
        self,
        scene: Scene,
        identity: str,
        kind: str,
        *,
        sources: tuple[str, ...] = tokens.MICROPHONE,
        room: str | None = None,
    ) -> Response:
        room = room or self.room_name(scene)
        conn = self.rooms.connection_string(
            room, identity, sources=sources, ttl_s=self.config.token_ttl_s
        )
        self.m_tokens.inc(kind=kind, transport=self.rooms.kind)
        # The bytes json_response gives, without building an encoder per token.
        body = b'{"adapter":' + encode_basestring_ascii(conn).encode() + b"}"
        return Response(200, body, {"Content-Type": "application/json"})

    async def h_get_server_scene_adapter(self, req: Request) -> Response:
        signed = await self.signed(req, signers=(SCENE_SIGNER, SERVER_SIGNER))
        expected = self.config.authoritative_server_address.lower()
        if not expected or signed.address != expected:
            raise HttpError(401, "Only the authoritative server may call this", "not_authoritative")
        scene = self._scene_from_scene_metadata(signed.metadata)
        room = f"preview-{scene.scene_id}" if self._is_preview(scene) else self.room_name(scene)
        return self._adapter(scene, "authoritative-server", "server", room=room)

    # --- platform bans (service routes) ------------------------------------------------

    async def _moderator(self, req: Request) -> str:
        """The bearer token or a signed fetch from an allow-listed wallet; else 401."""
        auth = req.header("authorization") or ""
        if auth.lower().startswith("bearer ") and self.config.auth_token:
            if hmac.compare_digest(auth[7:].strip().encode(), self.config.auth_token.encode()):
                return "operator"
            raise HttpError(401, "Invalid bearer token", "bad_token")
        if req.header("x-identity-auth-chain-0") is not None:
            signed = await self.signed(req)
            if signed.address in self.config.moderator_list:
                return signed.address
            raise HttpError(401, "This wallet is not a moderator", "not_moderator")
        raise HttpError(401, "Moderator credentials required", "unauthorized")

    async def h_user_bans(self, req: Request) -> Response:
        address = _address(req.params["address"], "address")
        if req.method.upper() in ("GET", "HEAD"):
            ban = await self._db(self.store.platform_ban, address)
            data: dict[str, Any] = {"isBanned": ban is not None}
            if ban is not None:
                data["ban"] = ban.to_json()
            return json_response({"data": data})
        by = await self._moderator(req)
        if req.method.upper() == "DELETE":
            if not await self._db(self.store.lift_platform_ban, address, lifted_by=by):
                raise HttpError(404, f"{address} is not banned", "not_banned")
            self.m_bans.inc(kind="platform", action="lift")
            if self.snapshot is not None:
                await self.reload()
            return _no_content()
        body = _body(req)
        reason = body.get("reason")
        if not isinstance(reason, str) or not reason:
            raise HttpError(400, "reason is required", "bad_request")
        duration = body.get("duration")
        if duration is not None and (
            isinstance(duration, bool) or not isinstance(duration, int) or duration <= 0
        ):
            raise HttpError(400, "duration must be a positive number of ms", "bad_request")
        custom = body.get("customMessage")
        if custom is not None and not isinstance(custom, str):
            raise HttpError(400, "customMessage must be a string", "bad_request")
        info = await self._db(self.store.connection_info, address)
        try:
            ban = await self._db(
                self.store.add_platform_ban,
                address,
                banned_by=by,
                reason=reason,
                duration_ms=duration,
                custom_message=custom,
                device_id=info.get("device_id") if info else None,
            )
        except Conflict:
            raise HttpError(409, f"{address} is already banned", "already_banned") from None
        self.m_bans.inc(kind="platform", action="ban")
        if self.snapshot is not None:
            await self.reload()  # kicks the newly banned (once, whichever reload sees it)
        else:
            await self.kick_platform_banned(address)
        return json_response({"data": ban.to_json()}, 201)

    async def kick_platform_banned(self, address: str) -> None:
        """Closes every session of address at once: scene rooms and (hook) the connector."""
        self.m_kicks.inc(kind="platform")
        if self.on_platform_ban is not None:
            r = self.on_platform_ban(address)
            if asyncio.iscoroutine(r):
                await r
        await self._room_call(
            "kick", self.rooms.kick_everywhere(address, "banned from the platform")
        )

    async def h_user_warnings(self, req: Request) -> Response:
        address = _address(req.params["address"], "address")
        by = await self._moderator(req)
        if req.method.upper() in ("GET", "HEAD"):
            ws = await self._db(self.store.warnings, address)
            return json_response(
                {
                    "data": [
                        {
                            "warnedAddress": w.warned_address,
                            "warnedBy": w.warned_by,
                            "reason": w.reason,
                            "warnedAt": w.warned_at,
                        }
                        for w in ws
                    ]
                }
            )
        body = _body(req)
        reason = body.get("reason")
        if not isinstance(reason, str) or not reason:
            raise HttpError(400, "reason is required", "bad_request")
        w = await self._db(self.store.add_warning, address, warned_by=by, reason=reason)
        return json_response(
            {
                "data": {
                    "warnedAddress": w.warned_address,
                    "reason": w.reason,
                    "warnedAt": w.warned_at,
                }
            },
            201,
        )

    async def h_bans(self, req: Request) -> Response:
        await self._moderator(req)
        bans = await self._db(self.store.platform_bans)
        return json_response({"data": [b.to_json() for b in bans]})

    async def is_platform_banned(self, address: str) -> bool:
        """For the realm's connector (in-process checks at handshake and every sweep): the
        in-memory snapshot while it is fresh (the change-counter poll keeps it current and
        kicks what it finds newly banned itself), so sessions cost no database round trip;
        the database when the snapshot is older than ``SNAPSHOT_TRUST_S`` (a failing
        lookup raises: the connector closes 1013, fail closed)."""
        a = address.lower()
        snap = self.snapshot
        if snap is not None and time.monotonic() - self.snapshot_at < SNAPSHOT_TRUST_S:
            exp = snap.platform.get(a, 0)
            return exp is None or exp > now_ms()
        return await self._db(self.store.platform_ban, a) is not None

    # --- scene admins and scene bans ---------------------------------------------------

    async def _scene_request(self, req: Request) -> tuple[Signed, Scene, RoomState]:
        signed = await self.signed(req, signers=(SCENE_SIGNER, SERVER_SIGNER))
        scene = self._scene_from_scene_metadata(signed.metadata)
        return signed, scene, await self._state(scene)

    async def _target(self, body: Mapping[str, Any], address_key: str, name_key: str) -> str:
        """The wallet a moderation body names: ``address_key`` (a 0x address) or else
        ``name_key``, a Decentraland NAME resolved to its owner through the resolver
        (400 ``bad_name``, 404 ``name_not_found``, 503 when the lookup fails)."""
        if address_key in body or name_key not in body:
            return _address(body.get(address_key), address_key)
        name = normalize_name(body[name_key])
        if name is None:
            raise HttpError(
                400, f"{name_key} must be a Decentraland NAME (1-15 letters, digits)", "bad_name"
            )
        owner = await self.resolver.name_owner(name)
        if owner is None:
            raise HttpError(404, f"No one owns the name {name}", "name_not_found")
        return owner

    async def h_scene_admin(self, req: Request) -> Response:
        signed, scene, st = await self._scene_request(req)
        await self._require_owner_or_admin(scene, signed.address, st.place_id)
        method = req.method.upper()
        if method in ("GET", "HEAD"):
            return json_response(await self._list_admins(req, scene, st))
        body = _body(req)
        admin = await self._target(body, "admin", "name")
        if method == "POST":
            if admin in await self.resolver.scene_operators(scene) or await self.resolver.is_owner(
                scene, admin
            ):
                raise HttpError(
                    400, f"{admin} has owner rights over this scene already", "already_owner"
                )
            if await self._db(self.store.is_scene_banned, st.place_id, admin):
                raise HttpError(
                    400, f"{admin} is banned from this scene: lift the ban first", "banned_admin"
                )
            if not await self._db(
                self.store.add_scene_admin, st.place_id, admin, added_by=signed.address
            ):
                raise HttpError(409, f"{admin} is already an admin", "already_admin")
        elif not await self._db(self.store.remove_scene_admin, st.place_id, admin):
            if admin in await self.resolver.scene_operators(scene):
                raise HttpError(
                    400,
                    f"{admin} has owner rights from the land or world, not from this list",
                    "cannot_remove_owner",
                )
            raise HttpError(404, f"{admin} is not an admin", "not_admin_row")
        await self.refresh_metadata(st)
        return _no_content()

    async def _list_admins(self, req: Request, scene: Scene, st: RoomState) -> list[dict[str, Any]]:
        """control-plane.md 1.5: the ``scene_admin`` rows (removable) and every wallet the
        resolver gives owner rights over the scene (owner, operators, managers, world
        deployers and streamers; not removable here), each with its display name.
        ``?admin=0x…`` keeps that wallet only."""
        only = req.args.get("admin", [None])[0]
        if only is not None:
            only = _address(only, "admin")
        rows = await self._db(self.store.scene_admins, st.place_id)
        operators = await self.resolver.scene_operators(scene)
        listed = [a.admin for a in rows] + [
            o for o in operators if o not in {a.admin for a in rows}
        ]
        if only is not None:
            listed = [a for a in listed if a == only]
        names = await self._display_names(listed)
        fixed = set(operators)
        return [
            {"admin": a, "name": names.get(a, ""), "canBeRemoved": a not in fixed} for a in listed
        ]

    async def _display_names(self, addresses: list[str]) -> dict[str, str]:
        """Display names for a listing: best effort (an unavailable lookup lists without)."""
        if not addresses:
            return {}
        try:
            return await self.resolver.display_names(addresses)
        except ResolverUnavailable as e:
            log.warning("display names unavailable", extra={"error": str(e)})
            return {}

    async def h_scene_bans(self, req: Request) -> Response:
        signed, scene, st = await self._scene_request(req)
        await self._require_owner_or_admin(scene, signed.address, st.place_id)
        method = req.method.upper()
        if method in ("GET", "HEAD"):
            limit, offset = self._page(req)
            rows, total = await self._db(
                self.store.scene_bans, st.place_id, limit=limit, offset=offset
            )
            names = await self._display_names([r.banned_address for r in rows])
            return json_response(
                {
                    "results": [
                        {
                            "bannedAddress": r.banned_address,
                            "bannedBy": r.banned_by,
                            "bannedAt": r.banned_at,
                            "name": names.get(r.banned_address, ""),
                        }
                        for r in rows
                    ],
                    "total": total,
                    "page": offset // limit + 1,
                    "pages": (total + limit - 1) // limit,
                    "limit": limit,
                }
            )
        target = await self._target(_body(req), "banned_address", "banned_name")
        if method == "POST":
            if target == signed.address or await self.owner_or_admin.check(
                scene, target, place_id=st.place_id
            ):
                raise HttpError(400, "The owner or an admin cannot be banned", "cannot_ban_admin")
            added = await self._db(
                self.store.add_scene_ban, st.place_id, target, banned_by=signed.address
            )
            self.m_bans.inc(kind="scene", action="ban")
            if not added or self.snapshot is None:
                # banned already (or no snapshot to diff): kick here; a new ban is kicked
                # by the reload below, which sees it in the snapshot
                self.m_kicks.inc(kind="scene")
                await self._room_call(
                    "kick", self.rooms.kick(st.room, target, "banned from this scene")
                )
        else:
            await self._db(self.store.remove_scene_ban, st.place_id, target)
            self.m_bans.inc(kind="scene", action="lift")
        await self.refresh_metadata(st)
        return _no_content()

    async def h_scene_ban_addresses(self, req: Request) -> Response:
        signed, scene, st = await self._scene_request(req)
        await self._require_owner_or_admin(scene, signed.address, st.place_id)
        limit, offset = self._page(req)
        rows, total = await self._db(self.store.scene_bans, st.place_id, limit=limit, offset=offset)
        return json_response(
            {
                "results": [r.banned_address for r in rows],
                "total": total,
                "page": offset // limit + 1,
                "pages": (total + limit - 1) // limit,
                "limit": limit,
            }
        )

    @staticmethod
    def _page(req: Request) -> tuple[int, int]:
        args = req.args
        try:
            limit = int(args.get("limit", ["100"])[0])
            offset = int(args.get("offset", ["0"])[0])
        except ValueError:
            raise HttpError(400, "limit and offset must be integers", "bad_request") from None
        if not 1 <= limit <= 100 or offset < 0:
            raise HttpError(400, "limit must be 1..100 and offset >= 0", "bad_request")
        return limit, offset

    # --- room metadata ----------------------------------------------------------------------

    async def refresh_metadata(self, st: RoomState, *, reload: bool = True) -> dict[str, Any]:
        """Rebuild the gatekeeper's keys of the room metadata and write it (serialised per
        room; keys the gatekeeper does not own are preserved). ``reload``: after a write,
        re-read the in-memory snapshot first."""
        if reload and self.snapshot is not None and st.room in await self.reload():
            return st.metadata  # the reload refreshed this room already
        async with st.lock:
            banned, _ = await self._db(self.store.scene_bans, st.place_id, limit=10_000)
            admins = await self._db(self.store.scene_admins, st.place_id)
            presenters = await self._db(self.store.roles, st.room, "presenter")
            speakers = await self._db(self.store.roles, st.room, "speaker")
            moderated = await self._db(self.store.is_moderated, st.room)
            try:  # owner rights from the land or world are admins too (control-plane.md 1.5)
                st.operators = await self.resolver.scene_operators(st.scene)
            except ResolverUnavailable as e:  # keep the last known ones
                log.warning("scene operators unavailable", extra={"room": st.room, "error": str(e)})
            current: dict[str, Any] = {}
            try:
                raw = await self.rooms.room_metadata(st.room)
                if raw:
                    parsed = json.loads(raw)
                    if isinstance(parsed, dict):
                        current = parsed
            except Exception as e:  # unreadable: write ours over it
                log.warning("room metadata read failed", extra={"room": st.room, "error": repr(e)})
            current.update(
                {
                    "bannedAddresses": [b.banned_address for b in banned],
                    "sceneAdmins": list(dict.fromkeys([a.admin for a in admins] + st.operators)),
                    "presenters": presenters,
                    "speakers": speakers,
                    "speakRequests": list(st.speak_requests),
                    "moderated": moderated,
                }
            )
            st.metadata = current
            st.refreshed_at = time.monotonic()
            await self._room_call(
                "metadata",
                self.rooms.set_metadata(st.room, json.dumps(current, separators=(",", ":"))),
            )
            return current

    async def h_room_metadata(self, req: Request) -> Response:
        st = self.room_states.get(req.params["room"])
        if st is None:
            raise HttpError(404, "unknown scene room", "unknown_room")
        if not st.metadata:
            await self.refresh_metadata(st, reload=False)
        return json_response(st.metadata)

    async def h_webhook(self, req: Request) -> Response:
        if not self.config.livekit_enabled:
            raise HttpError(404, "LiveKit is not configured", "no_livekit")
        if self._webhook is None:
            from livekit import api

            self._webhook = api.WebhookReceiver(
                api.TokenVerifier(self.config.livekit_api_key, self.config.livekit_api_secret)
            )
        auth = req.header("authorization") or ""
        try:
            event = self._webhook.receive(req.body.decode("utf-8"), auth)
        except Exception as e:
            raise HttpError(
                400, f"Invalid webhook signature: {type(e).__name__}", "bad_signature"
            ) from None
        if event.event in ("room_started", "participant_joined"):
            st = self.room_states.get(event.room.name)
            if st is not None and time.monotonic() - st.refreshed_at >= WEBHOOK_REFRESH_S:
                await self.refresh_metadata(st, reload=False)
        return json_response({"ok": True})

    # --- casting (control-plane.md 1.7) ---------------------------------------------------

    def _public_base(self, req: Request) -> str:
        if self.config.cast_public_url:
            return self.config.cast_public_url.rstrip("/")
        if self.config.http_base_url:
            return self.config.http_base_url.rstrip("/")
        host = req.header("host") or "127.0.0.1"
        return f"http://{host}"

    async def h_cast_generate(self, req: Request) -> Response:
        signed, scene, st = await self._scene_request(req)
        await self._require_owner_or_admin(scene, signed.address, st.place_id)
        key = secrets.token_urlsafe(32)
        days = self.config.cast_link_days
        expires_at = now_ms() + int(days * 86_400_000)
        place_name = await self.resolver.place_name(scene)
        await self._db(
            self.store.create_cast_link,
            key_hash=hashlib.sha256(key.encode()).hexdigest(),
            place_id=st.place_id,
            place_name=place_name,
            room_id=st.room,
            is_world=scene.world,
            created_by=signed.address,
            expires_at=expires_at,
        )
        base = self._public_base(req)
        return json_response(
            {
                "streamLink": f"{base}/cast/stream?token={key}",
                "watcherLink": f"{base}/cast/watch?roomId={quote(st.room, safe='')}",
                "streamingKey": key,
                "placeId": st.place_id,
                "placeName": place_name,
                "expiresAt": _iso(expires_at),
                "expiresInDays": days,
            }
        )

    async def h_cast_info(self, req: Request) -> Response:
        link = await self._db(
            self.store.cast_link, hashlib.sha256(req.params["key"].encode()).hexdigest()
        )
        if link is None:
            raise HttpError(404, "Unknown, expired or revoked stream link", "unknown_link")
        return json_response(
            {
                "placeName": link.place_name,
                "placeId": link.place_id,
                "isWorld": link.is_world,
                "expiresAt": _iso(link.expires_at),
            }
        )

    def _need_media(self) -> None:
        if not self.rooms.media:
            raise HttpError(
                409, "Casting needs LiveKit scene rooms (built-in rooms carry no media)", "no_media"
            )

    async def h_cast_streamer(self, req: Request) -> Response:
        body = _body(req)
        key, name = body.get("token"), body.get("identity")
        if not isinstance(key, str) or not key:
            raise HttpError(401, "Invalid streaming key", "bad_stream_key")
        link = await self._db(self.store.cast_link, hashlib.sha256(key.encode()).hexdigest())
        if link is None:
            raise HttpError(401, "Invalid streaming key", "bad_stream_key")
        self._need_media()
        self._stream_seq += 1
        identity = f"stream:{link.place_id}:{self._stream_seq}"
        conn = self.rooms.connection_string(
            link.room_id,
            identity,
            sources=tokens.STREAMER_SOURCES,
            ttl_s=self.config.token_ttl_s,
            name=name if isinstance(name, str) and name else None,
            attributes={"role": "streamer"},
        )
        self.m_tokens.inc(kind="streamer", transport=self.rooms.kind)
        url, _, token = conn[len("livekit:") :].partition("?access_token=")
        return json_response(
            {"url": url, "token": token, "roomId": link.room_id, "identity": identity}
        )

    async def h_cast_watcher(self, req: Request) -> Response:
        body = _body(req)
        room = body.get("roomId")
        if not isinstance(room, str) or not room:
            raise HttpError(400, "roomId is required", "bad_request")
        link = await self._db(self.store.live_cast_room, room)
        if link is None:
            raise HttpError(404, "Unknown room", "unknown_room")
        self._need_media()
        identity = f"watch:{uuid.uuid4()}"
        name = body.get("identity")
        conn = self.rooms.connection_string(
            room,
            identity,
            ttl_s=self.config.token_ttl_s,
            name=name if isinstance(name, str) and name else None,
            grant=tokens.watcher_grant(room),
        )
        self.m_tokens.inc(kind="watcher", transport=self.rooms.kind)
        url, _, token = conn[len("livekit:") :].partition("?access_token=")
        return json_response({"url": url, "token": token, "roomId": room, "identity": identity})

    async def h_cast_presenters(self, req: Request) -> Response:
        signed, scene, st = await self._scene_request(req)
        await self._require_owner_or_admin(scene, signed.address, st.place_id)
        method = req.method.upper()
        if method in ("GET", "HEAD"):
            return json_response(
                {"presenters": await self._db(self.store.roles, st.room, "presenter")}
            )
        identity = _body(req).get("identity")
        if not isinstance(identity, str) or not identity or len(identity) > 200:
            raise HttpError(400, "identity is required", "bad_request")
        if _ADDRESS.match(identity):
            identity = identity.lower()
        if method == "POST":
            await self._db(
                self.store.add_role, st.room, "presenter", identity, added_by=signed.address
            )
            await self._room_call(
                "permissions", self.rooms.set_sources(st.room, identity, tokens.STREAMER_SOURCES)
            )
        else:
            if not await self._db(self.store.remove_role, st.room, "presenter", identity):
                raise HttpError(404, f"{identity} is not a presenter", "not_presenter")
            await self.rooms.set_sources(
                st.room, identity, await self._default_sources(st, identity)
            )
        await self.refresh_metadata(st)
        return _no_content()

    async def _default_sources(self, st: RoomState, identity: str) -> tuple[str, ...]:
        """What identity may publish without a presenter role."""
        if not await self._db(self.store.is_moderated, st.room):
            return tokens.MICROPHONE
        if identity in await self._db(self.store.roles, st.room, "speaker"):
            return tokens.MICROPHONE
        if _ADDRESS.match(identity) and await self.owner_or_admin.check(
            st.scene, identity, place_id=st.place_id
        ):
            return tokens.MICROPHONE
        return ()

    # --- speakers -------------------------------------------------------------------------

    async def h_moderation(self, req: Request) -> Response:
        signed, scene, st = await self._scene_request(req)
        await self._require_owner_or_admin(scene, signed.address, st.place_id)
        moderated = _body(req).get("moderated")
        if not isinstance(moderated, bool):
            raise HttpError(400, "moderated must be true or false", "bad_request")
        await self._db(self.store.set_moderated, st.room, st.place_id, moderated)
        await self._room_call("permissions", self._apply_moderation(st))
        await self.refresh_metadata(st)
        return _no_content()

    async def _apply_moderation(self, st: RoomState) -> None:
        """Existing participants of a LiveKit room get the permissions of the new mode."""
        if not self.rooms.media:
            return
        from livekit import api

        from dclcomms.gatekeeper.rooms import LiveKitRooms

        assert isinstance(self.rooms, LiveKitRooms)
        try:
            resp = await self.rooms._client().room.list_participants(
                api.ListParticipantsRequest(room=st.room)
            )
        except api.TwirpError as e:
            if e.code == "not_found":
                return
            raise
        presenters = set(await self._db(self.store.roles, st.room, "presenter"))
        for p in resp.participants:
            if p.identity in presenters:
                continue
            await self.rooms.set_sources(
                st.room, p.identity, await self._default_sources(st, p.identity)
            )

    async def h_speak_request(self, req: Request) -> Response:
        signed = await self.signed(req, signers=(EXPLORER_SIGNER,))
        scene = self._scene_from_explorer_metadata(signed.metadata)
        st = await self._state(scene)
        if signed.address not in st.speak_requests:
            st.speak_requests.append(signed.address)  # oldest dropped past 100
        await self.refresh_metadata(st)
        return _no_content()

    async def h_speakers(self, req: Request) -> Response:
        signed, scene, st = await self._scene_request(req)
        await self._require_owner_or_admin(scene, signed.address, st.place_id)
        target = _address(_body(req).get("address"), "address")
        if req.method.upper() == "POST":
            await self._db(self.store.add_role, st.room, "speaker", target, added_by=signed.address)
            if target in st.speak_requests:
                st.speak_requests.remove(target)
            await self._room_call(
                "permissions", self.rooms.set_sources(st.room, target, tokens.MICROPHONE)
            )
        else:
            if not await self._db(self.store.remove_role, st.room, "speaker", target):
                raise HttpError(404, f"{target} is not a speaker", "not_speaker")
            sources = await self._default_sources(st, target)
            await self._room_call("permissions", self.rooms.set_sources(st.room, target, sources))
        await self.refresh_metadata(st)
        return _no_content()


def webhook_auth(body: bytes, api_key: str, api_secret: str) -> str:
    """The ``Authorization`` value LiveKit sends with a webhook body (for tests and tools):
    a JWT whose ``sha256`` claim is the base64 SHA-256 of the body."""
    from dclcomms.auth import jwt_encode

    now = int(time.time())
    digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
    return jwt_encode({"iss": api_key, "nbf": now, "exp": now + 300, "sha256": digest}, api_secret)


__all__ = ["Gatekeeper", "RoomState", "Signed", "redact_tokens", "webhook_auth"]
