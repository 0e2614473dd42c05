"""The gatekeeper's remaining documented rejects (docs/gatekeeper.md "Routes", "Casting and
speakers"), each answered with its status and ``{"error", "code"}`` and leaving the
gatekeeper serving: bodies that are not JSON objects, bad platform-ban and warning
fields, pagination, the §1.7 routes' bad inputs, non-admins on them, casting on
built-in rooms (no media), the webhook without LiveKit, unknown rooms."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dclcomms.auth import Identity
from tests.helpers.gatekeeper import (
    SCENE_ID,
    Running,
    explorer_meta,
    gk_config,
    owner_table,
    run,
    scene_meta,
)

OWNER = Identity.generate(seed=501)
ALICE = Identity.generate(seed=502)
BEARER = "operator-token-rejects-0123456789"


def test_every_remaining_reject(tmp_path: Path) -> None:
    async def body() -> None:
        cfg = gk_config(
            tmp_path,
            moderation_file=str(owner_table(tmp_path, OWNER.address)),
            auth_token=BEARER,
        )
        async with Running(cfg) as (_gk, c):
            seen: list[tuple[int, str]] = []

            async def expect(
                status: int, code: str, method: str, path: str, **kw: Any
            ) -> dict[str, Any]:
                got, doc = await c.request(method, path, **kw)
                assert (got, doc.get("code")) == (status, code), (method, path, got, doc)
                assert isinstance(doc["error"], str) and doc["error"]
                seen.append((status, code))
                return dict(doc)

            owner = {"who": OWNER, "metadata": scene_meta()}
            bearer = {"headers": {"Authorization": f"Bearer {BEARER}"}}
            addr = ALICE.address.lower()
            # bodies that are not JSON objects
            for raw in (b"{not json", b"[1, 2]", b'"text"', b"\xff\xfe"):
                await expect(400, "bad_json", "POST", "/scene-bans", raw=raw, **owner)
            await expect(400, "bad_json", "POST", f"/users/{addr}/bans", raw=b"nope", **bearer)
            # wrong types where an address is expected
            for value in (5, None, "0x123", ["0x" + "a" * 40]):
                await expect(
                    400, "bad_address", "POST", "/scene-bans", body={"banned_address": value},
                    **owner,
                )  # fmt: skip
            await expect(400, "bad_address", "POST", "/scene-admin", body={"admin": 1}, **owner)
            # platform bans and warnings: bad fields
            for bad in (
                {"reason": ""},
                {"reason": 5},
                {"reason": "x", "duration": -1},
                {"reason": "x", "duration": 0},
                {"reason": "x", "duration": True},
                {"reason": "x", "duration": 1.5},
                {"reason": "x", "customMessage": 5},
            ):
                await expect(400, "bad_request", "POST", f"/users/{addr}/bans", body=bad, **bearer)
            await expect(400, "bad_request", "POST", f"/users/{addr}/warnings", body={}, **bearer)
            await expect(401, "unauthorized", "GET", f"/users/{addr}/warnings")
            await expect(401, "unauthorized", "GET", "/bans")
            await expect(400, "bad_address", "POST", "/users/0x12/bans", body={}, **bearer)
            # pagination
            for q in ("limit=0", "limit=101", "offset=-1", "limit=abc", "offset=x"):
                await expect(400, "bad_request", "GET", f"/scene-bans?{q}", **owner)
                await expect(400, "bad_request", "GET", f"/scene-bans/addresses?{q}", **owner)
            # non-admins on every owner-or-admin route
            alice = {"who": ALICE, "metadata": scene_meta()}
            for method, path, payload in (
                ("GET", "/scene-bans", None),
                ("GET", "/scene-bans/addresses", None),
                ("DELETE", "/scene-admin", {"admin": OWNER.address}),
                ("POST", "/cast/generate-stream-link", None),
                ("GET", "/cast/presenters", None),
                ("POST", "/cast/presenters", {"identity": addr}),
                ("PUT", "/scene-rooms/moderation", {"moderated": True}),
                ("POST", "/scene-rooms/speakers", {"address": addr}),
                ("DELETE", "/scene-rooms/speakers", {"address": addr}),
            ):
                await expect(401, "not_admin", method, path, body=payload, **alice)
            # §1.7: bad inputs
            for moderated in ("yes", 1, None):
                await expect(
                    400, "bad_request", "PUT", "/scene-rooms/moderation",
                    body={"moderated": moderated}, **owner,
                )  # fmt: skip
            for value in ("nope", 7):
                await expect(
                    400, "bad_address", "POST", "/scene-rooms/speakers", body={"address": value},
                    **owner,
                )  # fmt: skip
            for identity in ("", 5, "x" * 201):
                await expect(
                    400, "bad_request", "POST", "/cast/presenters", body={"identity": identity},
                    **owner,
                )  # fmt: skip
            await expect(
                404, "not_presenter", "DELETE", "/cast/presenters", body={"identity": addr}, **owner
            )
            await expect(
                404, "not_speaker", "DELETE", "/scene-rooms/speakers", body={"address": addr},
                **owner,
            )  # fmt: skip
            await expect(
                401, "wrong_signer", "POST", "/scene-rooms/speak-requests", who=ALICE,
                metadata=scene_meta(),
            )  # fmt: skip
            await expect(
                401, "wrong_signer", "POST", "/scene-admin", who=OWNER,
                metadata={**scene_meta(), "signer": "dcl:explorer"}, body={"admin": addr},
            )  # fmt: skip
            await expect(
                400, "missing_metadata", "GET", "/scene-admin", who=OWNER,
                metadata={"signer": "decentraland-kernel-scene", "realm": {"serverName": "main"}},
            )  # fmt: skip
            # casting needs media: built-in rooms answer 409 on the token routes
            got, link = await c.request("POST", "/cast/generate-stream-link", **owner)
            assert got == 200, link
            await expect(
                409, "no_media", "POST", "/cast/streamer-token",
                body={"token": link["streamingKey"], "identity": "Host"},
            )  # fmt: skip
            room = f"main:{SCENE_ID}"
            await expect(409, "no_media", "POST", "/cast/watcher-token", body={"roomId": room})
            await expect(400, "bad_request", "POST", "/cast/watcher-token", body={"roomId": 5})
            await expect(401, "bad_stream_key", "POST", "/cast/streamer-token", body={})
            await expect(404, "unknown_link", "GET", "/cast/stream-info/not-a-key")
            # the webhook without LiveKit; unknown rooms
            await expect(404, "no_livekit", "POST", "/livekit-webhook", raw=b"{}")
            await expect(404, "unknown_room", "GET", "/scene-rooms/main:nowhere/metadata")
            # still serving after all of it
            got, doc = await c.request(
                "POST", "/get-scene-adapter", who=ALICE, metadata=explorer_meta()
            )
            assert got == 200 and doc["adapter"].startswith("ws-room:")
            assert len(seen) > 50

    run(body)
