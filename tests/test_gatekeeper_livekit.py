"""The gatekeeper on LiveKit: a recording RoomService stand-in (a real Twirp HTTP server
on 127.0.0.1 that checks the bearer JWT) receives RemoveParticipant, UpdateRoomMetadata,
UpdateParticipant made through livekit-api; the webhook signature; casting and
speakers (control-plane.md 1.5, 1.7)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from aiohttp import web
from livekit import api
from livekit.api import TokenVerifier

from dclcomms.auth import Identity
from dclcomms.gatekeeper.app import webhook_auth
from tests.helpers.common import start_app
from tests.helpers.gatekeeper import (
    LK_KEY,
    LK_SECRET,
    SCENE_ID,
    Running,
    explorer_meta,
    gk_config,
    owner_table,
    run,
    token_of,
)

ALICE = Identity.generate(seed=201)
BOB = Identity.generate(seed=202)
OWNER = Identity.generate(seed=203)
ROOM = f"main:{SCENE_ID}"
BEARER = "operator-token-0123456789"

REQUESTS = {
    "RemoveParticipant": (api.RoomParticipantIdentity, api.RemoveParticipantResponse),
    "UpdateRoomMetadata": (api.UpdateRoomMetadataRequest, api.Room),
    "UpdateParticipant": (api.UpdateParticipantRequest, api.ParticipantInfo),
    "ListRooms": (api.ListRoomsRequest, api.ListRoomsResponse),
    "ListParticipants": (api.ListParticipantsRequest, api.ListParticipantsResponse),
}


class RoomService:
    """A recording LiveKit RoomService (Twirp, protobuf)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.times: list[tuple[str, float]] = []  # (method, time.monotonic() received)
        self.rejected = 0
        self.rooms: dict[str, str] = {ROOM: json.dumps({"other": "kept"})}
        self.participants: dict[str, list[str]] = {ROOM: []}

    async def handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        auth = request.headers.get("Authorization", "")
        try:
            claims = TokenVerifier(LK_KEY, LK_SECRET).verify(auth.removeprefix("Bearer "))
            assert (claims.video is not None and claims.video.room_admin) or method == "ListRooms"
        except Exception:
            self.rejected += 1
            return web.json_response({"code": "unauthenticated", "msg": "bad token"}, status=401)
        req_cls, resp_cls = REQUESTS[method]
        msg = req_cls.FromString(await request.read())
        self.calls.append((method, msg))
        self.times.append((method, time.monotonic()))
        if method == "ListRooms":
            names = list(msg.names) or list(self.rooms)
            rooms = [api.Room(name=n, metadata=self.rooms[n]) for n in names if n in self.rooms]
            return self._ok(api.ListRoomsResponse(rooms=rooms))
        if method == "ListParticipants":
            ps = [api.ParticipantInfo(identity=i) for i in self.participants.get(msg.room, [])]
            return self._ok(api.ListParticipantsResponse(participants=ps))
        if method == "UpdateRoomMetadata":
            self.rooms[msg.room] = msg.metadata
            return self._ok(api.Room(name=msg.room, metadata=msg.metadata))
        if method == "RemoveParticipant":
            members = self.participants.get(msg.room, [])
            if msg.identity not in members:
                return web.json_response({"code": "not_found", "msg": "no participant"}, status=404)
            members.remove(msg.identity)
            return self._ok(api.RemoveParticipantResponse())
        return self._ok(resp_cls())

    @staticmethod
    def _ok(message: Any) -> web.Response:
        return web.Response(body=message.SerializeToString(), content_type="application/protobuf")

    def of(self, method: str) -> list[Any]:
        return [m for k, m in self.calls if k == method]


async def _stand_in() -> tuple[RoomService, web.AppRunner, int]:
    svc = RoomService()
    app = web.Application()
    app.router.add_post("/twirp/livekit.RoomService/{method}", svc.handle)
    runner, port = await start_app(app)
    return svc, runner, port


def _cfg(tmp_path: Path, port: int, **kw: Any) -> Any:
    return gk_config(
        tmp_path,
        livekit_host=f"ws://127.0.0.1:{port}",
        livekit_api_key=LK_KEY,
        livekit_api_secret=LK_SECRET,
        moderation_file=str(owner_table(tmp_path, OWNER.address)),
        auth_token=BEARER,
        **kw,
    )


