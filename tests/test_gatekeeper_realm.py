"""The gatekeeper mounted in ``dclcomms realm`` (the embedded default): /about advertises
it, a client holds its island room and its scene room on the one port, and a platform
ban closes the connector session and the scene room within 1 s and refuses the next
attempt (the connector asks the in-process gatekeeper: no COMMS_GATEKEEPER_URL)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dclcomms.auth import Identity
from dclcomms.config import RealmConfig
from dclcomms.realm import Realm
from tests.helpers.common import realm_config
from tests.helpers.gatekeeper import SCENE_ID, Client, explorer_meta, run
from tests.helpers.postgres import fresh_pg_database, pg_url  # noqa: F401
from tests.helpers.realm_client import ArchipelagoClient, Closed, RoomClient, Wallet

BEARER = "operator-token-realm-0123456789"


def config(tmp_path: Path, **kw: Any) -> RealmConfig:
    return realm_config(
        **{"data_dir": str(tmp_path / "data"), "ban_sweep_interval_ms": 60_000, **kw}
    )


async def ban(c: Client, address: str) -> tuple[int, Any]:
    """The operator's platform ban of ``address`` (POST /users/{address}/bans, bearer)."""
    return await c.request(
        "POST",
        f"/users/{address}/bans",
        body={"reason": "cheating"},
        headers={"Authorization": f"Bearer {BEARER}"},
    )


