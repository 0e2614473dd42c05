"""Decentraland NAMEs on the moderation routes and the scene-admin listing
(control-plane.md 1.3, 1.5): ``{"name"}`` / ``{"banned_name"}`` resolved to the
owner's wallet through the resolver (the static table, and the HTTP resolver against
a stand-in lambdas server on 127.0.0.1); the listing holds the ``scene_admin`` rows
and the wallets with owner rights from the land or world, with display names. Every
reject: bad name 400, unknown name 404, lookup failure 503 (fail closed), owner
rights 400, banned admin 400."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aiohttp import web

from dclcomms.auth import Identity
from dclcomms.gatekeeper.resolver import normalize_name
from tests.helpers.common import start_app
from tests.helpers.gatekeeper import (
    LK_KEY,
    LK_SECRET,
    SCENE_ID,
    Running,
    gk_config,
    run,
    scene_meta,
)

LIVEKIT = {
    "livekit_host": "lk.example.org",
    "livekit_api_key": LK_KEY,
    "livekit_api_secret": LK_SECRET,
}
OWNER = Identity.generate(seed=401)
ALICE = Identity.generate(seed=402)
BOB = Identity.generate(seed=403)
CAROL = Identity.generate(seed=404)
OPERATOR = Identity.generate(seed=405)


def _a(who: Identity) -> str:
    return who.address.lower()


def _table(tmp_path: Path) -> Path:
    p = tmp_path / "owners.toml"
    p.write_text(
        f'[[places]]\nid = "place-0"\nname = "Plaza"\nscene_ids = ["{SCENE_ID}"]\n'
        f'owners = ["{OWNER.address}"]\n'
        "[names]\n"
        f'boss = "{OWNER.address}"\n'
        f'Alice = "{ALICE.address}"\n'
        f'bob = "{BOB.address}"\n'
    )
    return p


def test_normalize_name() -> None:
    assert normalize_name("alice") == "alice"
    assert normalize_name("Alice.dcl.eth") == "Alice"
    for bad in ("", "a" * 16, "al ice", "alice.eth", "ali-ce", 7, None, "0x" + "a" * 40):
        assert normalize_name(bad) is None, bad


def test_names_and_listing_with_the_static_table(tmp_path: Path) -> None:
    async def body() -> None:
        cfg = gk_config(tmp_path, moderation_file=str(_table(tmp_path)), **LIVEKIT)
        async with Running(cfg) as (_gk, c):

            async def call(method: str, path: str, who: Identity, **kw: Any) -> tuple[int, Any]:
                return await c.request(method, path, who=who, metadata=scene_meta(), **kw)

            # add an admin by NAME (case-insensitive, with or without .dcl.eth)
            assert (await call("POST", "/scene-admin", OWNER, body={"name": "alice"}))[0] == 204
            status, doc = await call("POST", "/scene-admin", OWNER, body={"name": "ALICE.dcl.eth"})
            assert (status, doc["code"]) == (409, "already_admin")
            # rejects: not a NAME, no owner, owner rights already, banned
            for bad in ("bad name", "x" * 16, 42, "alice.eth"):
                status, doc = await call("POST", "/scene-admin", OWNER, body={"name": bad})
                assert (status, doc["code"]) == (400, "bad_name"), bad
            status, doc = await call("POST", "/scene-admin", OWNER, body={"name": "nobody"})
            assert (status, doc["code"]) == (404, "name_not_found")
            assert "nobody" in doc["error"]
            status, doc = await call("POST", "/scene-admin", OWNER, body={"name": "boss"})
            assert (status, doc["code"]) == (400, "already_owner")
            status, doc = await call("POST", "/scene-admin", OWNER, body={})
            assert (status, doc["code"]) == (400, "bad_address")
            # ban by NAME; a banned wallet cannot be made an admin
            status, _ = await call("POST", "/scene-bans", ALICE, body={"banned_name": "bob"})
            assert status == 204
            status, doc = await call("GET", "/scene-bans/addresses", OWNER)
            assert doc["results"] == [_a(BOB)]
            status, doc = await call("GET", "/scene-bans", OWNER)  # with display names
            assert [(r["bannedAddress"], r["name"]) for r in doc["results"]] == [(_a(BOB), "bob")]
            status, doc = await call("POST", "/scene-admin", OWNER, body={"admin": BOB.address})
            assert (status, doc["code"]) == (400, "banned_admin")
            status, doc = await call("POST", "/scene-bans", OWNER, body={"banned_name": "nobody"})
            assert (status, doc["code"]) == (404, "name_not_found")
            status, doc = await call("POST", "/scene-bans", OWNER, body={"banned_name": ["bob"]})
            assert (status, doc["code"]) == (400, "bad_name")
            status, doc = await call("POST", "/scene-bans", OWNER, body={"banned_name": "boss"})
            assert (status, doc["code"]) == (400, "cannot_ban_admin")
            assert (await call("DELETE", "/scene-bans", OWNER, body={"banned_name": "bob"}))[
                0
            ] == 204
            status, doc = await call("GET", "/scene-bans/addresses", OWNER)
            assert doc["results"] == []
            # the listing: rows (removable), then owner rights (not), with display names
            status, doc = await call("GET", "/scene-admin", ALICE)
            assert status == 200
            assert doc == [
                {"admin": _a(ALICE), "name": "alice", "canBeRemoved": True},
                {"admin": _a(OWNER), "name": "boss", "canBeRemoved": False},
            ]
            status, doc = await call("GET", f"/scene-admin?admin={OWNER.address}", ALICE)
            assert [x["admin"] for x in doc] == [_a(OWNER)]
            status, doc = await call("GET", "/scene-admin?admin=nope", ALICE)
            assert (status, doc["code"]) == (400, "bad_address")
            status, doc = await c.request("GET", f"/scene-rooms/main:{SCENE_ID}/metadata")
            assert doc["sceneAdmins"] == [_a(ALICE), _a(OWNER)]
            # the owner's rights are not a row: 400, not 404
            status, doc = await call("DELETE", "/scene-admin", ALICE, body={"admin": OWNER.address})
            assert (status, doc["code"]) == (400, "cannot_remove_owner")
            status, doc = await call("DELETE", "/scene-admin", OWNER, body={"name": "nobody"})
            assert (status, doc["code"]) == (404, "name_not_found")
            assert (await call("DELETE", "/scene-admin", OWNER, body={"name": "alice"}))[0] == 204
            status, doc = await call("DELETE", "/scene-admin", OWNER, body={"name": "alice"})
            assert (status, doc["code"]) == (404, "not_admin_row")

    run(body)


class Lambdas:
    """A stand-in of Decentraland's lambdas (names, parcel permissions and operators,
    profiles) and worlds content server, recording what it was asked."""

    def __init__(self) -> None:
        self.names = {"alice": _a(ALICE), "bob": _a(BOB)}
        self.broken_names = {"flaky"}
        self.profiles_up = True
        self.operators_up = True
        self.asked: list[str] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/lambdas/names/{name}/owner", self.name_owner)
        app.router.add_get("/lambdas/users/{address}/parcels/{x}/{y}/permissions", self.perms)
        app.router.add_get("/lambdas/parcels/{x}/{y}/operators", self.operators)
        app.router.add_post("/lambdas/profiles", self.profiles)
        app.router.add_get("/worlds/world/{name}/permissions", self.world_perms)
        return app

    async def name_owner(self, r: web.Request) -> web.Response:
        name = r.match_info["name"]
        self.asked.append(f"name:{name}")
        if name in self.broken_names:
            return web.json_response({"error": "boom"}, status=500)
        owner = self.names.get(name.lower())
        if owner is None:
            return web.json_response({"error": "not found"}, status=404)
        return web.json_response({"owner": owner})

    async def perms(self, r: web.Request) -> web.Response:
        a = r.match_info["address"]
        return web.json_response(
            {"owner": a == _a(OWNER), "operator": a == _a(OPERATOR), "updateOperator": False}
        )

    async def operators(self, r: web.Request) -> web.Response:
        self.asked.append(f"operators:{r.match_info['x']},{r.match_info['y']}")
        if not self.operators_up:
            return web.json_response({"error": "boom"}, status=503)
        return web.json_response(
            {
                "owner": OWNER.address,
                "operator": OPERATOR.address,
                "updateOperator": None,
                "updateManagers": [],
                "approvedForAll": [],
            }
        )

    async def profiles(self, r: web.Request) -> web.Response:
        ids = (await r.json())["ids"]
        self.asked.append("profiles:" + ",".join(sorted(ids)))
        if not self.profiles_up:
            return web.json_response({"error": "boom"}, status=500)
        known = {
            _a(ALICE): ("alice", True),
            _a(OWNER): ("Boss", False),  # unclaimed: name#last4
        }
        out = []
        for i in ids:
            if i in known:
                name, claimed = known[i]
                out.append(
                    {"avatars": [{"ethAddress": i, "name": name, "hasClaimedName": claimed}]}
                )
        return web.json_response(out)

    async def world_perms(self, r: web.Request) -> web.Response:
        return web.json_response(
            {
                "owner": OWNER.address,
                "permissions": {
                    "access": {"type": "unrestricted"},
                    "deployment": {"type": "allow-list", "wallets": [CAROL.address]},
                    "streaming": {"type": "allow-list", "wallets": []},
                },
            }
        )


def test_names_and_listing_through_the_http_resolver(tmp_path: Path) -> None:
    async def body() -> None:
        lambdas = Lambdas()
        runner, port = await start_app(lambdas.app())
        base = f"http://127.0.0.1:{port}"
        try:
            cfg = gk_config(
                tmp_path,
                lambdas_url=f"{base}/lambdas",
                worlds_url=f"{base}/worlds",
                **LIVEKIT,
            )
            async with Running(cfg) as (gk, c):
                md = scene_meta(parcel="5,6")

                async def call(
                    method: str, who: Identity, path: str = "/scene-admin", **kw: Any
                ) -> tuple[int, Any]:
                    return await c.request(method, path, who=who, metadata=md, **kw)

                status, doc = await call("POST", OWNER, body={"name": "alice"})
                assert status == 204, doc
                assert "name:alice" in lambdas.asked
                status, doc = await call("POST", OWNER, body={"name": "ghost"})
                assert (status, doc["code"]) == (404, "name_not_found")
                # the names service failing: 503, nothing written (fail closed)
                status, doc = await call("POST", OWNER, body={"name": "flaky"})
                assert (status, doc["code"]) == (503, "resolver_unavailable")
                status, doc = await call(
                    "POST", OWNER, path="/scene-bans", body={"banned_name": "flaky"}
                )
                assert (status, doc["code"]) == (503, "resolver_unavailable")
                # an operator of the land has owner rights already
                status, doc = await call("POST", OWNER, body={"admin": OPERATOR.address})
                assert (status, doc["code"]) == (400, "already_owner")
                status, _ = await call(
                    "POST", OWNER, path="/scene-bans", body={"banned_name": "bob"}
                )
                assert status == 204
                assert gk.gatekeeper is not None
                assert gk.gatekeeper.store.is_scene_banned(SCENE_ID, _a(BOB))
                status, doc = await call("GET", OWNER, path="/scene-bans")
                assert status == 200 and doc["results"][0]["name"] == ""  # no profile
                assert "profiles:" + _a(BOB) in lambdas.asked
                # the listing: the row, then owner and operator from the lambdas, named
                status, doc = await call("GET", ALICE)
                assert status == 200, doc
                assert doc == [
                    {"admin": _a(ALICE), "name": "alice", "canBeRemoved": True},
                    {"admin": _a(OWNER), "name": f"Boss#{_a(OWNER)[-4:]}", "canBeRemoved": False},
                    {"admin": _a(OPERATOR), "name": "", "canBeRemoved": False},
                ]
                assert "operators:5,6" in lambdas.asked
                status, doc = await call("DELETE", ALICE, body={"admin": OPERATOR.address})
                assert (status, doc["code"]) == (400, "cannot_remove_owner")
                # a world: owner and deployers from the worlds content server
                wmd = scene_meta(realm="club.eth", scene_id="bafyworld", world=True)
                status, doc = await c.request("GET", "/scene-admin", who=OWNER, metadata=wmd)
                assert status == 200
                assert [(x["admin"], x["canBeRemoved"]) for x in doc] == [
                    (_a(OWNER), False),
                    (_a(CAROL), False),
                ]
                # display names down: listed without names (cosmetic), not an error
                lambdas.profiles_up = False
                gk.gatekeeper.resolver._cache.clear()  # type: ignore[attr-defined]
                status, doc = await call("GET", ALICE)
                assert status == 200 and [x["name"] for x in doc] == ["", "", ""]
                # the owner-rights lookup down: the listing is 503 (fail closed)
                lambdas.operators_up = False
                gk.gatekeeper.resolver._cache.clear()  # type: ignore[attr-defined]
                status, doc = await call("GET", ALICE)
                assert (status, doc["code"]) == (503, "resolver_unavailable")
                text = gk.registry.render()
                assert 'dcl_gatekeeper_resolver_failures_total{service="lambdas"}' in text
                assert 'dcl_gatekeeper_resolver_failures_total{service="profiles"}' in text
        finally:
            await runner.cleanup()

    run(body)


def test_names_table_errors(tmp_path: Path) -> None:
    import pytest

    from dclcomms.errors import ConfigError
    from dclcomms.gatekeeper.resolver import StaticResolver

    for bad in ({"names": {"bad name": ALICE.address}}, {"names": {"al": "0x12"}}, {"names": 3}):
        with pytest.raises(ConfigError) as e:
            StaticResolver.from_dict(json.loads(json.dumps(bad)))
        assert e.value.code == "bad_value"
