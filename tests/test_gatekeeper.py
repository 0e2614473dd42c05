"""The gatekeeper end to end (control-plane.md 1.2-1.5): a standalone gatekeeper on
127.0.0.1, real signed fetches from Identity, tokens checked with livekit-api's
TokenVerifier and joins of the built-in scene rooms; every documented reject."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from aiohttp import web
from livekit.api import TokenVerifier

from dclcomms.auth import Identity, jwt_decode
from dclcomms.gatekeeper.app import redact_tokens
from tests.helpers.common import free_port, start_app, stop_process
from tests.helpers.gatekeeper import (
    LK_KEY,
    LK_SECRET,
    SCENE_ID,
    Running,
    explorer_meta,
    gk_config,
    owner_table,
    run,
    scene_meta,
    token_of,
)
from tests.helpers.realm_client import RoomClient, Wallet

LIVEKIT = {
    "livekit_host": "lk.example.org",
    "livekit_api_key": LK_KEY,
    "livekit_api_secret": LK_SECRET,
}
SECRET = "scene-room-secret-0123456789"
ALICE_W, BOB_W = Wallet(101), Wallet(102)
ALICE = Identity.from_private_key(bytes(ALICE_W.owner.key))
BOB = Identity.from_private_key(bytes(BOB_W.owner.key))
OWNER = Identity.generate(seed=103)
MOD = Identity.generate(seed=104)
BEARER = "operator-token-0123456789"


def test_livekit_token_names_the_room_and_carries_the_scene_grant(tmp_path: Path) -> None:
    async def body() -> None:
        cfg = gk_config(tmp_path, scene_room_prefix="scene-", **LIVEKIT)
        async with Running(cfg) as (_gk, c):
            status, doc = await c.request(
                "POST", "/get-scene-adapter", who=ALICE, metadata=explorer_meta()
            )
            assert status == 200, doc
            adapter = doc["adapter"]
            assert adapter.startswith("livekit:wss://lk.example.org?access_token=")
            claims = TokenVerifier(LK_KEY, LK_SECRET).verify(token_of(adapter))
            assert claims.identity == ALICE.address.lower()
            v = claims.video
            assert v is not None and v.room == f"scene-main:{SCENE_ID}"
            assert v.room_join and v.can_publish and v.can_subscribe and v.can_publish_data
            assert v.can_update_own_metadata and v.can_publish_sources == ["microphone"]
            assert not (v.room_admin or v.room_create or v.hidden or v.recorder or v.room_list)
            raw = jwt_decode(token_of(adapter), LK_SECRET, issuer=LK_KEY)
            assert raw["exp"] - raw["nbf"] == 300 and abs(raw["nbf"] - time.time()) < 5

    run(body)


def test_world_room_name_and_world_name_as_scene_id(tmp_path: Path) -> None:
    table = tmp_path / "mod.toml"
    table.write_text(
        f'[[worlds]]\nname = "alice.eth"\nowner = "{OWNER.address}"\nscene_id = "bafyworld"\n'
    )

    async def body() -> None:
        cfg = gk_config(
            tmp_path,
            world_room_prefix="world-prod-scene-room-",
            moderation_file=str(table),
            **LIVEKIT,
        )
        async with Running(cfg) as (_gk, c):
            status, doc = await c.request(
                "POST",
                "/get-scene-adapter",
                who=ALICE,
                metadata=explorer_meta(realm="alice.eth", scene_id="alice.eth", parcel=None),
            )
            assert status == 200, doc
            claims = TokenVerifier(LK_KEY, LK_SECRET).verify(token_of(doc["adapter"]))
            assert claims.video is not None
            assert claims.video.room == "world-prod-scene-room-alice.eth-bafyworld"
            status, doc = await c.request(
                "POST",
                "/get-scene-adapter",
                who=ALICE,
                metadata=explorer_meta(realm="nobody.eth", scene_id="nobody.eth", parcel=None),
            )
            assert (status, doc["code"]) == (400, "unknown_world")

    run(body)


def test_builtin_scene_room_join_with_the_issued_token(tmp_path: Path) -> None:
    async def body() -> None:
        async with Running(gk_config(tmp_path, ws_room_secret=SECRET)) as (gk, c):
            status, doc = await c.request(
                "POST", "/get-scene-adapter", who=ALICE, metadata=explorer_meta()
            )
            assert status == 200, doc
            conn = doc["adapter"]
            assert conn.startswith(f"ws-room:ws://127.0.0.1:{gk.port}/scene-rooms/main:{SCENE_ID}?")
            claims = jwt_decode(token_of(conn), SECRET)
            assert claims["sub"] == ALICE.address.lower() and claims["room"] == f"main:{SCENE_ID}"
            member = RoomClient(ALICE_W)
            welcome = await member.join(conn)
            assert welcome["alias"] >= 1
            assert gk.server.room_members(f"main:{SCENE_ID}", scene=True) == [ALICE.address.lower()]
            await member.close()

    run(body)


def test_signed_fetch_rejects(tmp_path: Path) -> None:
    async def body() -> None:
        async with Running(gk_config(tmp_path, **LIVEKIT)) as (_gk, c):
            path = "/get-scene-adapter"
            # not a signed fetch at all
            status, doc = await c.request("POST", path)
            assert (status, doc["code"]) == (400, "signed_fetch_malformed")
            # a signature over another path
            h = ALICE.sign_fetch_headers("POST", "/other", metadata=explorer_meta())
            status, doc = await c.request("POST", path, headers=h)
            assert status == 401 and doc["error"].startswith("Invalid signed fetch")
            # tampered metadata
            h = ALICE.sign_fetch_headers("POST", path, metadata=explorer_meta())
            h["x-identity-metadata"] = json.dumps(explorer_meta(realm="other"))
            status, doc = await c.request("POST", path, headers=h)
            assert status == 401
            # too old
            old = ALICE.sign_fetch_headers(
                "POST", path, metadata=explorer_meta(), now_ms=int(time.time() * 1000) - 120_000
            )
            status, doc = await c.request("POST", path, headers=old)
            assert (status, doc["code"]) == (401, "signed_fetch_expired")
            # replayed
            h = ALICE.sign_fetch_headers("POST", path, metadata=explorer_meta())
            status, _ = await c.request("POST", path, headers=h)
            assert status == 200
            status, doc = await c.request("POST", path, headers=h)
            assert (status, doc["code"]) == (401, "replayed")
            # metadata: no realmName 401, no sceneId 400
            status, doc = await c.request("POST", path, who=ALICE, metadata={"sceneId": SCENE_ID})
            assert (status, doc["code"]) == (401, "missing_metadata")
            status, doc = await c.request(
                "POST", path, who=ALICE, metadata=explorer_meta(scene_id=None)
            )
            assert (status, doc["code"]) == (400, "missing_metadata")

    run(body)


def test_platform_ban_403_and_lookup_and_lift(tmp_path: Path) -> None:
    async def body() -> None:
        cfg = gk_config(tmp_path, auth_token=BEARER, moderators=MOD.address, **LIVEKIT)
        async with Running(cfg) as (_gk, c):
            addr = BOB.address.lower()
            status, doc = await c.request("GET", f"/users/{addr}/bans")
            assert (status, doc) == (200, {"data": {"isBanned": False}})
            # no credentials, wrong bearer, a non-moderator wallet
            status, doc = await c.request("POST", f"/users/{addr}/bans", body={"reason": "x"})
            assert (status, doc["code"]) == (401, "unauthorized")
            bad = {"Authorization": "Bearer nope"}
            status, doc = await c.request(
                "POST", f"/users/{addr}/bans", body={"reason": "x"}, headers=bad
            )
            assert (status, doc["code"]) == (401, "bad_token")
            status, doc = await c.request(
                "POST", f"/users/{addr}/bans", who=ALICE, body={"reason": "x"}
            )
            assert (status, doc["code"]) == (401, "not_moderator")
            auth = {"Authorization": f"Bearer {BEARER}"}
            status, doc = await c.request("POST", f"/users/{addr}/bans", body={}, headers=auth)
            assert (status, doc["code"]) == (400, "bad_request")
            status, doc = await c.request(
                "POST",
                f"/users/{addr}/bans",
                body={"reason": "spam", "customMessage": "bye"},
                headers=auth,
            )
            assert status == 201 and doc["data"]["bannedAddress"] == addr
            status, doc = await c.request(
                "POST", f"/users/{addr}/bans", body={"reason": "again"}, headers=auth
            )
            assert (status, doc["code"]) == (409, "already_banned")
            status, doc = await c.request("GET", f"/users/{addr}/bans")
            assert doc["data"]["isBanned"] is True and doc["data"]["ban"]["reason"] == "spam"
            status, doc = await c.request("GET", "/bans", headers=auth)
            assert [b["bannedAddress"] for b in doc["data"]] == [addr]
            status, doc = await c.request(
                "POST", "/get-scene-adapter", who=BOB, metadata=explorer_meta()
            )
            assert (status, doc["code"]) == (403, "platform_banned")
            # a moderator wallet lifts it with a signed fetch
            status, _ = await c.request("DELETE", f"/users/{addr}/bans", who=MOD)
            assert status == 204
            status, doc = await c.request("DELETE", f"/users/{addr}/bans", headers=auth)
            assert (status, doc["code"]) == (404, "not_banned")
            status, doc = await c.request(
                "POST", "/get-scene-adapter", who=BOB, metadata=explorer_meta()
            )
            assert status == 200
            status, doc = await c.request(
                "POST", f"/users/{addr}/warnings", body={"reason": "language"}, headers=auth
            )
            assert status == 201
            status, doc = await c.request("GET", f"/users/{addr}/warnings", headers=auth)
            assert [w["reason"] for w in doc["data"]] == ["language"]
            status, doc = await c.request("GET", "/users/not-an-address/bans")
            assert (status, doc["code"]) == (400, "bad_address")

    run(body)


def test_deny_list_401(tmp_path: Path) -> None:
    async def body() -> None:
        app = web.Application()
        deny = {"users": [{"wallet": BOB.address}]}

        async def deny_list(_r: web.Request) -> web.Response:
            return web.json_response(deny)

        app.router.add_get("/denylist.json", deny_list)
        runner, port = await start_app(app)
        try:
            cfg = gk_config(
                tmp_path, deny_list_url=f"http://127.0.0.1:{port}/denylist.json", **LIVEKIT
            )
            async with Running(cfg) as (gk, c):
                for _ in range(100):
                    if gk._deny is not None and gk._deny.addresses:
                        break
                    await asyncio.sleep(0.05)
                status, doc = await c.request(
                    "POST", "/get-scene-adapter", who=BOB, metadata=explorer_meta()
                )
                assert (status, doc["code"]) == (401, "deny_listed")
                status, _ = await c.request(
                    "POST", "/get-scene-adapter", who=ALICE, metadata=explorer_meta()
                )
                assert status == 200
        finally:
            await runner.cleanup()

    run(body)


def _owner_table(tmp_path: Path) -> Path:
    return owner_table(tmp_path, OWNER.address, world_allowed=ALICE.address)


def test_scene_ban_kicks_from_the_builtin_room_and_refuses_403(tmp_path: Path) -> None:
    async def body() -> None:
        cfg = gk_config(
            tmp_path, ws_room_secret=SECRET, moderation_file=str(_owner_table(tmp_path))
        )
        async with Running(cfg) as (_gk, c):
            _, doc = await c.request(
                "POST", "/get-scene-adapter", who=BOB, metadata=explorer_meta()
            )
            member = RoomClient(BOB_W)
            await member.join(doc["adapter"])
            # a non-admin cannot ban
            status, doc = await c.scene(
                "POST", "/scene-bans", ALICE, {"banned_address": BOB.address}
            )
            assert (status, doc["code"]) == (401, "not_admin")
            # the wrong signer dialect on a scene route
            status, doc = await c.request(
                "POST",
                "/scene-bans",
                who=OWNER,
                metadata=scene_meta(signer="dcl:explorer"),
                body={"banned_address": BOB.address},
            )
            assert (status, doc["code"]) == (401, "wrong_signer")
            # scene metadata missing
            status, doc = await c.request(
                "POST",
                "/scene-bans",
                who=OWNER,
                metadata={"signer": "decentraland-kernel-scene"},
                body={"banned_address": BOB.address},
            )
            assert (status, doc["code"]) == (400, "missing_metadata")
            # the owner cannot be banned
            status, doc = await c.scene(
                "POST", "/scene-bans", OWNER, {"banned_address": OWNER.address}
            )
            assert (status, doc["code"]) == (400, "cannot_ban_admin")
            t0 = time.monotonic()
            status, _ = await c.scene("POST", "/scene-bans", OWNER, {"banned_address": BOB.address})
            assert status == 204
            kicked = await member.closed(timeout=1.0)
            assert time.monotonic() - t0 < 1.0
            assert kicked.code == 4005
            assert {"peerKicked": {"reason": "banned from this scene"}} in member.inbox
            status, doc = await c.request(
                "POST", "/get-scene-adapter", who=BOB, metadata=explorer_meta()
            )
            assert (status, doc) == (
                403,
                {"error": "User is banned from this scene", "code": "scene_banned"},
            )
            status, doc = await c.scene("GET", "/scene-bans", OWNER)
            assert status == 200 and doc["total"] == 1 and doc["pages"] == 1
            assert doc["results"][0]["bannedAddress"] == BOB.address.lower()
            status, doc = await c.scene("GET", "/scene-bans/addresses?limit=101", OWNER)
            assert (status, doc["code"]) == (400, "bad_request")
            status, doc = await c.scene("GET", "/scene-bans/addresses", OWNER)
            assert doc["results"] == [BOB.address.lower()]
            status, doc = await c.request("GET", f"/scene-rooms/main:{SCENE_ID}/metadata")
            assert status == 200 and doc["bannedAddresses"] == [BOB.address.lower()]
            status, _ = await c.scene(
                "DELETE", "/scene-bans", OWNER, {"banned_address": BOB.address}
            )
            assert status == 204
            status, doc = await c.request(
                "POST", "/get-scene-adapter", who=BOB, metadata=explorer_meta()
            )
            assert status == 200
            # the lifted ban lifts the room's bar too: the new token joins at once
            again = RoomClient(BOB_W)
            assert (await again.join(doc["adapter"]))["alias"] >= 1
            await again.close()

    run(body)


def test_scene_admins(tmp_path: Path) -> None:
    async def body() -> None:
        cfg = gk_config(tmp_path, moderation_file=str(_owner_table(tmp_path)), **LIVEKIT)
        async with Running(cfg) as (_gk, c):
            status, doc = await c.scene("GET", "/scene-admin", ALICE)
            assert (status, doc["code"]) == (401, "not_admin")
            status, _ = await c.scene("POST", "/scene-admin", OWNER, {"admin": ALICE.address})
            assert status == 204
            status, doc = await c.scene("POST", "/scene-admin", OWNER, {"admin": ALICE.address})
            assert (status, doc["code"]) == (409, "already_admin")
            status, doc = await c.scene("GET", "/scene-admin", ALICE)
            assert status == 200
            # the row (removable) and the owner from the resolver (not removable here)
            assert doc == [
                {"admin": ALICE.address.lower(), "name": "", "canBeRemoved": True},
                {"admin": OWNER.address.lower(), "name": "", "canBeRemoved": False},
            ]
            # the new admin bans; an admin cannot be banned
            status, doc = await c.scene(
                "POST", "/scene-bans", ALICE, {"banned_address": BOB.address}
            )
            assert status == 204
            status, doc = await c.scene(
                "POST", "/scene-bans", OWNER, {"banned_address": ALICE.address}
            )
            assert (status, doc["code"]) == (400, "cannot_ban_admin")
            status, _ = await c.scene("DELETE", "/scene-admin", OWNER, {"admin": ALICE.address})
            assert status == 204
            status, doc = await c.scene("GET", "/scene-admin", ALICE)
            assert (status, doc["code"]) == (401, "not_admin")

    run(body)


def test_world_access_401(tmp_path: Path) -> None:
    async def body() -> None:
        cfg = gk_config(tmp_path, moderation_file=str(_owner_table(tmp_path)), **LIVEKIT)
        async with Running(cfg) as (_gk, c):
            md = explorer_meta(realm="club.eth", scene_id="bafyclub", parcel=None)
            status, _ = await c.request("POST", "/get-scene-adapter", who=ALICE, metadata=md)
            assert status == 200
            status, _ = await c.request("POST", "/get-scene-adapter", who=OWNER, metadata=md)
            assert status == 200
            status, doc = await c.request("POST", "/get-scene-adapter", who=BOB, metadata=md)
            assert (status, doc["code"]) == (401, "world_access_denied")

    run(body)


def test_http_resolver_against_stand_ins_and_503_when_down(tmp_path: Path) -> None:
    async def body() -> None:
        owner = OWNER.address.lower()
        app = web.Application()

        async def permissions(r: web.Request) -> web.Response:
            ok = r.match_info["address"] == owner and (r.match_info["x"], r.match_info["y"]) == (
                "3",
                "-4",
            )
            return web.json_response({"owner": ok, "operator": False})

        async def world_perms(r: web.Request) -> web.Response:
            return web.json_response(
                {"owner": owner, "permissions": {"access": {"type": "allow-list", "wallets": []}}}
            )

        async def places(r: web.Request) -> web.Response:
            assert r.query["positions"] == "3,-4"
            return web.json_response({"data": [{"id": "place-uuid", "title": "Gallery"}]})

        app.router.add_get("/lambdas/users/{address}/parcels/{x}/{y}/permissions", permissions)
        app.router.add_get("/worlds/world/{name}/permissions", world_perms)
        app.router.add_get("/places/places", places)
        runner, port = await start_app(app)
        base = f"http://127.0.0.1:{port}"
        try:
            cfg = gk_config(
                tmp_path,
                lambdas_url=f"{base}/lambdas",
                worlds_url=f"{base}/worlds",
                places_url=f"{base}/places",
                **LIVEKIT,
            )
            async with Running(cfg) as (gk, c):
                md = scene_meta(parcel="3,-4")
                status, _ = await c.request(
                    "POST",
                    "/scene-bans",
                    who=OWNER,
                    metadata=md,
                    body={"banned_address": BOB.address},
                )
                assert status == 204
                assert gk.gatekeeper is not None
                assert await asyncio.to_thread(
                    gk.gatekeeper.store.is_scene_banned, "place-uuid", BOB.address
                )
                status, doc = await c.request(
                    "POST",
                    "/scene-bans",
                    who=ALICE,
                    metadata=md,
                    body={"banned_address": BOB.address},
                )
                assert (status, doc["code"]) == (401, "not_admin")
                wmd = explorer_meta(realm="club.eth", scene_id="bafyclub", parcel=None)
                status, doc = await c.request("POST", "/get-scene-adapter", who=ALICE, metadata=wmd)
                assert (status, doc["code"]) == (401, "world_access_denied")
        finally:
            await runner.cleanup()
        dead = f"http://127.0.0.1:{free_port()}"
        cfg = gk_config(tmp_path, lambdas_url=dead, worlds_url=dead, places_url=dead, **LIVEKIT)
        async with Running(cfg) as (_gk, c):
            status, doc = await c.request(
                "POST",
                "/scene-bans",
                who=OWNER,
                metadata=scene_meta(parcel="3,-4"),
                body={"banned_address": BOB.address},
            )
            assert (status, doc["code"]) == (503, "resolver_unavailable")
            wmd = explorer_meta(realm="club.eth", scene_id="bafyclub", parcel=None)
            status, doc = await c.request("POST", "/get-scene-adapter", who=ALICE, metadata=wmd)
            assert (status, doc["code"]) == (503, "resolver_unavailable")

    run(body)


def test_server_scene_adapter(tmp_path: Path) -> None:
    server_id = Identity.generate(seed=105)

    async def body() -> None:
        cfg = gk_config(tmp_path, authoritative_server_address=server_id.address, **LIVEKIT)
        async with Running(cfg) as (_gk, c):
            md = scene_meta(signer="dcl:authoritative-server")
            status, doc = await c.request(
                "POST", "/get-server-scene-adapter", who=server_id, metadata=md
            )
            assert status == 200, doc
            claims = TokenVerifier(LK_KEY, LK_SECRET).verify(token_of(doc["adapter"]))
            assert claims.identity == "authoritative-server"
            assert claims.video is not None and claims.video.room == f"main:{SCENE_ID}"
            status, doc = await c.request(
                "POST", "/get-server-scene-adapter", who=ALICE, metadata=md
            )
            assert (status, doc["code"]) == (401, "not_authoritative")
            status, doc = await c.request(
                "POST",
                "/get-server-scene-adapter",
                who=server_id,
                metadata=scene_meta(signer="dcl:explorer"),
            )
            assert (status, doc["code"]) == (401, "wrong_signer")

    run(body)


def test_ping_status_metrics(tmp_path: Path) -> None:
    async def body() -> None:
        async with Running(gk_config(tmp_path, **LIVEKIT)) as (_gk, c):
            assert await c.request("GET", "/ping") == (200, "/ping")
            status, doc = await c.request("GET", "/status")
            assert status == 200 and set(doc) == {"version", "currentTime", "commitHash"}
            await c.request("POST", "/get-scene-adapter", who=ALICE, metadata=explorer_meta())
            status, text = await c.request("GET", "/metrics")
            assert 'dcl_gatekeeper_requests_total{route="get-scene-adapter",status="200"} 1' in text
            assert 'dcl_gatekeeper_tokens_total{kind="explorer",transport="livekit"} 1' in text
            # its server's connection admission, as on every node
            assert "# TYPE dcl_ws_server_connections gauge" in text

    run(body)


def test_tokens_are_redacted_from_log_text() -> None:
    text = 'adapter livekit:wss://h?access_token=eyJ.abc.def {"token": "eyJ.x-y.z"}'
    out = redact_tokens(text)
    assert "eyJ" not in out and out.count("***") == 2


def test_gatekeeper_command_serves_and_stops(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dclcomms",
            "gatekeeper",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--data-dir",
            str(tmp_path / "d"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "listening on http://127.0.0.1:" in line, (
            line,
            proc.stderr.read() if proc.poll() is not None else "",
        )
        url = line.strip().rsplit(" ", 1)[-1]
        import urllib.request

        with urllib.request.urlopen(url + "/ping", timeout=10) as r:
            assert r.read() == b"/ping"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        stop_process(proc, signal.SIGKILL)
    r = subprocess.run(
        [sys.executable, "-m", "dclcomms", "gatekeeper", "--port", "0", "--database", "mysql://x"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "[bad_value]" in r.stderr
    _ = pytest


def test_http_base_url_prefixes_the_signed_path(tmp_path: Path) -> None:
    async def body() -> None:
        cfg = gk_config(tmp_path, http_base_url="https://gk.example/comms", **LIVEKIT)
        async with Running(cfg) as (_gk, c):
            h = ALICE.sign_fetch_headers(
                "POST", "/comms/get-scene-adapter", metadata=explorer_meta()
            )
            status, doc = await c.request("POST", "/get-scene-adapter", headers=h)
            assert status == 200, doc
            status, doc = await c.request(
                "POST", "/get-scene-adapter", who=ALICE, metadata=explorer_meta()
            )
            assert status == 401  # signed for the path without the proxy prefix

    run(body)


def test_local_preview_skips_ban_checks_only_when_allowed(tmp_path: Path) -> None:
    async def body() -> None:
        for allowed in (True, False):
            cfg = gk_config(
                tmp_path / str(allowed), allow_local_preview=allowed, auth_token=BEARER, **LIVEKIT
            )
            async with Running(cfg) as (_gk, c):
                status, _ = await c.request(
                    "POST",
                    f"/users/{BOB.address.lower()}/bans",
                    body={"reason": "x"},
                    headers={"Authorization": f"Bearer {BEARER}"},
                )
                assert status == 201
                md = explorer_meta(realm="localpreview")
                status, doc = await c.request("POST", "/get-scene-adapter", who=BOB, metadata=md)
                if allowed:
                    assert status == 200, doc
                    claims = TokenVerifier(LK_KEY, LK_SECRET).verify(token_of(doc["adapter"]))
                    assert claims.video is not None
                    assert claims.video.room == f"localpreview:{SCENE_ID}"
                else:
                    assert (status, doc["code"]) == (403, "platform_banned")

    run(body)