def test_realm_serves_scene_rooms_beside_islands_and_platform_bans_kick(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COMMS_GATEKEEPER_AUTH_TOKEN", BEARER)
    wallet = Wallet(301)
    me = Identity.from_private_key(bytes(wallet.owner.key))

    async def body() -> None:
        import aiohttp

        async with Realm(config(tmp_path)) as realm, aiohttp.ClientSession() as session:
            c = Client(realm.url, session)
            status, about = await c.request("GET", "/about")
            assert status == 200 and about["comms"]["gatekeeperUrl"] == realm.url
            status, st = await c.request("GET", "/status")
            assert "userCount" in st  # the realm's /status, not the gatekeeper's
            # the island, through archipelago
            arch = ArchipelagoClient(301)
            await arch.connect(f"ws://127.0.0.1:{realm.port}")
            assert await arch.handshake() == wallet.address
            await arch.heartbeat(8.0, 0.0, 8.0)
            island = await arch.island()
            island_room = RoomClient(wallet)
            await island_room.join(island["connStr"])
            # the scene room, through the gatekeeper
            status, doc = await c.request(
                "POST", "/get-scene-adapter", who=me, metadata=explorer_meta()
            )
            assert status == 200, doc
            assert doc["adapter"].startswith(
                f"ws-room:ws://127.0.0.1:{realm.port}/scene-rooms/main:{SCENE_ID}?access_token="
            )
            scene_room = RoomClient(wallet)
            await scene_room.join(doc["adapter"])
            assert realm.server.room_members(f"main:{SCENE_ID}", scene=True) == [wallet.address]
            # a platform ban: connector and scene room closed 4005 within 1 s
            t0 = time.monotonic()
            status, doc = await ban(c, wallet.address)
            assert status == 201, doc
            closed_scene = await scene_room.closed(timeout=1.0)
            closed_arch = await arch.closed(timeout=1.0)
            closed_island = await island_room.closed(timeout=1.0)
            assert time.monotonic() - t0 < 1.0
            assert (closed_scene.code, closed_arch.code, closed_island.code) == (4005, 4005, 4005)
            assert {"peerKicked": {"reason": "banned"}} in island_room.inbox
            # the island token minted before the ban cannot rejoin
            back = RoomClient(wallet)
            with pytest.raises(Closed) as refused:
                await back.join(island["connStr"])
            assert refused.value.code == 4005
            await back.close()
            # refused on the next attempt: the connector (in-process check) and the gatekeeper
            again = ArchipelagoClient(301)
            await again.connect(f"ws://127.0.0.1:{realm.port}")
            await again.handshake(expect_welcome=False)
            assert (await again.closed()).code == 4005
            status, doc = await c.request(
                "POST", "/get-scene-adapter", who=me, metadata=explorer_meta()
            )
            assert (status, doc["code"]) == (403, "platform_banned")
            status, text = await c.request("GET", "/metrics")
            assert 'dcl_gatekeeper_bans_total{action="ban",kind="platform"} 1' in text
            for x in (island_room, scene_room, arch, again):
                await x.close()

    run(body)


def test_realm_without_the_gatekeeper(tmp_path: Path) -> None:
    async def body() -> None:
        import aiohttp

        async with (
            Realm(config(tmp_path, gatekeeper=False)) as realm,
            aiohttp.ClientSession() as session,
        ):
            c = Client(realm.url, session)
            _, about = await c.request("GET", "/about")
            assert "gatekeeperUrl" not in about["comms"]
            status, _ = await c.request("POST", "/get-scene-adapter")
            assert status == 404
        assert not (tmp_path / "data").exists()

    run(body)


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The realm's gatekeeper database: "" (SQLite under the data dir) or a fresh
    PostgreSQL database (dropped after)."""
    if request.param == "sqlite":
        yield ""
    else:
        yield from fresh_pg_database(request.getfixturevalue("pg_url"))


def _gatekeeper_cli(tmp_path: Path, database: str, *args: str) -> dict[str, Any]:
    db = ["--database", database] if database else ["--data-dir", str(tmp_path / "data")]
    r = subprocess.run(
        [sys.executable, "-m", "dclcomms", "gatekeeper", *args, *db],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    out: dict[str, Any] = json.loads(r.stdout)
    return out


def test_bans_from_the_shell_kick_within_1s_in_a_running_realm(
    tmp_path: Path, database: str
) -> None:
    """`dclcomms gatekeeper ban` / `scene-bans add` write the database of a running realm
    (another process): the realm sees the change counter move, kicks within 1 s of the
    write (platform: connector and scene room; scene: that scene room only) and refuses
    the next attempt; unbans from the shell apply too. The connector's own sweep is
    60 s away, so it is not what kicks."""
    wallet, other = Wallet(311), Wallet(312)
    me = Identity.from_private_key(bytes(wallet.owner.key))
    them = Identity.from_private_key(bytes(other.owner.key))

    async def body() -> None:
        import aiohttp

        cfg = config(tmp_path, gatekeeper_database=database)
        async with Realm(cfg) as realm, aiohttp.ClientSession() as session:
            c = Client(realm.url, session)
            ws_base = f"ws://127.0.0.1:{realm.port}"

            async def join(seed: int, who: Identity, w: Wallet) -> tuple[Any, RoomClient]:
                arch = ArchipelagoClient(seed)
                await arch.connect(ws_base)
                assert await arch.handshake() == w.address
                status, doc = await c.request(
                    "POST", "/get-scene-adapter", who=who, metadata=explorer_meta()
                )
                assert status == 200, doc
                room = RoomClient(w)
                await room.join(doc["adapter"])
                return arch, room

            # a scene ban from the shell: that scene room only, within 1 s
            arch2, room2 = await join(312, them, other)
            out = await asyncio.to_thread(
                _gatekeeper_cli, tmp_path, database, "scene-bans", "add", other.address,
                "--place", SCENE_ID,
            )  # fmt: skip
            t0 = time.monotonic()
            assert out["changed"] is True
            closed = await room2.closed(timeout=1.0)
            assert time.monotonic() - t0 < 1.0
            assert closed.code == 4005
            assert any("peerKicked" in m for m in room2.inbox), room2.inbox
            status, doc = await c.request(
                "POST", "/get-scene-adapter", who=them, metadata=explorer_meta()
            )
            assert (status, doc["code"]) == (403, "scene_banned")
            status, doc = await c.request("GET", f"/scene-rooms/main:{SCENE_ID}/metadata")
            assert status == 200 and doc["bannedAddresses"] == [other.address]
            await arch2.heartbeat(8.0, 0.0, 8.0)  # the connector session is untouched
            assert (await arch2.island())["connStr"]

            # a platform ban from the shell: the connector, the island and the scene room
            arch, room = await join(311, me, wallet)
            await arch.heartbeat(8.0, 0.0, 8.0)
            island = (await arch.island())["connStr"]
            island_room = RoomClient(wallet)
            await island_room.join(island)
            out = await asyncio.to_thread(
                _gatekeeper_cli, tmp_path, database, "ban", wallet.address, "--reason", "spam"
            )
            t0 = time.monotonic()
            assert out["bannedAddress"] == wallet.address
            closed_room = await room.closed(timeout=1.0)
            closed_arch = await arch.closed(timeout=1.0)
            closed_island = await island_room.closed(timeout=1.0)
            assert time.monotonic() - t0 < 1.0
            assert (closed_room.code, closed_arch.code, closed_island.code) == (4005, 4005, 4005)
            assert any("peerKicked" in m for m in room.inbox), room.inbox
            # refused on the next attempt: the connector and the gatekeeper
            again = ArchipelagoClient(311)
            await again.connect(ws_base)
            await again.handshake(expect_welcome=False)
            assert (await again.closed()).code == 4005
            status, doc = await c.request(
                "POST", "/get-scene-adapter", who=me, metadata=explorer_meta()
            )
            assert (status, doc["code"]) == (403, "platform_banned")

            # unbans from the shell: token requests are answered again
            await asyncio.to_thread(_gatekeeper_cli, tmp_path, database, "unban", wallet.address)
            await asyncio.to_thread(
                _gatekeeper_cli, tmp_path, database, "scene-bans", "remove", other.address,
                "--place", SCENE_ID,
            )  # fmt: skip

            async def answered(who: Identity) -> bool:
                status, _ = await c.request(
                    "POST", "/get-scene-adapter", who=who, metadata=explorer_meta()
                )
                return status == 200

            for who in (me, them):
                deadline = time.monotonic() + 1.0
                while not await answered(who):
                    assert time.monotonic() < deadline, "unban not applied within 1 s"
                    await asyncio.sleep(0.05)
            # and the scene room's bars are lifted with the bans: both join again at once
            rejoined = []
            for who, w in ((me, wallet), (them, other)):
                status, doc = await c.request(
                    "POST", "/get-scene-adapter", who=who, metadata=explorer_meta()
                )
                assert status == 200, doc
                r = RoomClient(w)
                assert (await r.join(doc["adapter"]))["alias"] >= 1
                rejoined.append(r)
            assert sorted(realm.server.room_members(f"main:{SCENE_ID}", scene=True)) == sorted(
                [wallet.address, other.address]
            )
            # the island room's bar went with the platform ban: the earlier token rejoins
            back = RoomClient(wallet)
            assert (await back.join(island))["alias"] >= 1
            rejoined += [back, island_room]
            for x in (arch, room, arch2, room2, again, *rejoined):
                await x.close()

    run(body)


def test_split_gatekeeper_ban_sweep_closes_the_island_room(tmp_path: Path) -> None:
    """A realm with an external gatekeeper (COMMS_GATEKEEPER_URL): a session found banned
    by the connector's check is closed in its island room too (peer_kicked + 4005) and
    its island token cannot rejoin."""
    from aiohttp import web

    from tests.helpers.common import start_app

    wallet = Wallet(321)
    banned: set[str] = set()

    async def bans(request: web.Request) -> web.Response:
        return web.json_response({"data": {"isBanned": request.match_info["addr"] in banned}})

    async def body() -> None:
        app = web.Application()
        app.router.add_get("/users/{addr}/bans", bans)
        runner, port = await start_app(app)
        try:
            cfg = config(
                tmp_path, gatekeeper=False, comms_gatekeeper_url=f"http://127.0.0.1:{port}"
            )
            async with Realm(cfg) as realm:
                arch = ArchipelagoClient(321)
                await arch.connect(f"ws://127.0.0.1:{realm.port}")
                assert await arch.handshake() == wallet.address
                await arch.heartbeat(8.0, 0.0, 8.0)
                island = (await arch.island())["connStr"]
                room = RoomClient(wallet)
                await room.join(island)
                banned.add(wallet.address)
                assert realm.bans is not None
                await realm.bans.sweep()  # asks afresh: the clean verdict's cache is no bar
                assert (await arch.closed(timeout=1.0)).code == 4005
                assert (await room.closed(timeout=1.0)).code == 4005
                assert {"peerKicked": {"reason": "banned"}} in room.inbox
                back = RoomClient(wallet)
                with pytest.raises(Closed) as refused:
                    await back.join(island)
                assert refused.value.code == 4005
                for x in (arch, room, back):
                    await x.close()
        finally:
            await runner.cleanup()

    run(body)


def test_a_ban_at_an_external_gatekeeper_closes_the_session_within_one_sweep(
    tmp_path: Path,
) -> None:
    """A realm pointed at a separate gatekeeper (COMMS_GATEKEEPER_URL, a real one on its own
    port): a platform ban made there reaches the banned user's connector session at the
    next sweep (``ban_sweep_interval_ms``, here 1 s), not once its clean verdict, cached at
    the handshake, is a minute old. While the gatekeeper answers, every sweep asks it."""
    from tests.helpers.gatekeeper import Running, gk_config

    wallet, other = Wallet(341), Wallet(342)

    async def body() -> None:
        async with Running(gk_config(tmp_path / "gk", auth_token=BEARER)) as (gk, c):
            cfg = config(
                tmp_path, gatekeeper=False, comms_gatekeeper_url=gk.url, ban_sweep_interval_ms=1000
            )
            async with Realm(cfg) as realm:
                clients = [ArchipelagoClient(341), ArchipelagoClient(342)]
                for x, w in zip(clients, (wallet, other), strict=True):
                    await x.connect(f"ws://127.0.0.1:{realm.port}")
                    assert await x.handshake() == w.address
                assert realm.bans is not None
                for _ in range(500):  # the handshake's check: clean, cached for 60 s
                    if wallet.address in realm.bans.verdicts:
                        break
                    await asyncio.sleep(0.01)
                assert realm.bans.verdicts[wallet.address][1] is False
                t0 = time.monotonic()
                status, doc = await ban(c, wallet.address)
                assert status == 201, doc
                assert await clients[0].expect("kicked") == {"kicked": {"reason": "KR_NEW_SESSION"}}
                assert (await clients[0].closed(timeout=5.0)).code == 4005
                assert time.monotonic() - t0 < 5.0  # one sweep (1 s) + the lookup, under load
                await clients[1].heartbeat(8.0, 0.0, 8.0)
                await clients[1].island()  # the other user is served on
                assert realm.connector is not None
                assert other.address in realm.connector.sessions
                for x in clients:
                    await x.close()

    run(body)


def test_connector_ban_checks_read_the_snapshot_not_the_database(tmp_path: Path) -> None:
    """The realm's in-process ban checks (every handshake, every sweep) answer from the
    gatekeeper's snapshot while it is fresh: no database statement per session. A stale
    snapshot (the database away for SNAPSHOT_TRUST_S) sends them to the database."""
    import sqlalchemy as sa

    from dclcomms.gatekeeper.app import SNAPSHOT_TRUST_S

    banned_w, clean_w = Wallet(331), Wallet(332)

    async def body() -> None:
        async with Realm(config(tmp_path)) as realm:
            gk = realm.gatekeeper
            assert gk is not None and realm.bans is not None
            await asyncio.to_thread(
                gk.store.add_platform_ban, banned_w.address, banned_by="m", reason="x"
            )
            await gk.reload()
            statements: list[str] = []

            def count(_c: Any, _cur: Any, statement: str, *_a: Any) -> None:
                # one address's ban looked up (not the poll, not the periodic snapshot)
                if "user_bans.banned_address = " in statement:
                    statements.append(statement)

            sa.event.listen(gk.store.engine, "before_cursor_execute", count)
            try:
                clean = ArchipelagoClient(332)
                await clean.connect(f"ws://127.0.0.1:{realm.port}")
                assert await clean.handshake() == clean_w.address
                refused = ArchipelagoClient(331)
                await refused.connect(f"ws://127.0.0.1:{realm.port}")
                await refused.handshake(expect_welcome=False)
                assert (await refused.closed()).code == 4005
                await realm.bans.sweep()
                assert await gk.is_platform_banned(banned_w.address.upper().replace("0X", "0x"))
                assert statements == []
                gk.snapshot_at -= SNAPSHOT_TRUST_S + 1  # stale: the database answers
                assert await gk.is_platform_banned(banned_w.address)
                assert not await gk.is_platform_banned(clean_w.address)
                assert len(statements) == 2
            finally:
                sa.event.remove(gk.store.engine, "before_cursor_execute", count)
            await clean.heartbeat(8.0, 0.0, 8.0)
            assert (await clean.island())["connStr"]
            for x in (clean, refused):
                await x.close()

    run(body)
