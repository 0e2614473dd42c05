"""The bridge over NATS on a real nats-server, ``dclcomms bridge serve`` in its own process;
keys created with ``dclcomms bridge keys``.

* island rooms of a ``dclcomms rooms --nats`` process, read with island-scoped keys;
* the gatekeeper's scene rooms of a realm on NATS: bots in a scene room and on islands, a
  server with a scene-scoped key reads their RFC-4 traffic and injects state every bot in
  the scene receives from the server's identity; a key for another scene, an expired or
  revoked key, an island scope the key lacks and a forged signed fetch are refused and
  see nothing;
* a realm's rooms read by a bridge process and its own /bridge at once.
"""

from __future__ import annotations

import asyncio
import base64
import subprocess
import sys
from pathlib import Path

import pytest

from dclcomms import codec
from dclcomms.auth import Identity
from dclcomms.bridge import BridgeClient
from tests.helpers.bridge import (
    bad_credentials_refused,
    chat,
    cli,
    dead_keys,
    first_read,
    gatekeeper_scene_member,
    only_from,
    refused,
    serve_bridge,
    start,
    stop,
)
from tests.helpers.nats_fixtures import NatsServer, nats_server  # noqa: F401
from tests.helpers.realm_client import RoomClient, Wallet, room_string

RFC4 = codec.RFC4_PACKET
SCENE = "main:bafyscene1"

LEASE = ("--lease-interval", "0.5")