def test_scene_ban_removes_the_participant_and_updates_metadata(tmp_path: Path) -> None:
    async def body() -> None:
        svc, runner, port = await _stand_in()
        try:
            async with Running(_cfg(tmp_path, port)) as (_gk, c):
                svc.participants[ROOM] = [BOB.address.lower(), ALICE.address.lower()]
                status, _ = await c.request(
                    "POST", "/get-scene-adapter", who=BOB, metadata=explorer_meta()
                )
                assert status == 200
                t0 = time.monotonic()
                status, _ = await c.scene(
                    "POST", "/scene-bans", OWNER, {"banned_address": BOB.address}
                )
                assert status == 204
                removed = svc.of("RemoveParticipant")
                assert [(r.room, r.identity) for r in removed] == [(ROOM, BOB.address.lower())]
                kicked_at = next(t for m, t in svc.times if m == "RemoveParticipant")
                assert kicked_at - t0 < 1.0
                assert svc.participants[ROOM] == [ALICE.address.lower()]
                # refused on the next token request
                status, doc = await c.request(
                    "POST", "/get-scene-adapter", who=BOB, metadata=explorer_meta()
                )
                assert (status, doc["code"]) == (403, "scene_banned")
                meta = json.loads(svc.of("UpdateRoomMetadata")[-1].metadata)
                assert meta["bannedAddresses"] == [BOB.address.lower()]
                assert meta["other"] == "kept"  # keys the gatekeeper does not own survive
                assert svc.rejected == 0
                # a platform ban removes from every room
                svc.participants[ROOM] = [ALICE.address.lower()]
                svc.calls.clear()
                status, _ = await c.request(
                    "POST",
                    f"/users/{ALICE.address.lower()}/bans",
                    body={"reason": "spam"},
                    headers={"Authorization": f"Bearer {BEARER}"},
                )
                assert status == 201
                assert [(r.room, r.identity) for r in svc.of("RemoveParticipant")] == [
                    (ROOM, ALICE.address.lower())
                ]
        finally:
            await runner.cleanup()

    run(body)


