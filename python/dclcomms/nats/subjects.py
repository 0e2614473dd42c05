"""NATS subject schemes: the pub/sub's internal subjects <-> the subjects on the wire.

The realm's parts (connector glue, core, stats) speak the internal subjects of
:mod:`dclcomms.pubsub` (archipelago.md 4, "current"). On NATS they travel under one
of three schemes, chosen with ``--subjects``:

``native`` (default; between dclcomms processes)
    as ``workers``, except that heartbeats travel as one ``HeartbeatBatch`` per
    connector batch on ``dclcomms.v1.heartbeats`` and ``island_changed`` as one
    ``IslandChanges`` per island per tick on ``dclcomms.v1.island.<id>.changed``,
    ``peer_left``/``peer_join`` as one ``IslandMembership`` per island per tick on
    ``dclcomms.v1.island.<id>.members`` (proto/dclcomms/nats/v1/batches.proto).

``workers`` (archipelago-workers compatible; identity mapping)
    ``peer.<addr>.heartbeat|connect|disconnect``, ``engine.peer.<addr>.island_changed``,
    ``engine.island.<id>.peer_join|peer_left``, ``engine.islands``, ``engine.discovery``.

``v3`` (legacy comms-v3 archipelago-service, archipelago.md 4 "legacy")
    ``client-proto.peer.<addr>.heartbeat``, ``peer.<addr>.connect|disconnect``,
    ``client-proto.<addr>.island_changed``, ``client-proto.island.<id>.peer_join|peer_left``,
    ``archipelago.islands``, ``service.discovery`` (JSON
    ``{serverName, status{currentTime, commitHash, userCount}}``).

Every token put into a subject is validated first (:func:`check_address`,
:func:`check_island_id`): a peer address is ``0x`` + 40 lowercase hex digits; an
island id is 1-128 characters of ``[A-Za-z0-9_-]`` (our generator: the prefix
then base-36 digits). ``*``, ``>``, ``.`` and whitespace can therefore never reach
a subject; offenders raise :class:`~dclcomms.errors.SubjectError` with a stable
``code`` (``bad_address``, ``bad_island_id``, ``bad_subject``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from dclcomms.errors import SubjectError
from dclcomms.pubsub import Discovery, Message, decode_payload, encode_payload

ADDRESS_RE = re.compile(r"0x[0-9a-f]{40}")
ISLAND_RE = re.compile(r"[A-Za-z0-9_-]{1,128}")

ADDR = "addr"
ISLAND = "island"


def check_address(token: str) -> str:
    """``token`` if it is a lowercase ``0x`` address, else ``SubjectError(bad_address)``."""
    if not isinstance(token, str) or ADDRESS_RE.fullmatch(token) is None:
        raise SubjectError(f"not a lowercase 0x address: {token!r}", code="bad_address")
    return token


def check_island_id(token: str) -> str:
    """``token`` if it is a valid island id, else ``SubjectError(bad_island_id)``."""
    if not isinstance(token, str) or ISLAND_RE.fullmatch(token) is None:
        raise SubjectError(
            f"not an island id ([A-Za-z0-9_-]{{1,128}}): {token!r}", code="bad_island_id"
        )
    return token


_CHECK = {ADDR: check_address, ISLAND: check_island_id}


TOPIC_TOKEN_RE = re.compile(r"[A-Za-z0-9_:-]+")
MAX_TOPIC_TOKENS = 8


def check_topic(topic: str) -> str:
    """``topic`` if it is 1-8 dot-separated ``[A-Za-z0-9_:-]+`` tokens, else ``bad_topic``."""
    toks = topic.split(".") if isinstance(topic, str) else []
    if not 1 <= len(toks) <= MAX_TOPIC_TOKENS or not all(TOPIC_TOKEN_RE.fullmatch(t) for t in toks):
        raise SubjectError(
            f"not a topic (1-{MAX_TOPIC_TOKENS} dot-separated tokens of [A-Za-z0-9_:-]): {topic!r}",
            code="bad_topic",
        )
    return topic


def check_peer_topic(topic: str) -> str:
    """An application-data topic of ``client.peer.<addr>.<topic>``.

    :func:`check_topic`, and never ``heartbeat`` nor a topic with an ``island_changed``
    token: in the v3 scheme those would land on the engine's own subjects
    (``client-proto.peer.<addr>.heartbeat``). Refused with code ``reserved_topic``.
    """
    check_topic(topic)
    toks = topic.split(".")
    if topic == "heartbeat" or "island_changed" in toks:
        raise SubjectError(f"reserved topic {topic!r}", code="reserved_topic")
    return topic


def check_system_topic(topic: str) -> str:
    """A realm-wide topic of ``client.<topic>``: :func:`check_topic`, not starting with
    ``peer``, ``island`` or an address and without an ``island_changed`` token (the v3
    scheme's ``client-proto.`` namespace also carries heartbeats, island_changed and
    island joins). Refused with code ``reserved_topic``."""
    check_topic(topic)
    toks = topic.split(".")
    if toks[0] in ("peer", "island") or toks[0].startswith("0x") or "island_changed" in toks:
        raise SubjectError(f"reserved topic {topic!r}", code="reserved_topic")
    return topic


@dataclass(frozen=True)
class Route:
    """One subject family: internal and wire templates.

    ``{}`` marks the variable token (validated as ``token``: an address or an island
    id); a final ``>`` marks a topic tail of 1-8 tokens (validated by
    :func:`check_topic`), e.g. the application data of ``client.peer.<addr>.<topic>``.
    """

    internal: str
    wire: str
    token: str | None  # ADDR, ISLAND or None (no variable token)

    @staticmethod
    def _split(template: str) -> tuple[list[str], int | None, bool]:
        toks = template.split(".")
        tail = toks[-1] == ">"
        if tail:
            toks = toks[:-1]
        return toks, (toks.index("{}") if "{}" in toks else None), tail

    def match(self, subject: str, *, wire: bool) -> tuple[str, str] | None:
        """``(token, tail)`` if ``subject`` has this route's shape ("" when absent), else None."""
        toks, idx, tail = self._split(self.wire if wire else self.internal)
        s = subject.split(".")
        if tail:
            if not len(toks) < len(s) <= len(toks) + MAX_TOPIC_TOKENS:
                return None
        elif len(s) != len(toks):
            return None
        for i, t in enumerate(toks):
            if i != idx and s[i] != t:
                return None
        return (s[idx] if idx is not None else ""), ".".join(s[len(toks) :])

    def fill(self, token: str, tail: str, *, wire: bool) -> str:
        out = (self.wire if wire else self.internal).replace("{}", token)
        return out[:-1] + tail if out.endswith(">") else out

    def wire_pattern(self, ptoks: list[str]) -> str | None:
        """The wire subscription of this route covering internal pattern ``ptoks``, if any."""
        itoks, idx, tail = self._split(self.internal)
        wtoks, widx, _ = self._split(self.wire)
        value = "*"

        def wire(rest: list[str]) -> str:
            return ".".join([value if j == widx else w for j, w in enumerate(wtoks)] + rest)

        for i, t in enumerate(itoks):
            if i >= len(ptoks):
                return None
            p = ptoks[i]
            if p == ">":  # covers the rest of this route: every token, any tail
                if idx is not None and i <= idx:
                    value = "*"
                return wire([">"] if tail else [])
            if i == idx:
                if p != "*":
                    _CHECK[self.token or ""](p)
                    value = p
            elif p not in ("*", t):
                return None
        rest = ptoks[len(itoks) :]
        if not tail:
            return None if rest else wire([])
        if not 1 <= len(rest) <= MAX_TOPIC_TOKENS:
            return None
        for t in rest:
            if t not in ("*", ">") and TOPIC_TOKEN_RE.fullmatch(t) is None:
                raise SubjectError(f"bad topic token {t!r} in a pattern", code="bad_topic")
        return wire(rest)


