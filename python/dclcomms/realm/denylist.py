"""The connector's deny list (archipelago.md 1.5), fetched periodically.

``GET <url>`` returns ``{"users": [{"wallet": "0x..."}, ...]}`` (the reference list is
``https://config.decentraland.org/denylist.json``); wallets are lowercased and handed
to the C++ server (``Server.set_deny_list``), which closes deny-listed addresses with
4004 at ``challenge_request`` and after authentication. A failed refresh keeps the
previous list (and is counted); the first successful fetch happens at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from typing import Any

import aiohttp

from dclcomms.metrics import Registry

log = logging.getLogger("dclcomms.realm.denylist")

_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")


def parse_deny_list(doc: Any) -> list[str]:
    """Lowercase wallets of ``{"users": [{"wallet"}]}``; malformed entries are skipped."""
    if not isinstance(doc, dict) or not isinstance(doc.get("users"), list):
        raise ValueError('deny list must be an object with a "users" array')
    out: dict[str, None] = {}
    for u in doc["users"]:
        w = u.get("wallet") if isinstance(u, dict) else None
        if isinstance(w, str) and _ADDRESS.match(w):
            out[w.lower()] = None
    return list(out)


class DenyList:
    def __init__(
        self, url: str, server: Any, registry: Registry, *, deny_list_refresh_s: float = 300.0
    ):
        self.url = url
        self.server = server
        self.deny_list_refresh_s = deny_list_refresh_s
        self.addresses: list[str] = []
        self.loaded = False
        self.m_refreshes = registry.counter(
            "dcl_denylist_refreshes_total", "deny list fetches by result (ok, error)"
        )
        registry.gauge(
            "dcl_denylist_addresses", "deny-listed addresses", fn=lambda: len(self.addresses)
        )

    async def refresh(self) -> bool:
        try:
            timeout = aiohttp.ClientTimeout(total=10)
            async with aiohttp.ClientSession(timeout=timeout) as s, s.get(self.url) as r:
                r.raise_for_status()
                addresses = parse_deny_list(await r.json(content_type=None))
        except Exception as e:  # network, HTTP status, JSON or shape: keep the old list
            self.m_refreshes.inc(result="error")
            log.warning(
                "deny list refresh failed; keeping the previous list",
                extra={"url": self.url, "error": f"{type(e).__name__}: {e}"},
            )
            return False
        self.server.set_deny_list(addresses)
        self.addresses = addresses
        self.loaded = True
        self.m_refreshes.inc(result="ok")
        return True

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.refresh()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.deny_list_refresh_s)


__all__ = ["DenyList", "parse_deny_list"]
