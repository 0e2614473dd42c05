"""Signed fetch (ADR-44) verification with the dclcomms hardening of
authchain.md section 8 (private; import from dclcomms.auth).

A request proves its signer with headers ``x-identity-auth-chain-<i>`` (one
JSON link each, read until the first gap, at least two), ``x-identity-timestamp``
(ms, decimal) and ``x-identity-metadata`` (JSON object text), read by the C++ core
(``dclcomms::auth::parse_signed_fetch``, fuzzed by ``fuzz_signed_fetch``). The chain
must authorize ``lower(METHOD:PATH:TIMESTAMP:METADATA)``. dclcomms bounds the
timestamp in both directions and, through :class:`SignedFetchVerifier`, makes
the final signature single-use on state-changing routes.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import threading
from collections.abc import Mapping
from typing import NamedTuple

from dclcomms import _core
from dclcomms.auth.chain import (
    AuthResult,
    Provider,
    as_provider,
    clock_ms,
    to_utf8,
    verify_auth_chain,
)

_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141

# HTTP status for each signed-fetch failure code: 400 for requests that are not
# signed fetches at all, 401 for everything that fails authentication.
_STATUS_400 = frozenset({"signed_fetch_malformed"})


def signed_fetch_status(code: str | None) -> int:
    """HTTP status for a result code: 200 (None), 400 (malformed request) or 401."""
    if code is None:
        return 200
    return 400 if code in _STATUS_400 else 401


class _Parsed(NamedTuple):
    """The signed-fetch headers of a request, read by the C++ core."""

    links: list[str]  # link JSON texts as sent
    link_types: list[str]  # each link's "type" when a string, else ""
    payload: str  # lower(METHOD:PATH:TIMESTAMP:METADATA)
    timestamp_ms: int
    body_hash: int  # 0: no bodySha256, 1: a string (body_sha256), 2: another JSON value
    body_sha256: str
    final_signature: str  # the last link's "signature" when a string, else ""


def _parse(
    method: str,
    path: str,
    headers: Mapping[str, str],
    now_ms: int,
    window_ms: int,
    max_future_ms: int,
) -> _Parsed | AuthResult:
    """The parsed headers or the failure (read in C++: dclcomms::auth::parse_signed_fetch)."""
    code, message, links, types, timestamp, metadata, body_hash, body_sha256, signature = (
        _core.parse_signed_fetch(
            [(to_utf8(name), to_utf8(value)) for name, value in headers.items()],
            now_ms,
            window_ms,
            max_future_ms,
        )
    )
    if code is not None:
        return AuthResult.failure(code, message)
    # Lowercased as the client's toLowerCase does (Unicode), from the exact header texts.
    payload = f"{method}:{path}:{timestamp}:{metadata}".lower()
    return _Parsed(links, types, payload, int(timestamp), body_hash, body_sha256, signature)


def _check_body(parsed: _Parsed, body: bytes | None) -> AuthResult | None:
    if parsed.body_hash == 0 or body is None:
        return None
    if parsed.body_hash != 1 or hashlib.sha256(body).hexdigest() != parsed.body_sha256.lower():
        return AuthResult.failure(
            "signed_fetch_body_mismatch", "request body does not match metadata bodySha256"
        )
    return None


def verify_signed_fetch(
    method: str,
    path: str,
    headers: Mapping[str, str],
    *,
    now_ms: int | None = None,
    window_ms: int = 60_000,
    max_future_ms: int = 30_000,
    provider: Provider | str | None = None,
    body: bytes | None = None,
) -> AuthResult:
    """Verify an ADR-44 signed request (stateless: no replay protection).

    ``path``: the URL path as the client saw it (no host, query or fragment).
    ``headers``: any mapping; names are matched case-insensitively.
    ``body``: when given and the metadata carries ``bodySha256``, it must match.
    Codes: ``signed_fetch_malformed`` (HTTP 400), ``signed_fetch_expired``,
    ``signed_fetch_future``, ``signed_fetch_body_mismatch`` and every chain code
    (HTTP 401; see :func:`signed_fetch_status`).
    """
    now = clock_ms() if now_ms is None else now_ms
    parsed = _parse(method, path, headers, now, window_ms, max_future_ms)
    if isinstance(parsed, AuthResult):
        return parsed
    result = verify_auth_chain(
        "[" + ",".join(parsed.links) + "]", parsed.payload, now_ms=now, provider=provider
    )
    if result.ok:
        return _check_body(parsed, body) or result
    return result


def _replay_key(final_signature: str) -> str:
    """The final signature in a form shared by all its malleable variants.

    High-s twins (s -> n - s, v flipped), v written as 0/1 or 27/28 and hex
    case all verify; they must count as the same signature.
    """
    sig = final_signature.lower()
    if len(sig) == 132 and sig.startswith("0x"):
        try:
            r, s = int(sig[2:66], 16), int(sig[66:130], 16)
        except ValueError:
            return sig
        return f"{r:064x}{min(s, _N - s):064x}"
    return sig


class SignedFetchVerifier:
    """Signed-fetch verification with a replay cache, for HTTP services.

    For every method except GET, the final link's signature is single-use
    within the window: a second request carrying it fails with ``replayed``
    (HTTP 401). Entries expire with the window, so memory is bounded by the
    number of valid requests per ``window_ms + max_future_ms``.

    Delegation cache: a client signs every request with the same ephemeral key,
    so its first two links (``SIGNER``, ``ECDSA_EPHEMERAL``) repeat byte for byte.
    Once a chain of exactly ``SIGNER, ECDSA_EPHEMERAL, ECDSA_SIGNED_ENTITY`` has
    verified, the pair of link texts is remembered with its owner and the
    delegation's expiration (up to ``delegation_cache`` pairs; 0 disables it).
    A later request with the same two link texts, before that expiration, only
    has its final link verified (one signature recovery instead of two) as the
    chain ``[SIGNER(ephemeral), final link]``; anything else, and any failure of
    that short check, takes the full verification, so results (codes included)
    are those of :func:`verify_signed_fetch`. EIP-1654 delegations are never
    cached (a contract's answer may change). ``delegation_hits`` counts the
    short checks that succeeded.

    Thread-safe: the caches are guarded by a lock; verification runs outside it.
    """

    def __init__(
        self,
        *,
        window_ms: int = 60_000,
        max_future_ms: int = 30_000,
        provider: Provider | str | None = None,
        replay_protection: bool = True,
        delegation_cache: int = 65_536,
    ) -> None:
        self.window_ms = window_ms
        self.max_future_ms = max_future_ms
        self.provider = as_provider(provider)
        self.replay_protection = replay_protection
        self.delegation_cache = max(0, int(delegation_cache))
        self.delegation_hits = 0
        self._lock = threading.Lock()
        self._seen: dict[str, int] = {}  # replay key -> forget after (ms)
        self._expiry: list[tuple[int, str]] = []  # heap of (forget after, key)
        # (SIGNER link text, ECDSA_EPHEMERAL link text) -> (owner, ephemeral, expires_ms)
        self._delegations: dict[tuple[str, str], tuple[str, str, int]] = {}

    def __len__(self) -> int:
        with self._lock:
            return len(self._seen)

    def _chain(self, parsed: _Parsed, now: int) -> AuthResult:
        links, payload = parsed.links, parsed.payload
        cacheable = self.delegation_cache > 0 and parsed.link_types == [
            "SIGNER",
            "ECDSA_EPHEMERAL",
            "ECDSA_SIGNED_ENTITY",
        ]
        if cacheable:
            key = (links[0], links[1])
            with self._lock:
                hit = self._delegations.get(key)
            if hit is not None:
                owner, ephemeral, expires_ms = hit
                if expires_ms > now:
                    signer = _compact_link("SIGNER", ephemeral)
                    short = verify_auth_chain(
                        f"[{signer},{links[2]}]", payload, now_ms=now, provider=self.provider
                    )
                    if short.ok:
                        with self._lock:
                            self.delegation_hits += 1
                        return AuthResult(True, owner, ephemeral, expires_ms, None, short.message)
                else:
                    with self._lock:
                        self._delegations.pop(key, None)
        result = verify_auth_chain(
            "[" + ",".join(links) + "]", payload, now_ms=now, provider=self.provider
        )
        if (
            cacheable
            and result.ok
            and result.signer is not None
            and result.ephemeral is not None
            and result.expires_ms is not None
        ):
            with self._lock:
                if len(self._delegations) >= self.delegation_cache:
                    self._evict(now)
                self._delegations[(links[0], links[1])] = (
                    result.signer,
                    result.ephemeral,
                    result.expires_ms,
                )
        return result

    def _evict(self, now: int) -> None:
        """Under the lock: drop expired delegations, else the oldest quarter."""
        expired = [k for k, v in self._delegations.items() if v[2] <= now]
        for k in expired:
            del self._delegations[k]
        if len(self._delegations) >= self.delegation_cache:
            for k in list(self._delegations)[: max(1, self.delegation_cache // 4)]:
                del self._delegations[k]

    def verify(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str],
        *,
        now_ms: int | None = None,
        body: bytes | None = None,
    ) -> AuthResult:
        now = clock_ms() if now_ms is None else now_ms
        parsed = _parse(method, path, headers, now, self.window_ms, self.max_future_ms)
        if isinstance(parsed, AuthResult):
            return parsed
        result = self._chain(parsed, now)
        if result.ok:
            result = _check_body(parsed, body) or result
        if not result.ok or not self.replay_protection or method.upper() == "GET":
            return result
        key = _replay_key(parsed.final_signature)
        # A request is acceptable while ts >= now - window, i.e. until ts + window.
        forget_after = parsed.timestamp_ms + self.window_ms
        with self._lock:
            while self._expiry and self._expiry[0][0] < now:
                _, old = heapq.heappop(self._expiry)
                if self._seen.get(old, now) < now:
                    del self._seen[old]
            if key in self._seen:
                return AuthResult.failure(
                    "replayed", "this signed request was already used (final signature seen)"
                )
            self._seen[key] = forget_after
            heapq.heappush(self._expiry, (forget_after, key))
        return result


def _compact_link(type_: str, payload: str) -> str:
    return json.dumps({"type": type_, "payload": payload, "signature": ""}, separators=(",", ":"))


__all__ = ["SignedFetchVerifier", "signed_fetch_status", "verify_signed_fetch"]
