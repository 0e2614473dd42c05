"""The ``/bridge`` gateway: authenticated third-party servers read and inject room traffic.

The C++ server hands every ``/bridge`` text frame to :class:`BridgeGateway`
(:class:`dclcomms.ws.BridgeFrame`); the gateway checks the credential, the scopes
and the limits, and talks to the rooms through a :class:`~dclcomms.bridge.links.RoomLink`
(the rooms of this process, or NATS). Frames are JSON objects, one per text frame,
in the style of ``/bus`` (docs/bridge.md)::

    -> {"type":"auth","key":"dcb_..."}                     (API key)
    -> {"type":"auth","signedFetch":{"x-identity-auth-chain-0":..., ...}}
                                                           (signed fetch of GET /bridge)
    <- {"type":"welcome","identity":I,"scopes":[...],"limits":{"rate":R,"maxBytes":B}}
    -> {"type":"subscribe","kind":"island"|"scene"|"bus","topic":T}
    <- {"type":"subscribed","kind":K,"topic":T,"room":R}
    -> {"type":"unsubscribe","kind":K,"topic":T}
    <- {"type":"unsubscribed","kind":K,"topic":T}
    -> {"type":"publish","kind":"scene","topic":T,"payload":"<base64 RFC-4>"[,"unreliable":b]}
    <- {"type":"message","kind":K,"topic":T,"room":R,"sender":S,"unreliable":b,"ts":ms,
        "payload":"<base64 RFC-4 Packet>"}
    <- {"type":"error","code":C,"message":M[,"kind":K,"topic":T]}

A failed ``auth`` is answered with its ``error`` frame, then the session is closed
4003 ``auth failed: <code>``. Everything after that is per frame: a refused frame
gets an ``error`` and the session stays open.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from dclcomms.auth.signed_fetch import SignedFetchVerifier
from dclcomms.bridge.keys import DEFAULT_MAX_BYTES, DEFAULT_RATE, KeyRecord, KeyStore
from dclcomms.bridge.links import RoomKey, RoomLink
from dclcomms.bridge.scopes import RoomNames, Target
from dclcomms.errors import BridgeError
from dclcomms.metrics import Registry
from dclcomms.signalling import TokenBucket

log = logging.getLogger("dclcomms.bridge")

PATH = "/bridge"
MAX_SUBSCRIPTIONS = 64
MAX_PENDING = 8  # frames received while the credential is checked
QUEUE = 1024  # message frames queued per session per loop iteration (oldest dropped)
BUS_MAX_BYTES = 16 * 1024  # the /bus payload cap (docs/msgbus.md)


class SceneAuthority(Protocol):
    """Whether a wallet is the owner or an admin of a scene (control-plane.md 1.5)."""

    async def is_owner_or_admin(self, address: str, realm: str, scene_id: str) -> bool: ...


class StaticSceneAuthority:
    """A fixed table: ``{"<realm>:<sceneId>" or "<world>.eth": {address, ...}}``."""

    def __init__(self, table: dict[str, Iterable[str]] | None = None) -> None:
        self.table = {k: {a.lower() for a in v} for k, v in (table or {}).items()}

    async def is_owner_or_admin(self, address: str, realm: str, scene_id: str) -> bool:
        a = address.lower()
        if a in self.table.get(f"{realm}:{scene_id}", ()):
            return True
        return realm.endswith(".eth") and a in self.table.get(realm, ())


@dataclass(frozen=True)
class Credential:
    """Who a session is: identity (the sender of what it injects), its scopes, limits."""

    kind: str  # "key" or "signed_fetch"
    identity: str
    scopes: frozenset[str] = frozenset()
    key_id: str | None = None
    rate: float = DEFAULT_RATE
    max_bytes: int = DEFAULT_MAX_BYTES
    authoritative: bool = False  # AUTHORITATIVE_SERVER_ADDRESS: every scene

    def scope_list(self) -> list[str]:
        if self.kind == "signed_fetch":
            return ["scene:*"] if self.authoritative else ["scene:<owned or administered>"]
        return sorted(self.scopes)


@dataclass
class _Session:
    id: int
    cred: Credential | None = None
    authing: bool = False  # a credential or scene lookup runs: later frames wait
    pending: list[str] = field(default_factory=list)
    subs: dict[tuple[str, str], Target] = field(default_factory=dict)
    allowed: set[tuple[str, str]] = field(default_factory=set)  # signed fetch: checked
    injected: set[RoomKey] = field(default_factory=set)  # rooms this session injected into
    bucket: TokenBucket | None = None
    queue: list[str] = field(default_factory=list)
    messages: int = 0


def _json(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


class BridgeGateway:
    """Serves the bridge sessions of one :class:`dclcomms.ws.Server` over a
    :class:`~dclcomms.bridge.links.RoomLink`."""

    def __init__(
        self,
        server: Any,
        link: RoomLink,
        registry: Registry,
        *,
        keys: KeyStore,
        names: RoomNames | None = None,
        authority: SceneAuthority | None = None,
        authoritative_server: str = "",
        public_path: str = PATH,
        spawn: Callable[[Awaitable[Any]], Any] | None = None,
        bus: Any = None,
    ) -> None:
        """``bus``: a :class:`~dclcomms.bridge.bus.PubSubBusLink` for the /bus's global
        topics (kind ``bus``); None: refused with ``bus_unavailable``."""
        self.server = server
        self.link = link
        self.link.on_message = self.on_room_message
        self.bus = bus
        if bus is not None:
            bus.on_message = self.on_bus_message
        self.bus_topics: dict[str, set[int]] = {}  # subscribed bus topic -> sessions
        self.keys = keys
        self.names = names or RoomNames()
        self.authority = authority or StaticSceneAuthority()
        self.authoritative_server = authoritative_server.lower()
        self.public_path = public_path
        self.verifier = SignedFetchVerifier(replay_protection=False)
        self._spawn = spawn or asyncio.ensure_future
        self.sessions: dict[int, _Session] = {}
        self.rooms: dict[RoomKey, set[int]] = {}  # tapped (scene, room) -> subscribed sessions
        self._dirty: set[int] = set()
        self._flush_scheduled = False
        self._tasks: set[asyncio.Future[Any]] = set()
        self.m_frames = registry.counter("dcl_bridge_frames_total", "/bridge frames, by type")
        self.m_errors = registry.counter(
            "dcl_bridge_errors_total", "/bridge frames and credentials refused, by code"
        )
        self.m_auth = registry.counter(
            "dcl_bridge_auth_total", "/bridge credentials accepted, by kind"
        )
        self.m_read = registry.counter(
            "dcl_bridge_messages_read_total",
            "room messages sent to bridge sessions, by kind (island, scene)",
        )
        self.m_injected = registry.counter(
            "dcl_bridge_messages_injected_total", "messages injected into rooms, by kind"
        )
        self.m_dropped = registry.counter(
            "dcl_bridge_dropped_total", "room messages dropped before sending, by reason"
        )
        registry.gauge(
            "dcl_bridge_sessions",
            "authenticated /bridge sessions",
            fn=lambda: sum(1 for s in self.sessions.values() if s.cred is not None),
        )
        registry.gauge(
            "dcl_bridge_rooms", "rooms tapped for the bridge", fn=lambda: len(self.rooms)
        )
        registry.gauge(
            "dcl_bridge_scene_rooms",
            "scene rooms (/scene-rooms/) tapped for the bridge",
            fn=lambda: sum(1 for scene, _ in self.rooms if scene),
        )

    def close(self) -> None:
        for scene, room in list(self.rooms):
            self.link.tap(room, False, scene)
        self.rooms.clear()
        if self.bus is not None:
            for topic in list(self.bus_topics):
                self.bus.subscribe(topic, False)
        self.bus_topics.clear()
        for t in list(self._tasks):
            t.cancel()
        self.sessions.clear()

    # --- server events ----------------------------------------------------------------

    def on_opened(self, sid: int) -> None:
        self.sessions[sid] = _Session(sid)

    def on_closed(self, sid: int) -> None:
        s = self.sessions.pop(sid, None)
        if s is None:
            return
        for target in s.subs.values():
            self._unref_target(target, sid)
        s.subs.clear()
        if s.cred is not None:
            ident = s.cred.identity
            for key in s.injected:
                still = any(
                    o.cred is not None and o.cred.identity == ident and key in o.injected
                    for o in self.sessions.values()
                )
                if not still:
                    self.link.release(key[1], ident, key[0])

    def on_frame(self, sid: int, text: str) -> None:
        s = self.sessions.get(sid)
        if s is None:
            return
        if s.authing:
            if len(s.pending) >= MAX_PENDING:
                self._error(s, BridgeError("too many frames before welcome", code="rate_limited"))
                return
            s.pending.append(text)
            return
        self._handle(s, text)

    def _handle(self, s: _Session, text: str) -> None:
        typ = "?"
        frame: dict[str, Any] = {}
        try:
            try:
                parsed = json.loads(text)
            except (ValueError, RecursionError):
                raise BridgeError("frame is not JSON", code="bad_frame") from None
            if not isinstance(parsed, dict):
                raise BridgeError("frame is not a JSON object", code="bad_frame")
            frame = parsed
            t = frame.get("type")
            typ = t if t in ("auth", "subscribe", "unsubscribe", "publish") else "?"
            self.m_frames.inc(type=typ)
            if typ == "auth":
                if s.cred is not None:
                    raise BridgeError("already authenticated", code="already_authenticated")
                s.authing = True
                self._run(self._auth(s, frame))
                return
            if typ == "?":
                raise BridgeError(
                    "type must be auth, subscribe, unsubscribe or publish", code="bad_frame"
                )
            if s.cred is None:
                raise BridgeError("send an auth frame first", code="not_authenticated")
            target = self.names.target(frame.get("kind"), frame.get("topic"))
            if typ == "subscribe":
                decided = self._allowed_now(s, target)
                if decided is None:  # a scene owner/admin lookup: later frames wait for it
                    s.authing = True
                    self._run(self._subscribe_after_lookup(s, target))
                else:
                    self._subscribe(s, target, decided)
            elif typ == "unsubscribe":
                self._unsubscribe(s, target)
            else:
                self._publish(s, target, frame)
        except BridgeError as e:
            self._error(s, e, frame)

    def _run(self, coro: Awaitable[None]) -> None:
        task = self._spawn(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _error(self, s: _Session, e: BridgeError, frame: dict[str, Any] | None = None) -> None:
        self.m_errors.inc(code=e.code)
        body: dict[str, Any] = {"type": "error", "code": e.code, "message": str(e)}
        for k in ("kind", "topic"):
            if frame and isinstance(frame.get(k), str):
                body[k] = frame[k]
        self._send(s, _json(body))

    # --- credentials ----------------------------------------------------------------------

    def _drain(self, s: _Session) -> None:
        s.authing = False
        while s.pending and not s.authing and self.sessions.get(s.id) is s:
            self._handle(s, s.pending.pop(0))

    async def _auth(self, s: _Session, frame: dict[str, Any]) -> None:
        try:
            cred = await self._credential(frame)
        except BridgeError as e:
            s.authing = False
            s.pending.clear()
            self._error(s, e)
            self.flush()
            self.server.close_bridge(s.id, 4003, f"auth failed: {e.code}")
            return
        if self.sessions.get(s.id) is not s:
            return  # closed meanwhile
        s.cred = cred
        s.authing = False
        s.bucket = TokenBucket(cred.rate, max(1, int(cred.rate)))
        self.m_auth.inc(kind=cred.kind)
        self.server.accept_bridge(s.id)
        self._send(
            s,
            _json(
                {
                    "type": "welcome",
                    "identity": cred.identity,
                    "credential": cred.kind,
                    "scopes": cred.scope_list(),
                    "limits": {"rate": cred.rate, "maxBytes": cred.max_bytes},
                }
            ),
        )
        self._drain(s)

    async def _credential(self, frame: dict[str, Any]) -> Credential:
        key = frame.get("key")
        headers = frame.get("signedFetch")
        if key is not None and headers is None:
            record: KeyRecord = await asyncio.to_thread(self.keys.authenticate, key)
            return Credential(
                "key",
                record.identity,
                frozenset(record.scopes),
                key_id=record.id,
                rate=record.rate,
                max_bytes=record.max_bytes,
            )
        if headers is not None and key is None:
            if not isinstance(headers, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
            ):
                raise BridgeError("signedFetch must be an object of strings", code="bad_frame")
            res = await asyncio.to_thread(self.verifier.verify, "GET", self.public_path, headers)
            if not res.ok:
                raise BridgeError(
                    f"signed fetch refused: {res.code}: {res.message}",
                    code="invalid_signed_fetch",
                )
            signer = (res.signer or "").lower()
            return Credential(
                "signed_fetch", signer, authoritative=bool(self.authoritative_server == signer)
            )
        raise BridgeError("auth needs exactly one of key or signedFetch", code="bad_frame")

    def _allowed_now(self, s: _Session, target: Target) -> bool | None:
        """Whether the session may use target, or None when the scene authority decides."""
        cred = s.cred
        assert cred is not None
        if cred.kind == "key":
            return target.allowed_by(cred.scopes)
        if target.kind == "bus" and target.scene_id and cred.authoritative:
            return True  # the /bus's scene topics: every scene for the authoritative server
        if target.kind != "scene":
            return False  # islands and bus topics: operator-granted API keys only
        if cred.authoritative or (target.kind, target.topic) in s.allowed:
            return True
        return None

    async def _lookup(self, s: _Session, target: Target) -> bool:
        cred = s.cred
        assert cred is not None
        try:
            ok = await self.authority.is_owner_or_admin(
                cred.identity, target.realm, target.scene_id
            )
        except Exception as e:  # fail closed (control-plane.md 1.5)
            log.warning("scene authority failed", extra={"error": repr(e)})
            raise BridgeError("owner/admin lookup failed", code="resolver_unavailable") from None
        if ok:
            s.allowed.add((target.kind, target.topic))
        return ok

    # --- subscriptions ------------------------------------------------------------------

    async def _subscribe_after_lookup(self, s: _Session, target: Target) -> None:
        try:
            allowed = await self._lookup(s, target)
        except BridgeError as e:
            self._error(s, e, {"kind": target.kind, "topic": target.topic})
            allowed = None
        if self.sessions.get(s.id) is not s:
            return
        if allowed is not None:
            self._subscribe(s, target, allowed)
        self._drain(s)

    def _subscribe(self, s: _Session, target: Target, allowed: bool) -> None:
        frame = {"kind": target.kind, "topic": target.topic}
        try:
            if not allowed:
                raise BridgeError(
                    f"this credential has no scope for {target.kind} {target.topic!r}",
                    code="forbidden_scope",
                )
            if target.kind == "bus" and self.bus is None:
                raise BridgeError(
                    "this bridge does not reach the /bus (no pub/sub)", code="bus_unavailable"
                )
            key = (target.kind, target.topic)
            if key not in s.subs:
                if len(s.subs) >= MAX_SUBSCRIPTIONS:
                    raise BridgeError(
                        f"at most {MAX_SUBSCRIPTIONS} subscriptions per session",
                        code="too_many_subscriptions",
                    )
                s.subs[key] = target
                self._ref_target(target, s.id)
            self._send(s, _json({"type": "subscribed", **frame, "room": target.room}))
        except BridgeError as e:
            self._error(s, e, frame)

    def _unsubscribe(self, s: _Session, target: Target) -> None:
        t = s.subs.pop((target.kind, target.topic), None)
        if t is None:
            raise BridgeError(
                f"not subscribed to {target.kind} {target.topic!r}", code="not_subscribed"
            )
        self._unref_target(t, s.id)
        self._send(s, _json({"type": "unsubscribed", "kind": t.kind, "topic": t.topic}))

    def _ref_target(self, target: Target, sid: int) -> None:
        if target.kind == "bus":
            subs = self.bus_topics.setdefault(target.topic, set())
            if not subs:
                self.bus.subscribe(target.topic, True)
            subs.add(sid)
        else:
            self._ref(target.key, sid)

    def _unref_target(self, target: Target, sid: int) -> None:
        if target.kind != "bus":
            self._unref(target.key, sid)
            return
        subs = self.bus_topics.get(target.topic)
        if subs is None:
            return
        subs.discard(sid)
        if not subs:
            del self.bus_topics[target.topic]
            self.bus.subscribe(target.topic, False)

    def _ref(self, key: RoomKey, sid: int) -> None:
        subs = self.rooms.get(key)
        if subs is None:
            self.rooms[key] = {sid}
            self.link.tap(key[1], True, key[0])
        else:
            subs.add(sid)

    def _unref(self, key: RoomKey, sid: int) -> None:
        subs = self.rooms.get(key)
        if subs is None:
            return
        subs.discard(sid)
        if not subs:
            del self.rooms[key]
            self.link.tap(key[1], False, key[0])

    # --- publishing -------------------------------------------------------------------

    def _publish(self, s: _Session, target: Target, frame: dict[str, Any]) -> None:
        cred = s.cred
        assert cred is not None and s.bucket is not None
        if not target.writable:
            raise BridgeError("island rooms are read-only for servers", code="read_only")
        if (target.kind, target.topic) not in s.subs:
            raise BridgeError(
                f"subscribe to {target.kind} {target.topic!r} before publishing",
                code="not_subscribed",
            )
        payload = frame.get("payload")
        unreliable = frame.get("unreliable", False)
        if not isinstance(payload, str) or not isinstance(unreliable, bool):
            raise BridgeError(
                "payload must be a base64 string, unreliable a boolean", code="bad_payload"
            )
        if len(payload) > (cred.max_bytes * 4) // 3 + 4:
            raise BridgeError(f"payload over {cred.max_bytes} bytes", code="payload_too_large")
        try:
            body = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise BridgeError("payload is not base64", code="bad_payload") from None
        limit = cred.max_bytes if target.kind != "bus" else min(cred.max_bytes, BUS_MAX_BYTES)
        if len(body) > limit:
            raise BridgeError(f"payload over {limit} bytes", code="payload_too_large")
        if not s.bucket.take():
            raise BridgeError(f"over {cred.rate:g} messages/s", code="rate_limited")
        if target.kind == "bus":
            self.bus.publish(target.topic, cred.identity, body)
            self.m_injected.inc(kind="bus")
            return
        s.injected.add(target.key)
        self.link.inject(target.room, cred.identity, body, unreliable, target.scene)
        self.m_injected.inc(kind=target.kind)

    # --- room traffic -----------------------------------------------------------------

    def on_room_message(
        self, room: str, sender: str, body: bytes, unreliable: bool, ts: int, scene: bool = False
    ) -> None:
        key = (scene, room)
        sids = self.rooms.get(key)
        if not sids:
            return
        payload: str | None = None
        for sid in sids:
            s = self.sessions.get(sid)
            if s is None or s.cred is None or s.cred.identity == sender:
                continue  # never echo a server's own injections
            if payload is None:
                payload = base64.b64encode(body).decode()
            for target in s.subs.values():
                if target.key != key:
                    continue
                text = _json(
                    {
                        "type": "message",
                        "kind": target.kind,
                        "topic": target.topic,
                        "room": room,
                        "sender": sender,
                        "unreliable": unreliable,
                        "ts": ts,
                        "payload": payload,
                    }
                )
                self._send(s, text, message=True)
                self.m_read.inc(kind=target.kind)

    def on_bus_message(self, topic: str, sender: str, payload: bytes, ts: int) -> None:
        """A message on /bus global topic ``topic``: a player's (sender = address) or a
        server's (sender = its credential's identity)."""
        sids = self.bus_topics.get(topic)
        if not sids:
            return
        text: str | None = None
        for sid in sids:
            s = self.sessions.get(sid)
            if s is None or s.cred is None or s.cred.identity == sender:
                continue  # never echo a server's own publishes
            if text is None:
                text = _json(
                    {
                        "type": "message",
                        "kind": "bus",
                        "topic": topic,
                        "room": f"bus:{topic}",
                        "sender": sender,
                        "unreliable": False,
                        "ts": ts,
                        "payload": base64.b64encode(payload).decode(),
                    }
                )
            self._send(s, text, message=True)
            self.m_read.inc(kind="bus")

    # --- sending ------------------------------------------------------------------------

    def _send(self, s: _Session, text: str, *, message: bool = False) -> None:
        if message:
            if s.messages >= QUEUE:
                self.m_dropped.inc(reason="queue_full")
                return
            s.messages += 1
        s.queue.append(text)
        self._dirty.add(s.id)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:
                self.flush()

    def flush(self) -> None:
        """Hand every queued frame to the server (once per loop iteration)."""
        self._flush_scheduled = False
        dirty, self._dirty = self._dirty, set()
        for sid in dirty:
            s = self.sessions.get(sid)
            if s is None:
                continue
            for text in s.queue:
                self.server.send_bridge(sid, text)
            s.queue.clear()
            s.messages = 0


__all__ = [
    "PATH",
    "BridgeGateway",
    "Credential",
    "SceneAuthority",
    "StaticSceneAuthority",
]
