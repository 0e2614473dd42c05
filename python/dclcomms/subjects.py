"""NATS subject schemes: the bus's internal subjects <-> the subjects on the wire.

The realm's parts (connector glue, core, stats) speak the internal subjects of
:mod:`dclcomms.bus` (archipelago.md 4, "current"). On NATS they travel under one
of two schemes, chosen with ``--subjects``:

``workers`` (default, archipelago-workers compatible; identity mapping)
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

from dclcomms.bus import Discovery, Message, decode_payload, encode_payload, subject_matches
from dclcomms.errors import SubjectError

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


@dataclass(frozen=True)
class Route:
    """One subject family: internal and wire templates, ``{}`` marking the token."""

    internal: str
    wire: str
    token: str | None  # ADDR, ISLAND or None (no variable token)

    def _split(self, template: str) -> tuple[list[str], int | None]:
        toks = template.split(".")
        return toks, (toks.index("{}") if "{}" in toks else None)

    def match(self, subject: str, *, wire: bool) -> str | None:
        """The token if ``subject`` has this route's (wire or internal) shape, "" if none."""
        toks, idx = self._split(self.wire if wire else self.internal)
        s = subject.split(".")
        if len(s) != len(toks):
            return None
        for i, t in enumerate(toks):
            if i != idx and s[i] != t:
                return None
        return s[idx] if idx is not None else ""


@dataclass(frozen=True)
class Scheme:
    name: str
    routes: tuple[Route, ...]
    json_discovery: bool = False

    def _find(self, subject: str, *, wire: bool) -> tuple[Route, str]:
        for r in self.routes:
            tok = r.match(subject, wire=wire)
            if tok is not None:
                if r.token is not None:
                    _CHECK[r.token](tok)
                return r, tok
        raise SubjectError(f"no {self.name} subject for {subject!r}", code="bad_subject")

    def to_wire(self, subject: str) -> str:
        """The wire subject of an internal one (tokens validated)."""
        r, tok = self._find(subject, wire=False)
        return r.wire.replace("{}", tok)

    def from_wire(self, subject: str) -> str:
        """The internal subject of a wire one (tokens validated)."""
        r, tok = self._find(subject, wire=True)
        return r.internal.replace("{}", tok)

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
        for r in self.routes:
            itoks, idx = r._split(r.internal)
            value = "*"
            if idx is not None and idx < len(ptoks) and ptoks[idx] not in ("*", ">"):
                value = ptoks[idx]
            sample = [("x" if value == "*" else value) if t == "{}" else t for t in itoks]
            if subject_matches(pattern, ".".join(sample)):
                if value != "*" and r.token is not None:
                    _CHECK[r.token](value)
                w = r.wire.replace("{}", value)
                if w not in out:
                    out.append(w)
        if not out:
            raise SubjectError(f"no {self.name} subject matches {pattern!r}", code="bad_subject")
        return out

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
    ),
    json_discovery=True,
)

SCHEMES: dict[str, Scheme] = {s.name: s for s in (WORKERS, V3)}


def scheme(name: str) -> Scheme:
    """The scheme called ``name`` (``workers`` or ``v3``)."""
    try:
        return SCHEMES[name]
    except KeyError:
        raise SubjectError(
            f"unknown subject scheme {name!r} (expected one of {sorted(SCHEMES)})",
            code="bad_subject",
        ) from None


__all__ = [
    "SCHEMES",
    "V3",
    "WORKERS",
    "Route",
    "Scheme",
    "check_address",
    "check_island_id",
    "scheme",
]