def _covers(a: str, b: str) -> bool:
    """Every subject NATS pattern ``b`` matches is matched by pattern ``a``."""
    at, bt = a.split("."), b.split(".")
    for i, t in enumerate(at):
        if t == ">":
            return len(bt) > i
        if i >= len(bt) or bt[i] == ">" or (t != "*" and (bt[i] == "*" or t != bt[i])):
            return False
    return len(at) == len(bt)


# The native scheme's batch subjects (proto/dclcomms/nats/v1/batches.proto).
NATIVE_HEARTBEATS = "dclcomms.v1.heartbeats"
NATIVE_ISLAND_PREFIX = "dclcomms.v1.island."
NATIVE_ISLAND_SUFFIX = ".changed"
NATIVE_MEMBERS_SUFFIX = ".members"


def native_island_subject(island_id: str) -> str:
    """``dclcomms.v1.island.<id>.changed`` (the id validated)."""
    return NATIVE_ISLAND_PREFIX + check_island_id(island_id) + NATIVE_ISLAND_SUFFIX


def _intersects(ptoks: list[str], shape: list[str]) -> bool:
    """Some subject of ``shape`` (``*`` = any token) is matched by pattern ``ptoks``."""
    for i, t in enumerate(ptoks):
        if t == ">":
            return len(shape) > i
        if i >= len(shape) or (t != "*" and shape[i] != "*" and t != shape[i]):
            return False
    return len(ptoks) == len(shape)