def test_scene_ban_from_the_shell_removes_the_participant_within_1s(tmp_path: Path) -> None:
    """`dclcomms gatekeeper scene-bans add` writes the database of a running gatekeeper
    (another process): the gatekeeper sees the change counter move and removes the
    participant through RoomService within 1 s of the write, refreshes the metadata and
    refuses the next token; `platform` bans from the shell remove from every room."""

    def cli(*args: str) -> None:
        r = subprocess.run(
            [sys.executable, "-m", "dclcomms", "gatekeeper", *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, r.stderr

    async def body() -> None:
        svc, runner, port = await _stand_in()
        data = ["--data-dir", str(tmp_path / "data")]
        try:
            async with Running(_cfg(tmp_path, port)) as (_gk, c):
                bob, alice = BOB.address.lower(), ALICE.address.lower()
                for who in (BOB, ALICE):
                    status, _ = await c.request(
                        "POST", "/get-scene-adapter", who=who, metadata=explorer_meta()
                    )
                    assert status == 200
                svc.participants[ROOM] = [bob, alice]
                await asyncio.to_thread(cli, "scene-bans", "add", bob, "--place", "place-0", *data)
                t0 = time.monotonic()
                # the kick and the metadata refresh are two calls; both within 1 s
                while svc.participants[ROOM] != [alice] or not svc.of("UpdateRoomMetadata"):
                    assert time.monotonic() - t0 < 1.0, svc.calls
                    await asyncio.sleep(0.01)
                assert [(r.room, r.identity) for r in svc.of("RemoveParticipant")] == [(ROOM, bob)]
                meta = json.loads(svc.of("UpdateRoomMetadata")[-1].metadata)
                assert meta["bannedAddresses"] == [bob]
                status, doc = await c.request(
                    "POST", "/get-scene-adapter", who=BOB, metadata=explorer_meta()
                )
                assert (status, doc["code"]) == (403, "scene_banned")
                # an admin added from the shell: the room metadata lists it within 1 s
                carol = "0x" + "c3" * 20
                await asyncio.to_thread(cli, "admins", "add", carol, "--place", "place-0", *data)
                t0 = time.monotonic()
                while carol not in json.loads(svc.rooms[ROOM]).get("sceneAdmins", []):
                    assert time.monotonic() - t0 < 1.0, svc.rooms[ROOM]
                    await asyncio.sleep(0.01)
                # a platform ban from the shell: RoomService lists the rooms, removes alice
                svc.calls.clear()
                await asyncio.to_thread(cli, "ban", alice, "--reason", "spam", *data)
                t0 = time.monotonic()
                while svc.participants[ROOM]:
                    assert time.monotonic() - t0 < 1.0, svc.calls
                    await asyncio.sleep(0.01)
                assert [(r.room, r.identity) for r in svc.of("RemoveParticipant")] == [
                    (ROOM, alice)
                ]
                status, doc = await c.request(
                    "POST", "/get-scene-adapter", who=ALICE, metadata=explorer_meta()
                )
                assert (status, doc["code"]) == (403, "platform_banned")
                assert svc.rejected == 0
        finally:
            await runner.cleanup()

    run(body)


def test_webhook_signature_and_refresh(tmp_path: Path) -> None:
    async def body() -> None:
        svc, runner, port = await _stand_in()
        try:
            async with Running(_cfg(tmp_path, port)) as (_gk, c):
                # the room becomes known to the gatekeeper with a token request
                status, _ = await c.request(
                    "POST", "/get-scene-adapter", who=ALICE, metadata=explorer_meta()
                )
                assert status == 200
                event = json.dumps(
                    {"event": "participant_joined", "room": {"name": ROOM}, "id": "EV_1"}
                ).encode()
                status, doc = await c.request(
                    "POST",
                    "/livekit-webhook",
                    raw=event,
                    headers={
                        "Authorization": "not-a-jwt",
                        "Content-Type": "application/webhook+json",
                    },
                )
                assert (status, doc["code"]) == (400, "bad_signature")
                forged = webhook_auth(event, LK_KEY, "another-secret-another-secret-0000")
                status, doc = await c.request(
                    "POST",
                    "/livekit-webhook",
                    raw=event,
                    headers={"Authorization": forged, "Content-Type": "application/webhook+json"},
                )
                assert (status, doc["code"]) == (400, "bad_signature")
                other_body = webhook_auth(b"{}", LK_KEY, LK_SECRET)
                status, _ = await c.request(
                    "POST",
                    "/livekit-webhook",
                    raw=event,
                    headers={
                        "Authorization": other_body,
                        "Content-Type": "application/webhook+json",
                    },
                )
                assert status == 400
                assert svc.of("UpdateRoomMetadata") == []
                good = webhook_auth(event, LK_KEY, LK_SECRET)
                status, _ = await c.request(
                    "POST",
                    "/livekit-webhook",
                    raw=event,
                    headers={"Authorization": good, "Content-Type": "application/webhook+json"},
                )
                assert status == 200
                meta = json.loads(svc.of("UpdateRoomMetadata")[-1].metadata)
                assert meta["bannedAddresses"] == [] and meta["other"] == "kept"
        finally:
            await runner.cleanup()

    run(body)


def test_casting_links_and_tokens(tmp_path: Path) -> None:
    async def body() -> None:
        svc, runner, port = await _stand_in()
        verifier = TokenVerifier(LK_KEY, LK_SECRET)
        try:
            async with Running(_cfg(tmp_path, port)) as (_gk, c):
                status, doc = await c.scene("POST", "/cast/generate-stream-link", ALICE)
                assert (status, doc["code"]) == (401, "not_admin")
                status, link = await c.scene("POST", "/cast/generate-stream-link", OWNER)
                assert status == 200, link
                assert link["placeId"] == "place-0" and link["placeName"] == "Plaza"
                assert link["expiresInDays"] == 4 and link["expiresAt"].endswith("Z")
                key = link["streamingKey"]
                assert len(key) >= 43 and key in link["streamLink"]
                status, info = await c.request("GET", f"/cast/stream-info/{key}")
                assert status == 200 and info["placeId"] == "place-0" and info["isWorld"] is False
                status, tok = await c.request(
                    "POST", "/cast/streamer-token", body={"token": key, "identity": "DJ"}
                )
                assert status == 200, tok
                claims = verifier.verify(tok["token"])
                assert claims.identity == "stream:place-0:1" and claims.name == "DJ"
                assert claims.video is not None and claims.video.room == ROOM
                assert claims.video.can_publish_sources == [
                    "camera",
                    "microphone",
                    "screen_share",
                    "screen_share_audio",
                ]
                assert claims.attributes == {"role": "streamer"}
                status, doc = await c.request(
                    "POST", "/cast/streamer-token", body={"token": "nope", "identity": "x"}
                )
                assert (status, doc["code"]) == (401, "bad_stream_key")
                status, w = await c.request(
                    "POST", "/cast/watcher-token", body={"roomId": ROOM, "identity": "fan"}
                )
                assert status == 200
                wc = verifier.verify(w["token"])
                assert w["identity"].startswith("watch:") and wc.identity == w["identity"]
                assert (
                    wc.video is not None and not wc.video.can_publish and wc.video.can_publish_data
                )
                status, doc = await c.request(
                    "POST", "/cast/watcher-token", body={"roomId": "main:other", "identity": "x"}
                )
                assert (status, doc["code"]) == (404, "unknown_room")
                # a new link revokes the previous one
                status, link2 = await c.scene("POST", "/cast/generate-stream-link", OWNER)
                assert status == 200
                status, doc = await c.request("GET", f"/cast/stream-info/{key}")
                assert (status, doc["code"]) == (404, "unknown_link")
                status, _ = await c.request("GET", f"/cast/stream-info/{link2['streamingKey']}")
                assert status == 200
                # presenters: listed, in metadata and live permissions
                status, _ = await c.scene(
                    "POST", "/cast/presenters", OWNER, {"identity": ALICE.address}
                )
                assert status == 204
                upd = svc.of("UpdateParticipant")[-1]
                assert (
                    upd.identity == ALICE.address.lower()
                    and len(upd.permission.can_publish_sources) == 4
                )
                status, doc = await c.scene("GET", "/cast/presenters", OWNER)
                assert doc == {"presenters": [ALICE.address.lower()]}
                assert json.loads(svc.rooms[ROOM])["presenters"] == [ALICE.address.lower()]
                status, _ = await c.scene(
                    "DELETE", "/cast/presenters", OWNER, {"identity": ALICE.address}
                )
                assert status == 204
                assert list(svc.of("UpdateParticipant")[-1].permission.can_publish_sources) == [
                    api.TrackSource.MICROPHONE
                ]
        finally:
            await runner.cleanup()

    run(body)


def test_moderated_room_speakers(tmp_path: Path) -> None:
    async def body() -> None:
        svc, runner, port = await _stand_in()
        verifier = TokenVerifier(LK_KEY, LK_SECRET)

        async def sources(who: Identity) -> list[str]:
            status, doc = await c.request(
                "POST", "/get-scene-adapter", who=who, metadata=explorer_meta()
            )
            assert status == 200, doc
            v = verifier.verify(token_of(doc["adapter"])).video
            assert v is not None
            return list(v.can_publish_sources)

        try:
            async with Running(_cfg(tmp_path, port)) as (_gk, c):
                svc.participants[ROOM] = [BOB.address.lower(), OWNER.address.lower()]
                status, doc = await c.scene(
                    "PUT", "/scene-rooms/moderation", BOB, {"moderated": True}
                )
                assert (status, doc["code"]) == (401, "not_admin")
                status, _ = await c.scene(
                    "PUT", "/scene-rooms/moderation", OWNER, {"moderated": True}
                )
                assert status == 204
                perms = {
                    u.identity: list(u.permission.can_publish_sources)
                    for u in svc.of("UpdateParticipant")
                }
                assert perms == {
                    BOB.address.lower(): [],
                    OWNER.address.lower(): [api.TrackSource.MICROPHONE],
                }
                assert await sources(BOB) == []
                assert await sources(OWNER) == ["microphone"]
                # BOB asks to speak (explorer signer only)
                status, doc = await c.request(
                    "POST",
                    "/scene-rooms/speak-requests",
                    who=BOB,
                    metadata=explorer_meta(signer="decentraland-kernel-scene"),
                )
                assert (status, doc["code"]) == (401, "wrong_signer")
                status, _ = await c.request(
                    "POST",
                    "/scene-rooms/speak-requests",
                    who=BOB,
                    metadata=explorer_meta(signer="dcl:explorer"),
                )
                assert status == 204
                assert json.loads(svc.rooms[ROOM])["speakRequests"] == [BOB.address.lower()]
                status, _ = await c.scene(
                    "POST", "/scene-rooms/speakers", OWNER, {"address": BOB.address}
                )
                assert status == 204
                last = svc.of("UpdateParticipant")[-1]
                assert last.identity == BOB.address.lower()
                assert list(last.permission.can_publish_sources) == [api.TrackSource.MICROPHONE]
                meta = json.loads(svc.rooms[ROOM])
                assert meta["speakers"] == [BOB.address.lower()] and meta["speakRequests"] == []
                assert meta["moderated"] is True
                assert await sources(BOB) == ["microphone"]
                status, _ = await c.scene(
                    "DELETE", "/scene-rooms/speakers", OWNER, {"address": BOB.address}
                )
                assert status == 204
                assert list(svc.of("UpdateParticipant")[-1].permission.can_publish_sources) == []
                assert await sources(BOB) == []
                status, doc = await c.scene(
                    "DELETE", "/scene-rooms/speakers", OWNER, {"address": BOB.address}
                )
                assert (status, doc["code"]) == (404, "not_speaker")
                assert svc.rejected == 0
        finally:
            await runner.cleanup()

    _ = asyncio
    run(body)
