"""Scene rooms end to end on one embedded realm (ADR-204): ``dclcomms realm`` serves the
islands, the gatekeeper and the built-in scene rooms on one port; bots and directors
join, swap and get kicked from scene rooms through it.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from dclcomms.auth import Identity
from dclcomms.client import (
    CommunicationsDirector,
    GatekeeperClient,
    Message,
    SceneGrid,
    SceneKicked,
    SceneRequest,
)
from dclcomms.errors import TransportError
from tests.helpers.common import realm_cli
from tests.helpers.ws_wire import run_async

SEED = 4_204
AUTH_TOKEN = "scene-bots-moderator-token"


@contextmanager
def realm_process(*extra: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """``python -m dclcomms realm`` on a free port (gatekeeper mounted by default,
    its SQLite file in a fresh data directory); yields its URL."""
    with (
        tempfile.TemporaryDirectory(prefix="dclcomms-scene-bots-") as data_dir,
        realm_cli("--flush-interval", "0.2", "--data-dir", data_dir, *extra, env=env) as url,
    ):
        yield url


@pytest.mark.slow
def test_hundred_bots_walk_a_4x4_grid_of_scene_rooms() -> None:
    """100 bots on a 4 x 4 grid of 2 x 2-parcel scenes: every bot holds the room of the
    scene it stands in, swaps it as it crosses, with 0 protocol errors; every scene
    packet (tagged with the sender's room's scene) arrives in a room of that scene."""
    with realm_process() as url:
        about = json.loads(urllib.request.urlopen(url + "/about", timeout=10).read())
        assert about["comms"].get("gatekeeperUrl"), about["comms"]
        bots = subprocess.run(
            [
                *(sys.executable, "-m", "dclcomms", "bots", "--realm", url, "--count", "100"),
                *("--scenes", "16", "--seconds", "20", "--seed", "5"),
                # Everyone ends in one island (the grid is 128 m wide): keep the island
                # traffic light so that the scene rooms' traffic is what is measured.
                *("--position-interval", "5", "--scene-interval", "0.5"),
            ],
            capture_output=True,
            text=True,
            timeout=240,
        )
    summary = json.loads(bots.stdout)
    assert bots.returncode == 0, (summary, bots.stderr[-2000:])
    assert summary["protocol_errors"] == 0 and summary["connected"] == 100, summary
    scenes = summary["scenes"]
    assert scenes["grid"] == "4x4" and scenes["block"] == 2
    assert scenes["joins"] >= 100 and scenes["swaps"] >= 50, scenes
    assert scenes["kicks"] == 0 and scenes["failures"] == 0 and scenes["losses"] == 0
    assert scenes["rooms"] >= 8, scenes  # bots spread over the grid
    assert scenes["in_room"] >= 80, scenes  # (some may be mid-swap at the end)
    assert scenes["packets_sent"] > 1000 and scenes["packets_received"] > 1000, scenes
    assert summary["messages_received"] > 0  # the islands carry on beside the scene rooms


async def _wait_for(cond: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


def _post(url: str, body: dict[str, Any], token: str) -> int:
    req = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return int(r.status)


def test_platform_ban_kicks_from_the_scene_room_with_4005() -> None:
    """A platform ban (moderator route) kicks the player from its scene room
    (peer_kicked + 4005, reported as ``scene_kicked``) within 1 s; the other member
    stays, and the banned address is refused (403) when it asks again."""
    grid = SceneGrid(2, 1, block=1)

    @run_async
    async def body(url: str) -> None:
        where = {"a": (8.0, 0.0, 8.0), "b": (8.0, 0.0, 8.0)}
        a_id, b_id = Identity.generate(SEED), Identity.generate(SEED + 1)
        kicks: list[SceneKicked] = []
        errors: list[Exception] = []
        heard: list[Message] = []

        def director(name: str, ident: Identity) -> CommunicationsDirector:
            return CommunicationsDirector(
                url, ident, position=lambda: where[name], heartbeat_interval_s=0.1, scenes=grid
            )

        async with director("a", a_id) as a, director("b", b_id) as b:
            b.on("scene_kicked", kicks.append)
            b.on("error", errors.append)
            a.on("scene_message", heard.append)
            await _wait_for(lambda: a.scene_adapter is not None and b.scene_adapter is not None)
            assert a.scene_room == b.scene_room and a.scene_room is not None
            assert a.scene_room.endswith(":scene-0-0")
            await asyncio.sleep(0.3)
            assert await b.send_scene(b"before the ban", reliable=True)
            await _wait_for(lambda: len(heard) == 1)

            t0 = time.monotonic()
            status = await asyncio.to_thread(
                _post, f"{url}/users/{b_id.address.lower()}/bans", {"reason": "test"}, AUTH_TOKEN
            )
            assert status in (200, 201, 204)
            await _wait_for(lambda: bool(kicks), timeout=5)
            assert time.monotonic() - t0 < 1.0 + 0.5  # 1 s, plus this loop's polling
            assert kicks[0].scene_id == "scene-0-0" and kicks[0].close_code == 4005
            assert b.scene_kicks == 1 and b.scene_adapter is None
            assert a.scene_adapter is not None and a.scene_adapter.connected  # a stays

            # The platform ban also closed b's connector session; asking again for any
            # scene room is refused.
            client = GatekeeperClient(url, b_id)
            try:
                with pytest.raises(TransportError) as e:
                    await client.scene_adapter(SceneRequest(a.realm_name or "", "scene-1-0"))
                assert e.value.code == "scene_banned" and e.value.status == 403
            finally:
                await client.close()
            assert b.scene_adapter is None and b.scene_joins == 1
            assert not [e for e in errors if getattr(e, "code", "") == "protocol_error"]

    with realm_process(env={"COMMS_GATEKEEPER_AUTH_TOKEN": AUTH_TOKEN}) as url:
        body(url)