@dataclass(frozen=True)
class Scheme:
    name: str
    routes: tuple[Route, ...]
    json_discovery: bool = False
    # Heartbeats and island_changed travel as batches (native scheme): one
    # ``dclcomms.nats.v1.HeartbeatBatch`` per connector batch on
    # :data:`NATIVE_HEARTBEATS`, one ``IslandChanges`` per island per tick on
    # ``dclcomms.v1.island.<id>.changed``; those two internal subject families
    # have no per-peer wire subject; nor do peer_join / peer_left (one
    # ``IslandMembership`` per island per tick on ``dclcomms.v1.island.<id>.members``).
    batched: bool = False

    def _find(self, subject: str, *, wire: bool) -> tuple[Route, str, str]:
        for r in self.routes:
            m = r.match(subject, wire=wire)
            if m is not None:
                tok, tail = m
                if r.token is not None:
                    _CHECK[r.token](tok)
                if r.internal.endswith(">"):
                    (check_peer_topic if r.token is not None else check_system_topic)(tail)
                return r, tok, tail
        raise SubjectError(f"no {self.name} subject for {subject!r}", code="bad_subject")

    def to_wire(self, subject: str) -> str:
        """The wire subject of an internal one (tokens validated)."""
        r, tok, tail = self._find(subject, wire=False)
        return r.fill(tok, tail, wire=True)

    def from_wire(self, subject: str) -> str:
        """The internal subject of a wire one (tokens validated)."""
        r, tok, tail = self._find(subject, wire=True)
        return r.fill(tok, tail, wire=False)

    def wire_patterns(self, pattern: str) -> list[str]:
        """NATS subscriptions covering every internal subject ``pattern`` can match.

        Receivers still filter with :func:`subject_matches` on the internal subject.
        """
        ptoks = pattern.split(".")
        for t in ptoks:
            if not t or any(c.isspace() for c in t) or (t not in ("*", ">") and "*" in t):
                raise SubjectError(f"bad subscription pattern {pattern!r}", code="bad_subject")
            if ">" in t and t != ">":
                raise SubjectError(f"bad subscription pattern {pattern!r}", code="bad_subject")
        out: list[str] = []
        if self.batched:
            if _intersects(ptoks, ["peer", "*", "heartbeat"]):
                out.append(NATIVE_HEARTBEATS)
            if _intersects(ptoks, ["engine", "peer", "*", "island_changed"]):
                out.append(NATIVE_ISLAND_PREFIX + "*" + NATIVE_ISLAND_SUFFIX)
            if _intersects(ptoks, ["engine", "island", "*", "peer_join"]) or _intersects(
                ptoks, ["engine", "island", "*", "peer_left"]
            ):
                out.append(NATIVE_ISLAND_PREFIX + "*" + NATIVE_MEMBERS_SUFFIX)
        for r in self.routes:
            w = r.wire_pattern(ptoks)
            if w is not None and w not in out:
                out.append(w)
        if not out:
            raise SubjectError(f"no {self.name} subject matches {pattern!r}", code="bad_subject")
        # one NATS subscription per subject: drop patterns another one already covers
        return [w for w in out if not any(o != w and _covers(o, w) for o in out)]

    def encode(self, subject: str, message: Message) -> bytes:
        """Wire bytes of a typed message published on internal ``subject``."""
        if self.json_discovery and isinstance(message, Discovery):
            return json.dumps(
                {
                    "serverName": message.server_name,
                    "status": {
                        "currentTime": message.current_time_ms,
                        "commitHash": message.commit_hash,
                        "userCount": message.user_count,
                    },
                },
                separators=(",", ":"),
            ).encode()
        return encode_payload(message)

    def decode(self, subject: str, data: bytes) -> Message:
        """The typed message of wire bytes received for internal ``subject``."""
        if self.json_discovery and subject == "engine.discovery":
            try:
                d: Any = json.loads(data)
                s = d["status"]
                return Discovery(
                    str(d["serverName"]),
                    int(s["currentTime"]),
                    str(s.get("commitHash", "")),
                    int(s.get("userCount", 0)),
                )
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f"bad service.discovery JSON: {e}") from e
        return decode_payload(subject, data)


