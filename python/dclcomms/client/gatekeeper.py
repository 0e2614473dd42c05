"""Signed fetch (ADR-44) for aiohttp, and the gatekeeper's scene-room call (ADR-204).

:func:`signed_fetch` sends one request signed by an :class:`~dclcomms.auth.Identity`
with the headers of authchain.md section 8 (``x-identity-auth-chain-<i>``,
``x-identity-timestamp``, ``x-identity-metadata``). The signed PATH is the URL's
path as the client sees it (a proxy prefix included, no query). With a body and
``bind_body=True`` the metadata carries ``bodySha256`` so the server can check
the (otherwise unsigned) body.

Signatures are deterministic (RFC-6979): two identical requests signed in the same
millisecond would carry the same final signature, which a server's replay cache
refuses (``replayed``). :class:`SignedFetcher` therefore hands out strictly
increasing timestamps per identity.

:class:`GatekeeperClient` asks ``POST /get-scene-adapter`` (control-plane.md 1.3)
for a scene room's connection string and turns every reject into a
:class:`~dclcomms.errors.TransportError` with a stable code and the HTTP status:

=====================  ======  ==========================================
code                   status  meaning
=====================  ======  ==========================================
``scene_rejected``     400     missing ``sceneId``, unknown world scene...
``scene_denied``       401     bad signature, deny list, world access
``scene_banned``       403     platform ban or scene ban
``gatekeeper_unavailable``  503 / no answer  a dependency (or the gatekeeper) is down
``gatekeeper_failed``  other   any other status, or a body without ``adapter``
=====================  ======  ==========================================
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from dclcomms.auth import Identity
from dclcomms.auth.chain import clock_ms
from dclcomms.errors import TransportError

SCENE_ADAPTER_PATH = "/get-scene-adapter"

_STATUS_CODES = {
    400: "scene_rejected",
    401: "scene_denied",
    403: "scene_banned",
    404: "scene_rejected",
    503: "gatekeeper_unavailable",
}


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class SignedFetcher:
    """Signs requests for one identity with strictly increasing timestamps.

    Thread-safe (the timestamp counter is guarded by a lock).
    """

    def __init__(self, identity: Identity) -> None:
        self.identity = identity
        self._lock = threading.Lock()
        self._last_ms = 0

    def timestamp(self, now_ms: int | None = None) -> int:
        """``now`` in ms, or one more than the last one handed out when not later."""
        now = clock_ms() if now_ms is None else now_ms
        with self._lock:
            self._last_ms = max(now, self._last_ms + 1)
            return self._last_ms

    def headers(
        self,
        method: str,
        url_or_path: str,
        *,
        metadata: Mapping[str, Any] | None = None,
        body: bytes | None = None,
        bind_body: bool = False,
        now_ms: int | None = None,
    ) -> dict[str, str]:
        """The signed-fetch headers for ``method url_or_path`` (the path is signed)."""
        path = urlsplit(url_or_path).path or "/"
        meta = dict(metadata or {})
        if bind_body and body is not None:
            meta["bodySha256"] = hashlib.sha256(body).hexdigest()
        return self.identity.sign_fetch_headers(
            method.upper(), path, metadata=_compact(meta), now_ms=self.timestamp(now_ms)
        )


async def signed_fetch(
    session: aiohttp.ClientSession,
    signer: Identity | SignedFetcher,
    method: str,
    url: str,
    *,
    metadata: Mapping[str, Any] | None = None,
    body: bytes | None = None,
    bind_body: bool = False,
    timeout_s: float = 10.0,
    headers: Mapping[str, str] | None = None,
) -> tuple[int, Any]:
    """Send one signed request; returns ``(status, parsed JSON body or None)``.

    ``signer``: an :class:`Identity` (a fresh :class:`SignedFetcher` per call: use a
    shared fetcher when one identity sends many requests) or a :class:`SignedFetcher`.
    Network failures raise :class:`aiohttp.ClientError` / ``TimeoutError``.
    """
    fetcher = signer if isinstance(signer, SignedFetcher) else SignedFetcher(signer)
    for attempt in (1, 2):
        # Signed afresh each attempt: the gatekeeper's replay cache refuses a signature
        # it has seen.
        signed = fetcher.headers(method, url, metadata=metadata, body=body, bind_body=bind_body)
        if headers:
            signed = {**headers, **signed}
        if body is not None and "Content-Type" not in signed:
            signed["Content-Type"] = "application/json"
        try:
            async with session.request(
                method.upper(),
                url,
                data=body,
                headers=signed,
                timeout=aiohttp.ClientTimeout(total=timeout_s),
            ) as r:
                text = await r.text()
                try:
                    parsed = json.loads(text) if text else None
                except ValueError:
                    parsed = None
                return r.status, parsed
        except aiohttp.ServerDisconnectedError:
            # A kept-alive connection the server closed as idle just as the request
            # went out on it (the server's keep-alive timeout races the client's pool):
            # nothing was answered, so the request is sent once more on a new connection.
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _error(message: str, code: str, status: int | None) -> TransportError:
    err = TransportError(message, code=code)
    err.status = status
    return err


@dataclass(frozen=True, slots=True)
class SceneRequest:
    """What a client tells the gatekeeper about where it stands (control-plane.md 1.2)."""

    realm_name: str
    scene_id: str
    parcel: tuple[int, int] | None = None

    def metadata(self) -> dict[str, Any]:
        meta: dict[str, Any] = {"realmName": self.realm_name, "sceneId": self.scene_id}
        if self.parcel is not None:
            meta["parcel"] = f"{self.parcel[0]},{self.parcel[1]}"
        return meta


class GatekeeperClient:
    """``await GatekeeperClient(url, identity).scene_adapter(SceneRequest(...))``.

    ``base_url`` is where the gatekeeper's routes live (the realm's URL for the
    embedded one). Uses ``session`` when given (else one of its own, closed by
    :meth:`close`).
    """

    def __init__(
        self,
        base_url: str,
        identity: Identity,
        *,
        session: aiohttp.ClientSession | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.fetcher = SignedFetcher(identity)
        self.timeout_s = timeout_s
        self._session = session
        self._own_session = session is None
        #: requests sent and answered (any status)
        self.requests = 0

    async def scene_adapter(self, request: SceneRequest) -> str:
        """The connection string of the scene room (``livekit:``/``ws-room:``...)."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        url = self.base_url + SCENE_ADAPTER_PATH
        try:
            status, body = await signed_fetch(
                self._session,
                self.fetcher,
                "POST",
                url,
                metadata=request.metadata(),
                timeout_s=self.timeout_s,
            )
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            raise _error(f"POST {url}: {e!r}", "gatekeeper_unavailable", None) from e
        self.requests += 1
        if status == 200 and isinstance(body, dict) and isinstance(body.get("adapter"), str):
            return str(body["adapter"])
        reason = body.get("error") if isinstance(body, dict) else None
        code = _STATUS_CODES.get(status, "gatekeeper_failed")
        if status == 200:
            reason = "answer without an adapter"
        raise _error(f"POST {url}: HTTP {status}: {reason or body!r}", code, status)

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
        self._session = None


__all__ = [
    "SCENE_ADAPTER_PATH",
    "GatekeeperClient",
    "SceneRequest",
    "SignedFetcher",
    "signed_fetch",
]
