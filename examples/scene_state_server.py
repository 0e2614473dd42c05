"""Example scene state server: a shared door and a scoreboard, over the realm's /bridge.

Players in the scene send RFC-4 ``scene`` messages whose ``data`` is JSON::

    {"op": "toggle_door"}            open the door if closed, close it if open
    {"op": "score", "points": 3}     add points to the sender's score (1..100)

The server keeps the state and broadcasts it to everybody in the scene room after
every change, as a ``scene`` message from its own identity (players see it arrive
from ``server:<key name>``, never from a player)::

    {"door": "open", "scores": {"0xabc...": 3}, "version": 7}

Run it against a realm with the bridge on and a scene-scoped key::

    dclcomms bridge keys create --name door --scope scene:main:bafy...   # prints the key
    python examples/scene_state_server.py --url ws://127.0.0.1:5000/bridge \\
        --key dcb_... --scene main:bafy...

The test suite runs it against an embedded realm (tests/test_bridge_example.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from dclcomms.bridge import BridgeClient, BridgeMessage, Subscription

log = logging.getLogger("scene_state_server")


@dataclass
class SceneState:
    """The shared state: one door, one score per player."""

    door: str = "closed"
    scores: dict[str, int] = field(default_factory=dict)
    version: int = 0

    def apply(self, sender: str, op: dict[str, Any]) -> bool:
        """Applies one player's request; whether the state changed."""
        kind = op.get("op")
        if kind == "toggle_door":
            self.door = "open" if self.door == "closed" else "closed"
        elif kind == "score":
            points = op.get("points")
            if not isinstance(points, int) or isinstance(points, bool) or not 1 <= points <= 100:
                return False
            self.scores[sender] = self.scores.get(sender, 0) + points
        else:
            return False
        self.version += 1
        return True

    def to_json(self) -> bytes:
        body = {"door": self.door, "scores": self.scores, "version": self.version}
        return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


def scene_request(msg: BridgeMessage, scene_id: str) -> dict[str, Any] | None:
    """The JSON request inside a player's ``scene`` packet for our scene, else None."""
    packet = msg.packet or {}
    scene = packet.get("scene")
    if not isinstance(scene, dict) or scene.get("sceneId") != scene_id:
        return None
    import base64

    try:
        op = json.loads(base64.b64decode(scene.get("data", "")))
    except ValueError:
        return None
    return op if isinstance(op, dict) else None


async def broadcast(sub: Subscription, scene_id: str, state: SceneState) -> None:
    import base64

    data = base64.b64encode(state.to_json()).decode()
    await sub.send({"scene": {"sceneId": scene_id, "data": data}})


async def run(url: str, key: str, scene: str, *, ready: asyncio.Event | None = None) -> None:
    """Serves the scene ``<realm>:<sceneId>`` until cancelled."""
    scene_id = scene.rpartition(":")[2]
    state = SceneState()
    async with BridgeClient(url, key=key) as bridge:
        sub = await bridge.subscribe("scene", scene)
        log.info("serving %s as %s", scene, bridge.identity)
        await broadcast(sub, scene_id, state)  # players in the room see the initial state
        if ready is not None:
            ready.set()
        async for msg in sub:
            op = scene_request(msg, scene_id)
            if op is not None and state.apply(msg.sender, op):
                await broadcast(sub, scene_id, state)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True, help="ws://host:port/bridge")
    p.add_argument("--key", required=True, help="an API key with scope scene:<realm>:<sceneId>")
    p.add_argument("--scene", required=True, help="<realm>:<sceneId>")
    ns = p.parse_args()
    logging.basicConfig(level=logging.INFO)
    asyncio.run(run(ns.url, ns.key, ns.scene))


if __name__ == "__main__":
    main()
