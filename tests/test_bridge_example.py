"""examples/scene_state_server.py against an embedded realm: players in the scene toggle the
shared door and score; every player sees each new state arrive from the server's identity."""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

from dclcomms import codec
from dclcomms.bridge import MemoryKeyStore
from dclcomms.config import RealmConfig
from dclcomms.realm import Realm
from tests.helpers.realm_client import RoomClient, Wallet, scene_room_string

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "scene_state_server.py"
SCENE = "main:bafydoor"


def load_example() -> Any:
    spec = importlib.util.spec_from_file_location("scene_state_server", EXAMPLE)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["scene_state_server"] = mod
    spec.loader.exec_module(mod)
    return mod


def request(op: dict[str, Any]) -> bytes:
    data = base64.b64encode(json.dumps(op).encode()).decode()
    return codec.encode(codec.RFC4_PACKET, {"scene": {"sceneId": "bafydoor", "data": data}})


async def state_from(c: RoomClient, alias: int) -> dict[str, Any]:
    got = await c.expect("peerUpdateMessage", timeout=10, fromAlias=alias)
    packet = codec.decode(codec.RFC4_PACKET, base64.b64decode(got["peerUpdateMessage"]["body"]))
    return json.loads(base64.b64decode(packet["scene"]["data"]))  # type: ignore[no-any-return]


def test_scene_state_server_example() -> None:
    example = load_example()

    async def body() -> None:
        keys = MemoryKeyStore()
        key, _ = keys.create("door", [f"scene:{SCENE}"])
        cfg = RealmConfig(
            host="127.0.0.1", port=0, log_format="text", log_level="WARNING", bridge=True
        )
        realm = await Realm(cfg, bridge_keys=keys).start()
        try:
            alice, bob = RoomClient(Wallet(1)), RoomClient(Wallet(2))
            # the scene's room: the gatekeeper's built-in /scene-rooms/ (no LiveKit)
            await alice.join(scene_room_string(realm, SCENE, alice.wallet))
            await bob.join(scene_room_string(realm, SCENE, bob.wallet))
            ready = asyncio.Event()
            server = asyncio.create_task(
                example.run(f"ws://127.0.0.1:{realm.port}/bridge", key, SCENE, ready=ready)
            )
            await asyncio.wait_for(ready.wait(), 10)
            aliases = {}
            for c in (alice, bob):
                join = await c.expect("peerJoinMessage", timeout=10, address="server:door")
                aliases[c] = join["peerJoinMessage"]["alias"]
                assert await state_from(c, aliases[c]) == {
                    "door": "closed",
                    "scores": {},
                    "version": 0,
                }
            await alice.send(
                {"peerUpdateMessage": {"fromAlias": 0, "body": request({"op": "toggle_door"})}}
            )
            for c in (alice, bob):
                assert (await state_from(c, aliases[c]))["door"] == "open"
            await bob.send(
                {
                    "peerUpdateMessage": {
                        "fromAlias": 0,
                        "body": request({"op": "score", "points": 3}),
                    }
                }
            )
            await bob.send(
                {
                    "peerUpdateMessage": {
                        "fromAlias": 0,
                        "body": request({"op": "score", "points": 1000}),
                    }
                }
            )  # ignored
            await alice.send(
                {"peerUpdateMessage": {"fromAlias": 0, "body": request({"op": "toggle_door"})}}
            )
            for c in (alice, bob):
                s1, s2 = await state_from(c, aliases[c]), await state_from(c, aliases[c])
                assert s1 == {"door": "open", "scores": {bob.wallet.address: 3}, "version": 2}
                assert s2 == {"door": "closed", "scores": {bob.wallet.address: 3}, "version": 3}
            server.cancel()
            await asyncio.gather(server, return_exceptions=True)
            await alice.close()
            await bob.close()
        finally:
            await realm.stop()

    asyncio.run(asyncio.wait_for(body(), 60))