WORKERS = Scheme(
    "workers",
    (
        Route("peer.{}.heartbeat", "peer.{}.heartbeat", ADDR),
        Route("peer.{}.connect", "peer.{}.connect", ADDR),
        Route("peer.{}.disconnect", "peer.{}.disconnect", ADDR),
        Route("engine.peer.{}.island_changed", "engine.peer.{}.island_changed", ADDR),
        Route("engine.island.{}.peer_join", "engine.island.{}.peer_join", ISLAND),
        Route("engine.island.{}.peer_left", "engine.island.{}.peer_left", ISLAND),
        Route("engine.islands", "engine.islands", None),
        Route("engine.discovery", "engine.discovery", None),
        Route("client.peer.{}.>", "client.peer.{}.>", ADDR),
        Route("client.>", "client.>", None),
    ),
)

V3 = Scheme(
    "v3",
    (
        Route("peer.{}.heartbeat", "client-proto.peer.{}.heartbeat", ADDR),
        Route("peer.{}.connect", "peer.{}.connect", ADDR),
        Route("peer.{}.disconnect", "peer.{}.disconnect", ADDR),
        Route("engine.peer.{}.island_changed", "client-proto.{}.island_changed", ADDR),
        Route("engine.island.{}.peer_join", "client-proto.island.{}.peer_join", ISLAND),
        Route("engine.island.{}.peer_left", "client-proto.island.{}.peer_left", ISLAND),
        Route("engine.islands", "archipelago.islands", None),
        Route("engine.discovery", "service.discovery", None),
        Route("client.peer.{}.>", "client-proto.peer.{}.>", ADDR),
        Route("client.>", "client-proto.>", None),
    ),
    json_discovery=True,
)

NATIVE = Scheme(
    "native",
    tuple(
        r
        for r in WORKERS.routes
        if r.internal
        not in (
            "peer.{}.heartbeat",
            "engine.peer.{}.island_changed",
            "engine.island.{}.peer_join",
            "engine.island.{}.peer_left",
        )
    ),
    batched=True,
)

SCHEMES: dict[str, Scheme] = {s.name: s for s in (NATIVE, WORKERS, V3)}


def scheme(name: str) -> Scheme:
    """The scheme called ``name`` (``native``, ``workers`` or ``v3``)."""
    try:
        return SCHEMES[name]
    except KeyError:
        raise SubjectError(
            f"unknown subject scheme {name!r} (expected one of {sorted(SCHEMES)})",
            code="bad_subject",
        ) from None


__all__ = [
    "NATIVE",
    "NATIVE_HEARTBEATS",
    "NATIVE_ISLAND_PREFIX",
    "NATIVE_ISLAND_SUFFIX",
    "NATIVE_MEMBERS_SUFFIX",
    "SCHEMES",
    "V3",
    "WORKERS",
    "Route",
    "Scheme",
    "check_address",
    "check_island_id",
    "check_peer_topic",
    "check_system_topic",
    "check_topic",
    "native_island_subject",
    "scheme",
]
