"""Client-side identities: keys, ephemeral delegations, signed challenges and
signed-fetch headers (private; import from dclcomms.auth).

Signing runs in the compiled core (libsecp256k1, RFC-6979 nonces, low-s,
v = 27/28), byte-identical to eth-account and ethers.
"""

from __future__ import annotations

import json
import random
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dclcomms import _core
from dclcomms.auth.chain import clock_ms, to_utf8
from dclcomms.errors import AuthError

#: Lifetime of the ephemeral key :meth:`Identity.sign_challenge` creates when none is given.
DEFAULT_EPHEMERAL_TTL_MS = 24 * 3600 * 1000


def _compact(value: Any) -> str:
    # JSON.stringify output: no spaces, non-ASCII kept as UTF-8.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _link(type_: str, payload: str, signature: str) -> dict[str, str]:
    return {"type": type_, "payload": payload, "signature": signature}


class Identity:
    """A secp256k1 key pair with an Ethereum address (a wallet, or an ephemeral key).

    ``Identity.generate(seed)`` is reproducible for a given seed (tests,
    simulations); without a seed the key comes from the OS CSPRNG. Ephemeral
    keys made by :meth:`create_ephemeral_chain` come from the same source, so
    a seeded identity produces a reproducible sequence of ephemerals.
    Not thread-safe when seeded (the RNG is shared); signing itself is.
    """

    __slots__ = ("_address", "_cached", "_key", "_rng")

    def __init__(self, private_key: bytes, *, _rng: random.Random | None = None) -> None:
        if not _core.is_valid_private_key(private_key):
            raise AuthError("private key must be 32 bytes with 0 < key < n", code="bad_private_key")
        self._key = bytes(private_key)
        self._address = _core.to_checksum_address(_core.address_of(self._key))
        self._rng = _rng
        self._cached: EphemeralIdentity | None = None

    @classmethod
    def generate(cls, seed: int | None = None) -> Identity:
        rng = None if seed is None else random.Random(seed)
        return cls(_new_key(rng), _rng=rng)

    @classmethod
    def from_private_key(cls, private_key: str | bytes) -> Identity:
        """From 32 raw bytes or 64 hex digits (``0x`` optional)."""
        if isinstance(private_key, str):
            digits = private_key[2:] if private_key[:2] in ("0x", "0X") else private_key
            try:
                raw = bytes.fromhex(digits)
            except ValueError:
                raise AuthError("private key is not hex", code="bad_private_key") from None
            return cls(raw)
        return cls(private_key)

    @property
    def address(self) -> str:
        """EIP-55 checksummed address."""
        return self._address

    @property
    def private_key(self) -> str:
        """``0x`` + 64 lowercase hex digits."""
        return "0x" + self._key.hex()

    def __repr__(self) -> str:  # never print the key
        return f"Identity({self._address})"

    def sign_personal(self, message: str | bytes) -> str:
        """personal_sign of ``message``: ``0x`` + 130 hex (r, s, v = 27/28)."""
        return _core.sign_personal(self._key, to_utf8(message))

    def create_ephemeral_chain(self, expiration_ms: int) -> EphemeralIdentity:
        """A new ephemeral key authorized by this identity until ``expiration_ms``.

        The delegation text is ``Decentraland Login\\nEphemeral address: <EIP-55>\\n
        Expiration: <ISO-8601 with ms and Z>``, personal_signed by this identity.
        """
        ephemeral = Identity(_new_key(self._rng), _rng=self._rng)
        text = (
            "Decentraland Login\n"
            f"Ephemeral address: {ephemeral.address}\n"
            f"Expiration: {_core.format_iso8601_ms(expiration_ms)}"
        )
        return EphemeralIdentity(
            owner=self._address,
            ephemeral=ephemeral,
            expiration_ms=expiration_ms,
            text=text,
            signature=self.sign_personal(text),
        )

    def _ephemeral(self, now_ms: int | None) -> EphemeralIdentity:
        now = clock_ms() if now_ms is None else now_ms
        # Renew a minute early so a chain never expires in flight.
        if self._cached is None or self._cached.expiration_ms - 60_000 <= now:
            self._cached = self.create_ephemeral_chain(now + DEFAULT_EPHEMERAL_TTL_MS)
        return self._cached

    def sign_challenge(self, challenge: str, *, now_ms: int | None = None) -> str:
        """Auth chain JSON exactly as the JavaScript clients send it.

        ``[SIGNER(owner, ""), ECDSA_EPHEMERAL(text, owner sig),
        ECDSA_SIGNED_ENTITY(challenge, ephemeral sig)]`` with an ephemeral key
        valid for a day (created on first use, renewed when near expiry).
        """
        return self._ephemeral(now_ms).sign_challenge(challenge)

    def sign_fetch_headers(
        self,
        method: str,
        path: str,
        *,
        metadata: Mapping[str, Any] | str | None = None,
        now_ms: int | None = None,
    ) -> dict[str, str]:
        """ADR-44 signed-fetch headers for a request (see EphemeralIdentity)."""
        return self._ephemeral(now_ms).sign_fetch_headers(
            method, path, metadata=metadata, now_ms=now_ms
        )


