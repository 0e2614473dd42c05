"""Platform bans from the comms gatekeeper (archipelago.md 1.5), enforced on sessions.

``GET <COMMS_GATEKEEPER_URL>/users/<urlencoded addr>/bans``: banned iff
``data.isBanned is true``; 1 s timeout, at most 20 requests in flight. Every new session
is checked right after its handshake (a verdict cached 60 s when clean, 5 min when
banned answers a reconnect) and every session again every ``BAN_SWEEP_INTERVAL_MS``,
asking the gatekeeper afresh (as the reference does), so a platform ban reaches a
realm's sessions within one sweep interval plus the lookup (at most 1 s); the cached
verdict only answers a sweep while the gatekeeper is unreachable:

* banned -> ``kicked{KR_NEW_SESSION}`` + close 4005 (and, in a realm, its island-room
  session: ``peer_kicked`` + 4005, barred for the island token's TTL + 30 s);
* service unreachable and no verdict younger than 10 min -> close 1013 (fail closed).

dclcomms deviation: the reference checks before ``welcome``; the C++ connector has no
asynchronous ban hook yet, so a banned address is welcomed and closed a moment later
(before its first island, in practice: checks take at most 1 s, ticks are 2 s apart).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

import aiohttp

from dclcomms.metrics import Registry

log = logging.getLogger("dclcomms.realm.bans")

CLEAN_TTL_S = 60.0
BANNED_TTL_S = 300.0
FALLBACK_S = 600.0
MAX_IN_FLIGHT = 20
TIMEOUT_S = 1.0


class BanChecker:
    def __init__(
        self,
        url: str,
        server: Any,
        registry: Registry,
        *,
        sessions: Callable[[], set[str]],
        ban_sweep_interval_ms: int = 30_000,
        lookup: Callable[[str], Awaitable[bool]] | None = None,
        island_bar_ms: int = 0,
    ) -> None:
        """``lookup``: ask this (e.g. the gatekeeper mounted in the realm) instead of ``url``;
        ``island_bar_ms``: a banned session is also closed in the server's island rooms and
        barred from them that long (0: connector and /bus only)."""
        self.url = url.rstrip("/")
        self.lookup = lookup
        self.server = server
        self.sessions = sessions
        self.ban_sweep_interval_ms = ban_sweep_interval_ms
        self.island_bar_ms = island_bar_ms
        self.verdicts: dict[str, tuple[float, bool]] = {}  # address -> (checked at, banned)
        self._sem = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._http: aiohttp.ClientSession | None = None
        self.m_checks = registry.counter(
            "dcl_bans_checks_total", "ban lookups by result (clean, banned, error, cached)"
        )
        self.m_kicks = registry.counter(
            "dcl_bans_kicks_total", "sessions closed by ban checks, by code (4005, 1013)"
        )

    async def verdict(self, address: str, *, fresh: bool = False) -> bool | None:
        """True banned, False clean, None unknown (service down, no usable cached verdict).
        ``fresh``: ask the gatekeeper even with a cached verdict (the sweep); the cache is
        then only the fallback while it cannot be reached."""
        now = time.monotonic()
        if self.lookup is not None:  # in process: no cache, a ban applies at once
            try:
                banned = await self.lookup(address)
            except Exception as e:
                self.m_checks.inc(result="error")
                log.warning("ban lookup failed", extra={"address": address, "error": repr(e)})
                return None
            self.m_checks.inc(result="banned" if banned else "clean")
            return banned
        cached = self.verdicts.get(address)
        if (
            not fresh
            and cached is not None
            and now - cached[0] < (BANNED_TTL_S if cached[1] else CLEAN_TTL_S)
        ):
            self.m_checks.inc(result="cached")
            return cached[1]
        try:
            async with self._sem:
                if self._http is None:
                    self._http = aiohttp.ClientSession(
                        timeout=aiohttp.ClientTimeout(total=TIMEOUT_S)
                    )
                url = f"{self.url}/users/{quote(address, safe='')}/bans"
                async with self._http.get(url) as r:
                    r.raise_for_status()
                    body = await r.json(content_type=None)
            data = body.get("data") if isinstance(body, dict) else None
            banned = isinstance(data, dict) and data.get("isBanned") is True
        except Exception as e:
            self.m_checks.inc(result="error")
            log.warning("ban lookup failed", extra={"address": address, "error": repr(e)})
            if cached is not None and now - cached[0] < FALLBACK_S:
                return cached[1]
            return None
        self.verdicts[address] = (now, banned)
        self.m_checks.inc(result="banned" if banned else "clean")
        return banned

    async def check(self, address: str, *, fresh: bool = False) -> None:
        banned = await self.verdict(address, fresh=fresh)
        if address not in self.sessions():
            return
        if banned is True:
            self.m_kicks.inc(code="4005")
            self._close(address, 4005, "banned")
            if self.island_bar_ms > 0:
                self.server.kick_room_member(
                    None, address, "banned", scene=False, bar_ms=self.island_bar_ms
                )
        elif banned is None:
            self.m_kicks.inc(code="1013")
            self._close(address, 1013, "ban service unavailable, retry later")

    def _close(self, address: str, code: int, reason: str) -> None:
        """The connector session and the /bus session of ``address`` (either may be absent)."""
        self.server.kick(address, code, reason)
        close_bus = getattr(self.server, "close_bus", None)
        if close_bus is not None:
            close_bus(address, code, reason)

    async def sweep(self) -> None:
        """Every session, asking the gatekeeper afresh (a new ban is seen at once)."""
        await asyncio.gather(*(self.check(a, fresh=True) for a in list(self.sessions())))

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.ban_sweep_interval_ms / 1000)
                if not stop.is_set():
                    await self.sweep()
        finally:
            if self._http is not None:
                await self._http.close()


__all__ = ["BanChecker"]
