"""Identity and tokens: auth chains, personal_sign, signed fetch, HS256 JWT.

The heavy lifting (Keccak-256, secp256k1 recovery, chain verification, JWT)
runs in the compiled core with the GIL released; this module converts inputs,
picks defaults (the clock) and shapes results. See docs/auth.md for the
verification pipeline, every failure ``code`` and thread-safety.

Verification never raises on bad input: :func:`verify_auth_chain`,
:func:`verify_many` and :func:`verify_signed_fetch` return an
:class:`AuthResult` whose ``code`` says why a chain was rejected. Helpers that
*produce* values (:func:`recover_address`, :func:`jwt_decode`, ...) raise
:class:`dclcomms.AuthError` / :class:`dclcomms.TokenError` with a stable code.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from dclcomms import _core
from dclcomms.auth.chain import (
    AuthResult,
    JsonRpcProvider,
    Provider,
    to_utf8,
    verify_auth_chain,
    verify_many,
)
from dclcomms.auth.identity import EphemeralIdentity, Identity
from dclcomms.auth.signed_fetch import (
    SignedFetchVerifier,
    signed_fetch_status,
    verify_signed_fetch,
)
from dclcomms.errors import AuthError, TokenError

__all__ = [
    "AuthError",
    "AuthResult",
    "EphemeralIdentity",
    "Identity",
    "JsonRpcProvider",
    "Provider",
    "SignedFetchVerifier",
    "TokenError",
    "jwt_decode",
    "jwt_encode",
    "keccak256",
    "livekit_token",
    "parse_timestamp_ms",
    "personal_message_hash",
    "random_challenge",
    "recover_address",
    "signed_fetch_status",
    "to_checksum_address",
    "verify_auth_chain",
    "verify_many",
    "verify_signed_fetch",
    "ws_room_token",
]


def keccak256(data: bytes | bytearray | memoryview) -> bytes:
    """Keccak-256 as Ethereum uses it (not SHA3-256)."""
    return _core.keccak256(bytes(data))


def personal_message_hash(message: str | bytes) -> bytes:
    """``keccak256(0x19 "Ethereum Signed Message:\\n" <byte length> message)``; str is UTF-8."""
    return _core.personal_message_hash(to_utf8(message))


def to_checksum_address(address: str) -> str:
    """EIP-55 form of a ``0x`` + 40 hex address; AuthError ``bad_address`` otherwise."""
    return _core.to_checksum_address(address)


def recover_address(message: str | bytes, signature: str) -> str:
    """The EIP-55 address that personal_signed ``message``.

    Raises AuthError with code ``bad_signature_encoding``, ``bad_signature_length``,
    ``bad_recovery_id``, ``signature_range`` or ``signer_mismatch`` (no key recovers).
    """
    if not isinstance(signature, str):
        raise TypeError("signature must be a 0x-prefixed hex str")
    return _core.to_checksum_address(_core.recover_address(to_utf8(message), signature))


def random_challenge() -> str:
    """``"dcl-"`` + 32 lowercase hex characters from a CSPRNG."""
    return _core.random_challenge()


def parse_timestamp_ms(text: str) -> int | None:
    """Strict ISO-8601 / RFC-1123 timestamp (ephemeral expirations) in ms, or None."""
    return _core.parse_timestamp_ms(text)


def _secret(secret: bytes | str) -> bytes:
    if isinstance(secret, str):
        return secret.encode("utf-8")
    if isinstance(secret, bytes | bytearray):
        return bytes(secret)
    raise TypeError("secret must be bytes or str")


def jwt_encode(
    claims: Mapping[str, Any], secret: bytes | str, *, header: Mapping[str, Any] | None = None
) -> str:
    """HS256 compact JWT (claim order preserved). TokenError ``unsupported_alg`` /
    ``bad_header`` / ``bad_claims`` on invalid input."""
    return _core.jwt_encode(dict(claims), _secret(secret), None if header is None else dict(header))


def jwt_decode(
    token: str,
    secret: bytes | str,
    *,
    now_s: int | None = None,
    leeway_s: int = 0,
    issuer: str | None = None,
    require_exp: bool = False,
) -> dict[str, Any]:
    """Verify an HS256 JWT and return its claims.

    Raises TokenError: ``malformed``, ``bad_header``, ``unsupported_alg`` (incl. ``none``),
    ``bad_signature`` (constant-time compare), ``expired``, ``not_yet_valid``,
    ``bad_issuer``, ``missing_exp``.
    """
    if not isinstance(token, str):
        raise TypeError("token must be a str")
    now = time.time_ns() // 1_000_000_000 if now_s is None else now_s
    result: dict[str, Any] = _core.jwt_decode(
        token, _secret(secret), now, leeway_s, issuer, require_exp
    )
    return result


def livekit_token(
    api_key: str,
    api_secret: bytes | str,
    *,
    identity: str,
    room: str,
    ttl_s: int = 300,
    now_s: int | None = None,
    name: str | None = None,
    metadata: str | None = None,
    grants: Mapping[str, Any] | None = None,
) -> str:
    """LiveKit access token with the island grant of transports.md 2.2.

    ``nbf`` = now, ``exp`` = now + ttl_s, ``iss`` = api_key, ``sub`` = identity.
    ``grants`` overrides or extends the island grant (keys keep their place).
    Byte-identical to livekit-server-sdk's token for the same inputs.
    """
    now = time.time_ns() // 1_000_000_000 if now_s is None else now_s
    return _core.livekit_token(
        api_key,
        _secret(api_secret),
        identity,
        room,
        ttl_s,
        now,
        name,
        metadata,
        None if grants is None else dict(grants),
    )


def ws_room_token(
    secret: bytes | str, *, address: str, room: str, ttl_s: int = 300, now_s: int | None = None
) -> str:
    """The built-in rooms' access token (transports.md 1.3), the one builder of its claims.

    HS256 over ``sub`` (address), ``room``, ``iat`` = now and ``exp`` = now + ttl_s,
    in that order; the gatekeeper's scene rooms mint it, and the island transport mints
    an island's tokens, byte for byte these, in one C++ call
    (``_core.mint_connection_strings``; tests/test_policy.py compares them).
    """
    now = time.time_ns() // 1_000_000_000 if now_s is None else now_s
    return jwt_encode({"sub": address, "room": room, "iat": now, "exp": now + ttl_s}, secret)


def verify_main(argv: Sequence[str]) -> int:
    """``dclcomms auth-verify``: check an auth chain by hand (debugging client logins).

    Reads the chain JSON from a file or stdin, prints the AuthResult as JSON and
    exits 0 when it verifies, 1 otherwise.
    """
    import argparse
    import dataclasses
    import json
    import sys

    parser = argparse.ArgumentParser(
        prog="dclcomms auth-verify", description="Verify an auth chain against a payload."
    )
    parser.add_argument("payload", help="the expected final payload (e.g. the challenge)")
    parser.add_argument("chain", nargs="?", default="-", help="chain JSON file (default: stdin)")
    parser.add_argument("--now-ms", type=int, default=None, help="clock (default: now)")
    parser.add_argument("--provider", default=None, help="JSON-RPC URL for EIP-1654 links")
    args = parser.parse_args(list(argv))
    if args.chain == "-":
        text = sys.stdin.read()
    else:
        with open(args.chain, encoding="utf-8") as f:
            text = f.read()
    result = verify_auth_chain(
        text.strip(), args.payload, now_ms=args.now_ms, provider=args.provider
    )
    print(json.dumps(dataclasses.asdict(result), indent=2))
    return 0 if result.ok else 1