def _new_key(rng: random.Random | None) -> bytes:
    while True:  # rejection sampling: almost every 256-bit value is a valid key
        key = secrets.token_bytes(32) if rng is None else rng.getrandbits(256).to_bytes(32, "big")
        if _core.is_valid_private_key(key):
            return key


@dataclass(frozen=True, slots=True)
class EphemeralIdentity:
    """An ephemeral key plus the owner's signed delegation to it."""

    owner: str  # EIP-55 owner address
    ephemeral: Identity
    expiration_ms: int
    text: str  # the signed "Decentraland Login ..." text
    signature: str  # owner's personal_sign of text

    @property
    def address(self) -> str:
        """EIP-55 address of the ephemeral key."""
        return self.ephemeral.address

    def links(self) -> list[dict[str, str]]:
        """``[SIGNER(owner), ECDSA_EPHEMERAL(text, owner sig)]``."""
        return [
            _link("SIGNER", self.owner, ""),
            _link("ECDSA_EPHEMERAL", self.text, self.signature),
        ]

    def sign_payload_links(self, payload: str) -> list[dict[str, str]]:
        """The full chain authorizing ``payload``."""
        signed = _link("ECDSA_SIGNED_ENTITY", payload, self.ephemeral.sign_personal(payload))
        return [*self.links(), signed]

    def sign_challenge(self, challenge: str) -> str:
        """Compact auth chain JSON authorizing ``challenge`` (keys: type, payload, signature)."""
        return _compact(self.sign_payload_links(challenge))

    def sign_fetch_headers(
        self,
        method: str,
        path: str,
        *,
        metadata: Mapping[str, Any] | str | None = None,
        now_ms: int | None = None,
    ) -> dict[str, str]:
        """ADR-44 headers: ``x-identity-auth-chain-<i>``, ``x-identity-timestamp``,
        ``x-identity-metadata``; the signed payload is
        ``lower(METHOD:PATH:TIMESTAMP:METADATA)``."""
        timestamp = str(clock_ms() if now_ms is None else now_ms)
        meta = metadata if isinstance(metadata, str) else _compact(dict(metadata or {}))
        payload = f"{method}:{path}:{timestamp}:{meta}".lower()
        headers = {
            f"x-identity-auth-chain-{i}": _compact(link)
            for i, link in enumerate(self.sign_payload_links(payload))
        }
        headers["x-identity-timestamp"] = timestamp
        headers["x-identity-metadata"] = meta
        return headers


__all__ = ["DEFAULT_EPHEMERAL_TTL_MS", "EphemeralIdentity", "Identity"]
