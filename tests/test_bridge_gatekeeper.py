"""The embedded bridge uses the mounted gatekeeper's parts: its configured database (API
keys created with ``dclcomms bridge keys --database``, stored hashed there), its
owner-or-admin check (static table or HTTP resolver, plus ``scene_admin`` rows) for
signed-fetch credentials, its authoritative server and its room naming.

PostgreSQL (a fresh database for the run) is the gatekeeper database here.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from dclcomms.auth import Identity
from dclcomms.bridge import BridgeClient
from dclcomms.config import RealmConfig
from dclcomms.realm import Realm
from tests.helpers.bridge import chat, refused
from tests.helpers.postgres import pg_url  # noqa: F401
from tests.helpers.realm_client import RoomClient, Wallet, scene_room_string

SCENE_ID = "bafyscene1"
WORLD = "party.dcl.eth"


def keys_cli(*args: str, database: str) -> Any:
    out = subprocess.run(
        [sys.executable, "-m", "dclcomms", "bridge", "keys", *args, "--database", database],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


async def scene_member(realm: Realm, seed: int, room: str) -> RoomClient:
    c = RoomClient(Wallet(seed))
    await c.join(scene_room_string(realm, room, c.wallet))
    return c


def test_embedded_bridge_uses_the_gatekeepers_database_and_resolver(
    pg_url: str,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    owner = Identity.generate(seed=41)  # owner in the static table
    admin = Identity.generate(seed=42)  # a scene_admin row of the place
    world_owner = Identity.generate(seed=43)
    authoritative = Identity.generate(seed=44)
    stranger = Identity.generate(seed=45)
    table = tmp_path / "owners.toml"
    table.write_text(
        f"""
[[places]]
id = "place-1"
name = "Plaza"
scene_ids = ["{SCENE_ID}"]
owners = ["{owner.address}"]

[[worlds]]
name = "{WORLD}"
owner = "{world_owner.address}"
"""
    )
    monkeypatch.setenv("GATEKEEPER_MODERATION_FILE", str(table))
    monkeypatch.setenv("AUTHORITATIVE_SERVER_ADDRESS", authoritative.address)
    monkeypatch.setenv("SCENE_ROOM_PREFIX", "scene-")
    # keys created by the operator in the gatekeeper database (PostgreSQL), stored hashed
    key = keys_cli(
        "create", "--name", "doors", "--scope", f"scene:main:{SCENE_ID}", database=pg_url
    )
    gone = keys_cli("create", "--name", "gone-gk", "--scope", "island:*", database=pg_url)

    async def body() -> None:
        cfg = RealmConfig(
            host="127.0.0.1",
            port=0,
            log_format="text",
            log_level="WARNING",
            bridge=True,
            gatekeeper_database=pg_url,
            data_dir=str(tmp_path / "data"),
        )
        async with Realm(cfg) as realm:
            gk = realm.gatekeeper
            assert gk is not None
            room = f"scene-main:{SCENE_ID}"  # the gatekeeper's naming (SCENE_ROOM_PREFIX)
            url = f"ws://127.0.0.1:{realm.port}/bridge"
            await asyncio.to_thread(
                gk.store.add_scene_admin, "place-1", admin.address.lower(), added_by="test"
            )
            a = await scene_member(realm, 1, room)
            w = await scene_member(realm, 2, f"{WORLD}-bafyw1")
            try:
                async with BridgeClient(url, key=key["key"]) as s:
                    sub = await s.subscribe("scene", f"main:{SCENE_ID}")
                    assert sub.room == room
                    await a.send({"peerUpdateMessage": {"fromAlias": 0, "body": chat("k")}})
                    assert (await sub.get(5)).sender == a.wallet.address
                # the key revoked in the database: refused at the next connection
                keys_cli("revoke", gone["id"], database=pg_url)
                await refused(BridgeClient(url, key=gone["key"]).connect(), "key_revoked")
                # signed fetch: the static table's owner, the place's admin, the world owner
                for who, topic in (
                    (owner, f"main:{SCENE_ID}"),
                    (admin, f"main:{SCENE_ID}"),
                    (world_owner, f"{WORLD}:bafyw1"),
                    (authoritative, f"main:{SCENE_ID}"),
                    (authoritative, "main:bafyanything"),
                ):
                    async with BridgeClient(url, identity=who) as s:
                        assert s.identity == who.address.lower()
                        await s.subscribe("scene", topic)
                # ... but not someone else's scene, nor an island
                async with BridgeClient(url, identity=owner) as s:
                    await refused(s.subscribe("scene", f"{WORLD}:bafyw1"), "forbidden_scope")
                    await refused(s.subscribe("scene", "main:bafyother"), "forbidden_scope")
                    await refused(s.subscribe("island", "I1"), "forbidden_scope")
                async with BridgeClient(url, identity=stranger) as s:
                    await refused(s.subscribe("scene", f"main:{SCENE_ID}"), "forbidden_scope")
                # the admin's injection reaches the scene room from the admin's wallet
                async with BridgeClient(url, identity=admin) as s:
                    sub = await s.subscribe("scene", f"main:{SCENE_ID}")
                    await sub.send(chat("from the admin"))
                    join = await a.expect("peerJoinMessage", address=admin.address.lower())
                    alias = join["peerJoinMessage"]["alias"]
                    await a.expect("peerUpdateMessage", fromAlias=alias)
                # the admin row removed: refused from the next session on
                await asyncio.to_thread(gk.store.remove_scene_admin, "place-1", admin.address)
                async with BridgeClient(url, identity=admin) as s:
                    await refused(s.subscribe("scene", f"main:{SCENE_ID}"), "forbidden_scope")
            finally:
                await a.close()
                await w.close()

    asyncio.run(asyncio.wait_for(body(), 90))
