"""The /bus message bus: authenticated clients publish and subscribe topics (control-plane.md 4).

The successor of the legacy BFF's topic bus. The C++ server authenticates a ``/bus``
WebSocket with the connector's challenge and auth chain, then hands every text frame
to :class:`MessageBusGateway`, which checks it, maps it onto the realm's pub/sub (and so
onto NATS) and delivers what the session subscribed to.

Frames are JSON objects, one per WebSocket text frame::

    -> {"type":"subscribe","kind":"peer"|"system","topic":T}
    <- {"type":"subscribed","kind":K,"topic":T}   (once the pub/sub's server has it)
    -> {"type":"unsubscribe","kind":K,"topic":T}
    <- {"type":"unsubscribed","kind":K,"topic":T[,"reason":"island_changed"]}
    -> {"type":"publish","topic":T,"payload":"<base64>"}
    <- {"type":"message","kind":"peer","topic":T,"sender":"0x...","payload":"<base64>"}
    <- {"type":"message","kind":"system","topic":T,"payload":"<base64>"}
    <- {"type":"error","code":C,"message":M[,"topic":T]}

Bus subjects: a peer topic ``T`` published by ``<addr>`` travels on
``client.peer.<addr>.T`` (v3 wire ``client-proto.peer.<addr>.T``; workers scheme the
same name); a ``peer`` subscription to ``T`` receives it from every peer (the sender
from the subject; a session never receives its own). ``system`` subscriptions
receive realm-wide ``client.T`` messages (published by services) and the island's
``island.<id>.peer_join|peer_left`` (the engine's JoinIslandMessage /
LeftIslandMessage bytes).

Access (the BFF let a client subscribe to ``>``; here):

* topics are 1-8 tokens of ``[A-Za-z0-9_:-]``, no wildcards (``bad_topic``);
* ``heartbeat`` and anything with an ``island_changed`` token are reserved
  (``reserved_topic``);
* addressed topics ``<addr>.…``: anyone may publish, only ``<addr>`` may subscribe;
* island topics ``island.<id>.…``: only members of island ``<id>`` (the session's
  current island); on an island change those subscriptions end with an
  ``unsubscribed`` frame (``reason: island_changed``);
* scene topics ``scene.<sceneId>.…`` (at least one token after the scene id): only
  members of that scene's room (the gatekeeper's built-in ``/scene-rooms/`` of this
  server); a session that left the scene room loses those subscriptions with an
  ``unsubscribed`` frame (``reason: scene_left``) at the next message;
* any other topic only if the operator allow-listed it (``bus_global_topics``);
  third-party servers reach those through the bridge (``client.bridge.<topic>``,
  docs/bridge.md): a peer subscription to a global topic also receives their messages,
  with the server's identity as sender;
* ``bridge.…`` is reserved (``reserved_topic``): the bridge's own subjects;
* clients publish peer topics only; system topics come from the realm.

P2P signalling (``<to>.offer|answer|candidate``, transports.md 4) is checked on
publish and again on delivery by :mod:`dclcomms.signalling`: sender and addressee
on the same island (``not_same_island``), a well-formed signal (``bad_signal``),
and a token bucket per session (``rate_limited``).

Limits: payload <= 16 KiB decoded (``payload_too_large``), 64 subscriptions per
session (``too_many_subscriptions``), frames per second (C++: close 4009), and an
outbound queue of ``queue`` messages per session: ``message`` frames beyond it in one
loop iteration drop the oldest, counted in ``dcl_bus_dropped_total{reason="queue_full"}``
(replies - ``subscribed``, ``unsubscribed``, ``error`` - are never dropped; frames keep
their order).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from dclcomms.bridge.bus import decode_envelope
from dclcomms.errors import MessageBusError, SubjectError
from dclcomms.metrics import Registry
from dclcomms.nats.subjects import ADDRESS_RE, check_peer_topic, check_system_topic, check_topic
from dclcomms.pubsub import AppData, IslandPeer, PubSub, Subscription
from dclcomms.signalling import IslandMembership, TokenBucket, check_signal, signal_target

log = logging.getLogger("dclcomms.msgbus")

MAX_PAYLOAD_BYTES = 16 * 1024
MAX_SUBSCRIPTIONS = 64
KINDS = ("peer", "system")
ISLAND_EVENTS = ("peer_join", "peer_left")


def _topic_ok(check: Callable[[str], str], topic: str) -> None:
    """A dclcomms.nats.subjects topic check, its SubjectError turned into the frame error
    with the same code (``bad_topic`` or ``reserved_topic``)."""
    try:
        check(topic)
    except SubjectError as e:
        raise MessageBusError(str(e), code=e.code) from None


def _json(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


@dataclass
class _Session:
    address: str
    # (kind, topic) -> the pub/sub patterns it holds
    subs: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)
    queue: deque[tuple[str, bool]] = field(default_factory=deque)  # (text, droppable)
    messages: int = 0  # droppable entries in the queue
    signals: TokenBucket | None = None  # P2P signalling rate, made on first use
    held: int = 0  # subscribe replies waiting for the bus's server: the queue waits too


class MessageBusGateway:
    """Maps /bus sessions of one connector onto a :class:`~dclcomms.pubsub.PubSub`.

    ``server`` is the :class:`dclcomms.ws.Server` (``send_bus``); ``island_of`` returns
    an address's current island as this connector knows it (the connector glue's
    map), used when a session opens; later changes arrive through :meth:`on_island`
    (the realm registers it with the connector glue, which sees every ``island_changed``).
    """

    def __init__(
        self,
        server: Any,
        pubsub: PubSub,
        registry: Registry,
        *,
        global_topics: Iterable[str] = (),
        bus_queue: int = 50,
        island_of: Callable[[str], str | None] = lambda _a: None,
        p2p_signal_max_per_s: float = 10.0,
        p2p_signal_burst: int = 40,
        scene_of: Callable[[str], str | None] | None = None,
    ) -> None:
        """``scene_of``: the scene room (``/scene-rooms/<room>``) an address is in now
        (:meth:`dclcomms.ws.Server.scene_room_of`); None: no scene rooms here, scene
        topics are refused."""
        self.server = server
        self._scene_of = scene_of
        self.pubsub = pubsub
        self.p2p_signal_max_per_s = p2p_signal_max_per_s
        self.p2p_signal_burst = p2p_signal_burst
        self.membership = IslandMembership(pubsub)
        self.global_topics = frozenset(check_topic(t) for t in global_topics)
        self.bus_queue = bus_queue
        self._island_of_connector = island_of
        self.sessions: dict[str, _Session] = {}
        self.island: dict[str, str] = {}  # address (with a session) -> island
        self._bus_subs: dict[str, tuple[Subscription, int]] = {}  # internal pattern -> refs
        self._dirty: set[str] = set()
        self._flush_scheduled = False
        self._registering: set[asyncio.Task[None]] = set()  # pubsub.ready() behind replies
        self.m_frames = registry.counter("dcl_bus_frames_total", "/bus frames received, by type")
        self.m_errors = registry.counter("dcl_bus_errors_total", "/bus frames refused, by code")
        self.m_published = registry.counter(
            "dcl_bus_published_total", "/bus messages published onto the realm's bus"
        )
        self.m_delivered = registry.counter(
            "dcl_bus_delivered_total", "/bus messages sent to sessions"
        )
        self.m_dropped = registry.counter(
            "dcl_bus_dropped_total", "/bus messages dropped before sending, by reason"
        )
        self.m_signals = registry.counter(
            "dcl_bus_signals_total", "P2P signals published onto the realm's bus, by kind"
        )
        self.m_signal_rejects = registry.counter(
            "dcl_bus_signal_rejects_total", "P2P signals refused on publish, by code"
        )
        registry.gauge("dcl_bus_sessions", "open /bus sessions", fn=lambda: len(self.sessions))
        registry.gauge(
            "dcl_bus_subscriptions",
            "distinct bus subscriptions held for /bus sessions",
            fn=lambda: len(self._bus_subs),
        )

    def close(self) -> None:
        for t in self._registering:
            t.cancel()
        for sub, _ in self._bus_subs.values():
            sub.unsubscribe()
        self._bus_subs.clear()
        self.sessions.clear()
        self.membership.close()

    # --- server events ------------------------------------------------------------

    def on_opened(self, address: str) -> None:
        old = self.sessions.pop(address, None)
        if old is not None:  # replaced (4006): the new session starts with nothing
            self._drop_all(old)
        self.sessions[address] = _Session(address)
        island = self._island_of_connector(address)
        if island is not None:
            self.island[address] = island

    def on_closed(self, address: str) -> None:
        s = self.sessions.pop(address, None)
        if s is not None:
            self._drop_all(s)
        self.island.pop(address, None)

    def on_frame(self, address: str, text: str) -> None:
        s = self.sessions.get(address)
        if s is None:
            return
        kind = "?"
        topic: str | None = None
        try:
            try:
                frame = json.loads(text)
            except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
                raise MessageBusError("frame is not JSON", code="bad_frame") from None
            if not isinstance(frame, dict):
                raise MessageBusError("frame is not a JSON object", code="bad_frame")
            t = frame.get("type")
            kind = t if t in ("publish", "subscribe", "unsubscribe") else "?"  # bounded label
            raw_topic = frame.get("topic")
            if not isinstance(raw_topic, str):
                raise MessageBusError("topic must be a string", code="bad_frame")
            topic = raw_topic
            if kind == "publish":
                if frame.get("kind", "peer") != "peer":
                    raise MessageBusError(
                        "clients publish peer topics only", code="forbidden_topic"
                    )
                self._publish(s, topic, frame.get("payload"))
            elif kind in ("subscribe", "unsubscribe"):
                sub_kind = frame.get("kind", "peer")
                if sub_kind not in KINDS:
                    raise MessageBusError("kind must be peer or system", code="bad_frame")
                if kind == "subscribe":
                    self._subscribe(s, sub_kind, topic)
                else:
                    self._unsubscribe(s, sub_kind, topic)
            else:
                raise MessageBusError(
                    "type must be subscribe, unsubscribe or publish", code="bad_frame"
                )
            self.m_frames.inc(type=kind)
        except MessageBusError as e:
            self.m_frames.inc(type=kind)
            self.m_errors.inc(code=e.code)
            body: dict[str, Any] = {"type": "error", "code": e.code, "message": str(e)}
            if topic is not None:
                body["topic"] = topic
            self._send(s, _json(body))

    # --- rules ----------------------------------------------------------------------

    def _check(self, s: _Session, kind: str, topic: str, *, publish: bool) -> str:
        """The internal pub/sub pattern/subject for (kind, topic), or MessageBusError."""
        # grammar (bad_topic); heartbeat and island_changed reserved for both kinds
        _topic_ok(check_peer_topic, topic)
        toks = topic.split(".")
        if toks[0] == "bridge":  # the bridge's servers publish on client.bridge.<topic>
            raise MessageBusError(f"reserved topic {topic!r}", code="reserved_topic")
        if kind == "system":
            if publish:
                raise MessageBusError("clients publish peer topics only", code="forbidden_topic")
            if toks[0] == "island" and len(toks) == 3 and toks[2] in ISLAND_EVENTS:
                self._own_island(s, toks[1], topic)
                return f"engine.island.{toks[1]}.{toks[2]}"
            if topic not in self.global_topics:
                raise MessageBusError(f"topic {topic!r} is not allowed", code="forbidden_topic")
            _topic_ok(check_system_topic, topic)
            return f"client.{topic}"
        if ADDRESS_RE.fullmatch(toks[0]):
            if not publish and toks[0] != s.address:
                raise MessageBusError(
                    "only the addressee subscribes to an addressed topic", code="forbidden_topic"
                )
        elif toks[0] == "island" and len(toks) >= 3:
            self._own_island(s, toks[1], topic)
        elif toks[0] == "scene":
            if len(toks) < 3:
                raise MessageBusError(
                    f"scene topics are scene.<sceneId>.<name>: {topic!r}", code="bad_topic"
                )
            if not self.in_scene(s.address, toks[1]):
                raise MessageBusError(
                    f"topic {topic!r}: not in scene {toks[1]!r}'s room", code="forbidden_topic"
                )
        elif topic not in self.global_topics:
            raise MessageBusError(f"topic {topic!r} is not allowed", code="forbidden_topic")
        return f"client.peer.{s.address if publish else '*'}.{topic}"

    def in_scene(self, address: str, scene_id: str) -> bool:
        """Whether ``address`` is a member of scene ``scene_id``'s room here now."""
        if self._scene_of is None:
            return False
        room = self._scene_of(address)
        return room is not None and scene_id_of_room(room) == scene_id

    def _own_island(self, s: _Session, island: str, topic: str) -> None:
        if self.island.get(s.address) != island:
            raise MessageBusError(
                f"topic {topic!r}: not a member of island {island!r}", code="forbidden_topic"
            )

    def _publish(self, s: _Session, topic: str, payload: Any) -> None:
        if not isinstance(payload, str):
            raise MessageBusError("payload must be a base64 string", code="bad_payload")
        subject = self._check(s, "peer", topic, publish=True)
        if len(payload) > (MAX_PAYLOAD_BYTES * 4) // 3 + 4:
            raise MessageBusError(
                f"payload over {MAX_PAYLOAD_BYTES} bytes", code="payload_too_large"
            )
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise MessageBusError("payload is not base64", code="bad_payload") from None
        if len(data) > MAX_PAYLOAD_BYTES:
            raise MessageBusError(
                f"payload over {MAX_PAYLOAD_BYTES} bytes", code="payload_too_large"
            )
        signal = signal_target(topic)
        if signal is not None:
            self._check_signal(s, signal[0], signal[1], data)
            self.m_signals.inc(kind=signal[1])
        self.pubsub.publish(subject, AppData(data))
        self.m_published.inc()

    def _check_signal(self, s: _Session, to: str, kind: str, data: bytes) -> None:
        """P2P signalling rules on publish (dclcomms.signalling), else MessageBusError."""
        try:
            if s.signals is None:
                s.signals = TokenBucket(self.p2p_signal_max_per_s, self.p2p_signal_burst)
            if not s.signals.take():
                raise MessageBusError(
                    f"over {self.p2p_signal_max_per_s:g} signals/s (burst {self.p2p_signal_burst})",
                    code="rate_limited",
                )
            if not self.membership.same_island(s.address, to):
                raise MessageBusError(
                    f"{to} is not on this session's island", code="not_same_island"
                )
            check_signal(kind, data)
        except MessageBusError as e:
            self.m_signal_rejects.inc(code=e.code)
            raise

    def _subscribe(self, s: _Session, kind: str, topic: str) -> None:
        pattern = self._check(s, kind, topic, publish=False)
        patterns: tuple[str, ...] = (pattern,)
        if kind == "peer" and (topic in self.global_topics or topic.startswith("scene.")):
            patterns += (f"client.bridge.{topic}",)  # and the bridge's servers
        key = (kind, topic)
        if key not in s.subs:
            if len(s.subs) >= MAX_SUBSCRIPTIONS:
                raise MessageBusError(
                    f"at most {MAX_SUBSCRIPTIONS} subscriptions per session",
                    code="too_many_subscriptions",
                )
            s.subs[key] = patterns
            for p in patterns:
                self._ref(p)
        self._send(s, _json({"type": "subscribed", "kind": kind, "topic": topic}))
        self._hold_until_registered(s)

    def _hold_until_registered(self, s: _Session) -> None:
        """A network pub/sub (NATS) registers a subscription with its server some time
        after ``subscribe``: the session's queue, from its ``subscribed`` reply on, waits
        until every subscription made so far is registered (``pubsub.ready()``), so that
        whatever is published after the client reads ``subscribed`` reaches it (frames keep
        their order). An in-process pub/sub has nothing to wait for."""
        ready = getattr(self.pubsub, "ready", None)
        if ready is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (synchronous use): nothing can wait
            return
        s.held += 1
        task = loop.create_task(ready(), name=f"bus-subscribe {s.address}")
        self._registering.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._registering.discard(t)
            if not t.cancelled() and (e := t.exception()) is not None:
                log.warning("bus subscription not confirmed by the server: %s", e)
            s.held -= 1
            if s.held == 0 and s.queue and self.sessions.get(s.address) is s:
                self._dirty.add(s.address)
                if not self._flush_scheduled:
                    self._flush_scheduled = True
                    loop.call_soon(self.flush)

        task.add_done_callback(done)

    def _unsubscribe(self, s: _Session, kind: str, topic: str, reason: str | None = None) -> None:
        patterns = s.subs.pop((kind, topic), None)
        if patterns is None:
            raise MessageBusError(f"not subscribed to {kind} {topic!r}", code="not_subscribed")
        for p in patterns:
            self._unref(p)
        body = {"type": "unsubscribed", "kind": kind, "topic": topic}
        if reason is not None:
            body["reason"] = reason
        self._send(s, _json(body))

    def _drop_all(self, s: _Session) -> None:
        for patterns in s.subs.values():
            for p in patterns:
                self._unref(p)
        s.subs.clear()
        s.queue.clear()
        s.messages = 0

    # --- pub/sub subscriptions, shared by every session of this connector -------------------

    def _ref(self, pattern: str) -> None:
        entry = self._bus_subs.get(pattern)
        if entry is not None:
            self._bus_subs[pattern] = (entry[0], entry[1] + 1)
            return
        sub = self.pubsub.subscribe(pattern, self._on_bus_message)
        self._bus_subs[pattern] = (sub, 1)

    def _unref(self, pattern: str) -> None:
        entry = self._bus_subs.get(pattern)
        if entry is None:
            return
        if entry[1] <= 1:
            entry[0].unsubscribe()
            del self._bus_subs[pattern]
        else:
            self._bus_subs[pattern] = (entry[0], entry[1] - 1)

    def _on_bus_message(self, subject: str, msg: Any) -> None:
        t = subject.split(".")
        if t[0] == "client" and t[1] == "peer" and len(t) >= 4:
            kind, sender, topic = "peer", t[2], ".".join(t[3:])
            payload = msg.payload if isinstance(msg, AppData) else b""
            signal = signal_target(topic)
            if signal is not None and not self._signal_deliverable(sender, *signal, payload):
                return
        elif t[0] == "client" and t[1] == "bridge" and len(t) >= 3:
            # a third-party server's publish through the bridge (dclcomms.bridge.bus)
            env = decode_envelope(msg.payload) if isinstance(msg, AppData) else None
            if env is None:
                self.m_dropped.inc(reason="bad_bridge_message")
                return
            kind, topic = "peer", ".".join(t[2:])
            sender, payload = env
        elif t[0] == "client":
            kind, sender, topic = "system", None, ".".join(t[1:])
            payload = msg.payload if isinstance(msg, AppData) else b""
        elif t[0] == "engine" and t[1] == "island" and isinstance(msg, IslandPeer):
            kind, sender, topic = "system", None, f"island.{t[2]}.{t[3]}"
            payload = msg.to_bytes()
        else:
            return
        key = (kind, topic)
        body: dict[str, Any] = {"type": "message", "kind": kind, "topic": topic}
        if sender is not None:
            body["sender"] = sender
        body["payload"] = base64.b64encode(payload).decode()
        text: str | None = None
        scene_id = topic.split(".")[1] if kind == "peer" and topic.startswith("scene.") else None
        left: list[_Session] = []
        for s in self.sessions.values():
            if key in s.subs and s.address != sender:
                if scene_id is not None and not self.in_scene(s.address, scene_id):
                    left.append(s)  # no longer in the scene: its subscription ends
                    continue
                text = text or _json(body)
                self._send(s, text, message=True)
        for s in left:
            self.m_dropped.inc(reason="scene_left")
            self._unsubscribe(s, kind, topic, reason="scene_left")

    def _signal_deliverable(self, sender: str, to: str, kind: str, payload: bytes) -> bool:
        """The relay rule and the signal's shape again on delivery: the message may come
        from another connector, or from anything else publishing on NATS."""
        if to not in self.sessions:
            return False  # nobody here to deliver to
        if not self.membership.same_island(sender, to):
            self.m_dropped.inc(reason="not_same_island")
            return False
        try:
            check_signal(kind, payload)
        except MessageBusError:
            self.m_dropped.inc(reason="bad_signal")
            return False
        return True

    def on_island(self, addr: str, island_id: str) -> None:
        """An ``island_changed`` for ``addr`` (wired to the connector glue's listeners)."""
        s = self.sessions.get(addr)
        if s is None:
            return
        old = self.island.get(addr)
        self.island[addr] = island_id
        if old is None or old == island_id:
            return
        stale = sorted(
            (k, t) for k, t in s.subs if t.startswith("island.") and t.split(".")[1] == old
        )
        for kind, topic in stale:
            self._unsubscribe(s, kind, topic, reason="island_changed")

    # --- sending ------------------------------------------------------------------------

    def _send(self, s: _Session, text: str, *, message: bool = False) -> None:
        if message:
            if s.messages >= self.bus_queue:  # drop the oldest message (replies stay)
                for i, (_, droppable) in enumerate(s.queue):
                    if droppable:
                        del s.queue[i]
                        break
                s.messages -= 1
                self.m_dropped.inc(reason="queue_full")
            s.messages += 1
        s.queue.append((text, message))
        self._dirty.add(s.address)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # no loop (synchronous use): send now
                self.flush()

    def flush(self) -> None:
        """Hand every queued frame to the server (once per loop iteration)."""
        self._flush_scheduled = False
        dirty, self._dirty = self._dirty, set()
        for addr in dirty:
            s = self.sessions.get(addr)
            if s is None or s.held:  # held: sent once its subscriptions are registered
                continue
            while s.queue:
                text, message = s.queue.popleft()
                self.server.send_bus(addr, text)
                if message:
                    self.m_delivered.inc()
            s.messages = 0


def scene_id_of_room(room: str) -> str:
    """The scene id of a built-in scene room's id (control-plane.md 1.4): worlds
    ``WORLD_ROOM_PREFIX + <name>.eth + "-" + sceneId``, Genesis City
    ``SCENE_ROOM_PREFIX + realm + ":" + sceneId``."""
    _head, sep, tail = room.rpartition(".eth-")
    return tail if sep else room.rpartition(":")[2]


__all__ = ["MAX_PAYLOAD_BYTES", "MAX_SUBSCRIPTIONS", "MessageBusGateway", "scene_id_of_room"]
