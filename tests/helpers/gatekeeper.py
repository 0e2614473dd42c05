"""Helpers for the gatekeeper tests: a running gatekeeper, signed requests, stand-ins."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp

from dclcomms.auth import Identity
from dclcomms.client import SignedFetcher
from dclcomms.gatekeeper.config import GatekeeperConfig
from dclcomms.gatekeeper.server import GatekeeperServer
from tests.helpers.common import run as run  # the gatekeeper tests' runner

LK_KEY, LK_SECRET = "devkey", "devsecret-0123456789-0123456789-abcdef"
SCENE_ID = "bafkreiscene00000000000000000000000000000000000000000000000"
REALM = "main"


def gk_config(tmp_path: Path, **kw: Any) -> GatekeeperConfig:
    base: dict[str, Any] = {"data_dir": str(tmp_path / "data")}
    base.update(kw)
    return GatekeeperConfig(**base)


def token_of(conn_str: str) -> str:
    return parse_qs(urlsplit(conn_str.split(":", 1)[1]).query)["access_token"][0]


def explorer_meta(
    realm: str = REALM, scene_id: str | None = SCENE_ID, parcel: str | None = "0,0", **kw: Any
) -> dict[str, Any]:
    md: dict[str, Any] = {"realmName": realm}
    if scene_id is not None:
        md["sceneId"] = scene_id
    if parcel is not None:
        md["parcel"] = parcel
    md.update(kw)
    return md


def owner_table(tmp_path: Path, owner: str, *, world_allowed: str | None = None) -> Path:
    """A moderation file: place ``place-0`` ("Plaza", scene :data:`SCENE_ID`) owned by
    ``owner``; with ``world_allowed``, also ``owner``'s allow-list world ``club.eth``
    letting that address in."""
    lines = [
        "[[places]]",
        'id = "place-0"',
        'name = "Plaza"',
        f'scene_ids = ["{SCENE_ID}"]',
        f'owners = ["{owner}"]',
    ]
    if world_allowed is not None:
        lines += [
            "[[worlds]]",
            'name = "club.eth"',
            f'owner = "{owner}"',
            'access = "allow-list"',
            f'allowed = ["{world_allowed}"]',
        ]
    p = tmp_path / "owners.toml"
    p.write_text("\n".join(lines) + "\n")
    return p


def scene_meta(
    realm: str = REALM,
    scene_id: str = SCENE_ID,
    parcel: str = "0,0",
    *,
    world: bool = False,
    signer: str = "decentraland-kernel-scene",
) -> dict[str, Any]:
    hostname = "worlds-content-server.decentraland.org" if world else "peer.decentraland.org"
    return {
        "signer": signer,
        "realm": {"hostname": hostname, "protocol": "v3", "serverName": realm},
        "sceneId": scene_id,
        "parcel": parcel,
    }


class Client:
    """Signed requests to one gatekeeper base URL."""

    def __init__(self, base: str, session: aiohttp.ClientSession) -> None:
        # One fetcher per identity: strictly increasing timestamps, so two identical
        # requests in one millisecond (likely over a kept-alive connection) are two
        # signatures, not one the replay cache refuses the second time.
        self._fetchers: dict[str, SignedFetcher] = {}
        self.base = base.rstrip("/")
        self.session = session

    async def request(
        self,
        method: str,
        path: str,
        *,
        who: Identity | None = None,
        metadata: Any = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> tuple[int, Any]:
        h = dict(headers or {})
        if who is not None:
            fetcher = self._fetchers.setdefault(who.address, SignedFetcher(who))
            h.update(
                who.sign_fetch_headers(
                    method,
                    path.split("?", 1)[0],
                    metadata=metadata or {},
                    now_ms=fetcher.timestamp(),
                )
            )
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        if data is not None:
            h.setdefault("Content-Type", "application/json")
        async with self.session.request(method, self.base + path, data=data, headers=h) as r:
            text = await r.read()
            value: Any = text.decode()
            if text and "json" in r.headers.get("Content-Type", ""):
                value = json.loads(text)
            return r.status, value

    async def scene(
        self, method: str, path: str, who: Identity, body: Any = None
    ) -> tuple[int, Any]:
        """A request ``who`` signs as the default scene (:func:`scene_meta`) does."""
        return await self.request(method, path, who=who, metadata=scene_meta(), body=body)


class Running:
    """``async with Running(config) as (gk, client)``: a standalone gatekeeper."""

    def __init__(self, config: GatekeeperConfig) -> None:
        self.server = GatekeeperServer(config)
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> tuple[GatekeeperServer, Client]:
        await self.server.start()
        self.session = aiohttp.ClientSession()
        return self.server, Client(self.server.url, self.session)

    async def __aexit__(self, *exc: object) -> None:
        if self.session is not None:
            await self.session.close()
        await self.server.stop()