def test_island_rooms_of_a_rooms_process_through_a_bridge_process(
    nats_server: NatsServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    """``dclcomms rooms --nats`` (island rooms) and ``dclcomms bridge serve`` as separate
    processes: an island-scoped key reads its island's traffic through NATS (read-only:
    publishing is refused), never another island's; a scene key (scene rooms live in the
    gatekeeper's registry, not here), a key for another island, an expired or revoked key
    and a forged signed fetch are refused and see nothing."""
    data = tmp_path / "data"
    watch = cli("keys", "create", "--name", "watch", "--scope", "island:I7", data_dir=data)
    scene_key = cli("keys", "create", "--name", "doors", "--scope", f"scene:{SCENE}", data_dir=data)
    other = cli("keys", "create", "--name", "other", "--scope", "island:I9", data_dir=data)
    expired, revoked = dead_keys(data, "island:I7")
    listed = {k["name"]: k for k in cli("keys", "list", data_dir=data)}
    assert listed["watch"]["status"] == "active" and "key" not in listed["watch"]
    assert listed["old"]["status"] == "expired" and listed["gone"]["status"] == "revoked"

    async def body() -> None:
        rooms, rooms_port = await start(
            "rooms",
            "--nats",
            nats_server.url,
            "--public-url",
            "ws://127.0.0.1:1",
            "--node-id",
            "r1",
            expect="listening on",
        )
        bridge, bridge_port = await serve_bridge(nats_server.url, data, *LEASE)
        url = f"ws://127.0.0.1:{bridge_port}/bridge"
        bots: list[RoomClient] = []
        try:
            for seed, room in ((1, "I7"), (2, "I7"), (3, "I8")):
                c = RoomClient(Wallet(seed))
                await c.join(f"ws-room:ws://127.0.0.1:{rooms_port}/rooms/{room}")
                bots.append(c)
            a, b, elsewhere = bots
            await bad_credentials_refused(url, expired, revoked)
            async with BridgeClient(url, key=other["key"]) as o:
                await refused(o.subscribe("island", "I7"), "forbidden_scope")
            async with BridgeClient(url, key=scene_key["key"]) as sk:
                await refused(sk.subscribe("island", "I7"), "forbidden_scope")
            async with BridgeClient(url, key=watch["key"]) as server:
                assert server.identity == "server:watch"
                await refused(server.subscribe("island", "I8"), "forbidden_scope")
                island = await server.subscribe("island", "I7")
                msg = await first_read(island, a, "hi", noise=elsewhere)  # through NATS
                assert msg.sender == a.wallet.address and msg.room == "I7"
                assert msg.packet is not None and msg.packet["chat"]["message"].startswith("hi")
                await island.send(chat("nope"))  # islands are read-only for servers
                assert (await asyncio.wait_for(server.errors.get(), 5)).code == "read_only"
                with pytest.raises(TimeoutError):
                    await b.expect("peerJoinMessage", timeout=0.3, address="server:watch")
                only_from(island, a, b)  # only I7's members were read
        finally:
            for c in bots:
                await c.close()
            codes = [await stop(bridge), await stop(rooms)]
        assert codes == [0, 0]

    asyncio.run(asyncio.wait_for(body(), 120))


def test_keys_cli_errors(tmp_path: Path) -> None:
    for args, code in (
        (["keys", "create", "--name", "x", "--scope", "scene:*"], "bad_scope"),
        (["keys", "create", "--name", "x", "--scope", "island:I1", "--ttl", "soon"], "bad_scope"),
        (["keys", "revoke", "ffffffffffff"], "key_not_found"),
    ):
        out = subprocess.run(
            [sys.executable, "-m", "dclcomms", "bridge", *args, "--data-dir", str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 2, out
        assert out.stderr.startswith("dclcomms bridge: error: ") and f"[{code}]" in out.stderr


def test_realm_rooms_over_nats_with_the_local_bridge_too(
    nats_server: NatsServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A realm on NATS serves its rooms to a `dclcomms bridge serve` process and to its own
    /bridge at once: the two taps share the room (one leaving keeps the other's)."""
    from dclcomms.bridge import MemoryKeyStore
    from dclcomms.config import RealmConfig
    from dclcomms.nats.pubsub import NatsPubSub
    from dclcomms.realm import Realm

    data = tmp_path / "data"
    remote_key = cli("keys", "create", "--name", "remote", "--scope", "island:*", data_dir=data)

    async def body() -> None:
        local_keys = MemoryKeyStore()
        local_key, _ = local_keys.create("local", ["island:*"])
        pubsub = await NatsPubSub.connect([nats_server.url])
        cfg = RealmConfig(
            host="127.0.0.1", port=0, log_format="text", log_level="WARNING", bridge=True
        )
        realm = await Realm(cfg, pubsub=pubsub, bridge_keys=local_keys).start()
        bridge, bridge_port = await serve_bridge(nats_server.url, data, *LEASE)
        a = RoomClient(Wallet(1))
        try:
            await a.join(room_string(realm, "I9", a.wallet))
            local = BridgeClient(f"ws://127.0.0.1:{realm.port}/bridge", key=local_key)
            remote = BridgeClient(f"ws://127.0.0.1:{bridge_port}/bridge", key=remote_key["key"])
            await local.connect()
            await remote.connect()
            ls = await local.subscribe("island", "I9")
            rs = await remote.subscribe("island", "I9")
            got = await first_read(rs, a, "n")
            assert got.sender == a.wallet.address
            assert (await ls.get(timeout=5)).sender == a.wallet.address
            await local.close()  # the local gateway untaps; the NATS lease keeps the tap
            await asyncio.sleep(0.2)
            await a.send({"peerUpdateMessage": {"fromAlias": 0, "body": chat("still")}})
            while True:
                m = await rs.get(timeout=5)
                if m.packet is not None and m.packet["chat"]["message"] == "still":
                    break
            await remote.close()
        finally:
            await a.close()
            code = await stop(bridge)
            await realm.stop()
        assert code == 0

    asyncio.run(asyncio.wait_for(body(), 120))


def test_gatekeeper_scene_rooms_through_nats_with_the_bridge_in_its_own_process(
    nats_server: NatsServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    """The issue's acceptance over NATS: the realm (rooms, and the gatekeeper's built-in
    scene rooms) in this process, ``dclcomms bridge serve`` in another. A scene-scoped key
    reads the scene room's RFC-4 traffic (never the island room of the same id) and injects
    state every bot in the scene receives from ``server:doors``; the refused credentials
    see nothing."""
    from dclcomms.config import RealmConfig
    from dclcomms.nats.pubsub import NatsPubSub
    from dclcomms.realm import Realm
    from tests.helpers.realm_client import room_string

    data = tmp_path / "bridge-data"
    scene_key = cli("keys", "create", "--name", "doors", "--scope", f"scene:{SCENE}", data_dir=data)
    other = cli("keys", "create", "--name", "other", "--scope", "scene:main:bafyo", data_dir=data)
    expired, revoked = dead_keys(data, f"scene:{SCENE}")

    async def body() -> None:
        pubsub = await NatsPubSub.connect([nats_server.url])
        cfg = RealmConfig(
            host="127.0.0.1",
            port=0,
            log_format="text",
            log_level="WARNING",
            data_dir=str(tmp_path / "realm-data"),
        )
        realm = await Realm(cfg, pubsub=pubsub).start()  # no local /bridge: NATS only
        bridge, bridge_port = await serve_bridge(nats_server.url, data, *LEASE)
        url = f"ws://127.0.0.1:{bridge_port}/bridge"
        bots: list[RoomClient] = []
        try:
            a = await gatekeeper_scene_member(realm.port, 1, "bafyscene1")
            b = await gatekeeper_scene_member(realm.port, 2, "bafyscene1")
            bots += [a, b]
            island = RoomClient(Wallet(3))
            await island.join(room_string(realm, "I7", island.wallet))
            poser = RoomClient(Wallet(4))  # an island-registry room named like the scene room
            await poser.join(room_string(realm, SCENE, poser.wallet))
            bots += [island, poser]
            await bad_credentials_refused(url, expired, revoked)
            async with BridgeClient(url, key=other["key"]) as o:
                await refused(o.subscribe("scene", SCENE), "forbidden_scope")
                await refused(o.subscribe("island", "I7"), "forbidden_scope")
            async with BridgeClient(url, key=scene_key["key"]) as server:
                await refused(server.subscribe("island", "I7"), "forbidden_scope")
                scene = await server.subscribe("scene", SCENE)
                msg = await first_read(scene, a, "hi", noise=poser)  # through NATS
                assert msg.sender == a.wallet.address and msg.room == SCENE
                assert msg.packet is not None and msg.packet["chat"]["message"].startswith("hi")
                state = {
                    "scene": {
                        "sceneId": "bafyscene1",
                        "data": base64.b64encode(b"door=open").decode(),
                    }
                }
                await scene.send(state)
                for c in (a, b):
                    join = await c.expect("peerJoinMessage", timeout=10, address="server:doors")
                    alias = join["peerJoinMessage"]["alias"]
                    got = await c.expect("peerUpdateMessage", timeout=10, fromAlias=alias)
                    assert (
                        codec.decode(RFC4, base64.b64decode(got["peerUpdateMessage"]["body"]))
                        == state
                    )
                for c in (island, poser):  # the island rooms see none of it
                    with pytest.raises(TimeoutError):
                        await c.expect("peerJoinMessage", timeout=0.3, address="server:doors")
                only_from(scene, a, b)  # only the scene room's members were read
            await a.expect("peerLeaveMessage", timeout=10, alias=alias)
        finally:
            for c in bots:
                await c.close()
            code = await stop(bridge)
            await realm.stop()
        assert code == 0

    asyncio.run(asyncio.wait_for(body(), 120))


def test_bridge_serve_resolves_owners_and_admins_like_the_gatekeeper(
    nats_server: NatsServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    """``dclcomms bridge serve`` configured like the gatekeeper (here the worlds content
    server by its environment variable, WORLDS_CONTENT_SERVER_URL): a world's owner (HTTP
    resolver) and a scene's admin (a ``scene_admin`` row of the database) subscribe with a
    signed fetch, a stranger is refused ``forbidden_scope``, and a lookup the resolver
    cannot answer is refused ``resolver_unavailable`` (fail closed)."""
    from aiohttp import web

    from dclcomms.gatekeeper.storage import Store
    from tests.helpers.common import start_app

    world_owner = Identity.generate(seed=61)
    admin = Identity.generate(seed=62)
    stranger = Identity.generate(seed=63)
    data = tmp_path / "data"
    store = Store.open(None, data_dir=str(data))
    try:
        store.add_scene_admin("bafyscene1", admin.address.lower(), added_by="test")
    finally:
        store.close()

    async def body() -> None:
        app = web.Application()
        asked: list[str] = []

        async def world_perms(r: web.Request) -> web.Response:
            asked.append(r.match_info["name"])
            return web.json_response({"owner": world_owner.address.lower(), "permissions": {}})

        app.router.add_get("/worlds/world/{name}/permissions", world_perms)
        runner, port = await start_app(app)
        bridge, bridge_port = await serve_bridge(
            nats_server.url,
            data,
            env={"WORLDS_CONTENT_SERVER_URL": f"http://127.0.0.1:{port}/worlds"},
        )
        url = f"ws://127.0.0.1:{bridge_port}/bridge"
        try:
            async with BridgeClient(url, identity=world_owner) as s:
                sub = await s.subscribe("scene", "party.dcl.eth:bafyw1")
                assert sub.room == "party.dcl.eth-bafyw1"
                await refused(s.subscribe("scene", SCENE), "forbidden_scope")
            assert asked == ["party.dcl.eth"]  # the HTTP resolver answered
            async with BridgeClient(url, identity=admin) as s:
                await s.subscribe("scene", SCENE)  # the scene_admin row (place = scene id)
                await refused(s.subscribe("scene", "party.dcl.eth:bafyw1"), "forbidden_scope")
            async with BridgeClient(url, identity=stranger) as s:
                await refused(s.subscribe("scene", SCENE), "forbidden_scope")
                await refused(s.subscribe("scene", "party.dcl.eth:bafyw1"), "forbidden_scope")
            await runner.cleanup()  # the worlds server goes away: fail closed
            async with BridgeClient(url, identity=world_owner) as s:
                await refused(s.subscribe("scene", "other.dcl.eth:bafyw2"), "resolver_unavailable")
        finally:
            code = await stop(bridge)
            await runner.cleanup()
        assert code == 0

    asyncio.run(asyncio.wait_for(body(), 120))
