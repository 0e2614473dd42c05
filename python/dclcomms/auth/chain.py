"""Auth-chain verification wrappers (private; import from dclcomms.auth)."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dclcomms import _core
from dclcomms.clock import now_ms
from dclcomms.errors import ConfigError

#: EIP-1271 provider: ``(contract, call_data_hex) -> result_word_hex`` performing
#: ``eth_call`` of ``isValidSignature``; raise on transport errors.
Provider = Callable[[str, str], str]


@dataclass(frozen=True, slots=True)
class AuthResult:
    """Outcome of a verification.

    ``ok``: the chain proves ``signer`` authorized the expected payload.
    ``signer``: lowercase 0x owner address (the peer id); ``None`` unless ok.
    ``ephemeral``: ephemeral address as written in the chain, when one was parsed.
    ``expires_ms``: the earliest ephemeral expiration parsed (ms since the epoch).
    ``code``: ``None`` when ok, else a stable code (docs/auth.md).
    ``message``: human-readable detail for logs.
    """

    ok: bool
    signer: str | None
    ephemeral: str | None
    expires_ms: int | None
    code: str | None
    message: str

    @classmethod
    def _from_core(
        cls, t: tuple[bool, str | None, str | None, int | None, str | None, str]
    ) -> AuthResult:
        ok, signer, ephemeral, expires_ms, code, message = t
        return cls(ok, signer if ok else None, ephemeral, expires_ms, code, message)

    @classmethod
    def failure(cls, code: str, message: str) -> AuthResult:
        return cls(False, None, None, None, code, message)


clock_ms = now_ms  # this module's name of the one wall clock (dclcomms.clock)


def to_utf8(text: str | bytes) -> bytes:
    if isinstance(text, bytes):
        return text
    if isinstance(text, str):
        # Lone surrogates become invalid UTF-8 and fail JSON/equality checks
        # instead of raising here.
        return text.encode("utf-8", "surrogatepass")
    raise TypeError(f"expected str or bytes, got {type(text).__name__}")


class JsonRpcProvider:
    """EIP-1271 provider over HTTP JSON-RPC: ``eth_call`` at ``latest``.

    Transport failures, timeouts and malformed answers raise (the chain then
    fails with ``eip1271_rpc_error``). A JSON-RPC error that reports an EVM
    revert (code 3 or "revert" in the message) is an answer, not an outage:
    it is returned as ``"0x"``, i.e. not the magic value (``eip1271_invalid``).
    """

    def __init__(self, url: str, *, timeout_s: float = 5.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"JSON-RPC URL must be http(s): {url!r}", code="invalid_parameter")
        self.url = url
        self.timeout_s = timeout_s

    def __call__(self, contract: str, data_hex: str) -> str:
        request = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "eth_call",
            "params": [{"to": contract, "data": data_hex}, "latest"],
        }
        req = urllib.request.Request(
            self.url,
            data=json.dumps(request).encode(),
            headers={"content-type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
            answer = json.loads(resp.read())
        if not isinstance(answer, dict):
            raise RuntimeError("JSON-RPC answer is not an object")
        error = answer.get("error")
        if error is not None:
            text = str(error.get("message", "")) if isinstance(error, dict) else str(error)
            if isinstance(error, dict) and (error.get("code") == 3 or "revert" in text.lower()):
                return "0x"
            raise RuntimeError(f"JSON-RPC error: {text or error}")
        result = answer.get("result")
        if not isinstance(result, str):
            raise RuntimeError("JSON-RPC answer has no string result")
        return result


def as_provider(provider: Provider | str | None) -> Provider | None:
    if provider is None or callable(provider):
        return provider
    if isinstance(provider, str):
        return JsonRpcProvider(provider)
    raise TypeError("provider must be a callable, a JSON-RPC URL or None")


def verify_auth_chain(
    auth_chain_json: str,
    expected_payload: str,
    *,
    now_ms: int | None = None,
    provider: Provider | str | None = None,
) -> AuthResult:
    """Verify an auth chain (authchain.md section 4) against the expected final payload.

    ``provider`` handles EIP-1654 links: a callable ``(contract, data_hex) -> result_hex``
    or a JSON-RPC URL (5 s timeout). Never raises on any input string.
    """
    rpc = as_provider(provider)
    now = clock_ms() if now_ms is None else now_ms
    return AuthResult._from_core(
        _core.verify_auth_chain(to_utf8(auth_chain_json), to_utf8(expected_payload), now, rpc)
    )


def verify_many(
    items: Sequence[tuple[str, str]], *, now_ms: int | None = None, threads: int = 0
) -> list[AuthResult]:
    """Verify ``(auth_chain_json, expected_payload)`` pairs on ``threads`` cores (0 = all).

    The GIL is released for the whole batch. EIP-1654 links fail with
    ``eip1271_no_provider`` (use :func:`verify_auth_chain` with a provider).
    """
    if threads < 0:
        raise ConfigError("threads must be >= 0", code="invalid_parameter")
    now = clock_ms() if now_ms is None else now_ms
    pairs = [(to_utf8(chain), to_utf8(expected)) for chain, expected in items]
    return [AuthResult._from_core(t) for t in _core.verify_many(pairs, now, threads)]


__all__ = [
    "AuthResult",
    "JsonRpcProvider",
    "Provider",
    "as_provider",
    "clock_ms",
    "to_utf8",
    "verify_auth_chain",
    "verify_many",
]
