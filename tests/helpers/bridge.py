"""The bridge's processes for tests: ``dclcomms bridge keys`` and servers started on a
free port (``dclcomms bridge serve``, ``dclcomms rooms``), stopped by the test; what the
bridge tests share (chats, refusals, gatekeeper scene-room members, bridge sessions)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import pytest

from dclcomms import codec
from dclcomms.auth import Identity
from dclcomms.bridge import BridgeClient
from dclcomms.errors import BridgeError
from tests.helpers.common import free_port
from tests.helpers.realm_client import RoomClient, Wallet


def cli(*args: str, data_dir: Path) -> Any:
    out = subprocess.run(
        [sys.executable, "-m", "dclcomms", "bridge", *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


async def start(
    *args: str, expect: str, env: dict[str, str] | None = None
) -> tuple[asyncio.subprocess.Process, int]:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "dclcomms",
        *args,
        "--port",
        str(port),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=dict(os.environ, PYTHONUNBUFFERED="1", **(env or {})),
    )
    assert proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert expect in line.decode(), line
    except BaseException:
        proc.kill()
        await proc.wait()
        raise
    return proc, port


async def stop(proc: asyncio.subprocess.Process) -> int:
    if proc.returncode is None:
        proc.terminate()
    try:
        return await asyncio.wait_for(proc.wait(), 20)
    except TimeoutError:
        proc.kill()
        return await proc.wait()


async def serve_bridge(
    nats_url: str, data_dir: Path, *args: str, env: dict[str, str] | None = None
) -> tuple[asyncio.subprocess.Process, int]:
    """``dclcomms bridge serve`` on NATS with its keys under ``data_dir``."""
    return await start(
        "bridge", "serve", "--nats", nats_url, "--data-dir", str(data_dir), *args,
        expect="dclcomms bridge: listening on", env=env,
    )  # fmt: skip


def chat(text: str) -> bytes:
    """An RFC-4 chat packet."""
    return codec.encode(codec.RFC4_PACKET, {"chat": {"message": text, "timestamp": 1.0}})


async def refused(coro: Awaitable[Any], code: str) -> BridgeError:
    """Awaits ``coro``, which must raise the BridgeError ``code``."""
    with pytest.raises(BridgeError) as e:
        await coro
    assert e.value.code == code, e.value
    return e.value


def dead_keys(data_dir: Path, scope: str) -> tuple[str, str]:
    """Creates an expired key (``old``) and a revoked one (``gone``) for ``scope`` with
    ``dclcomms bridge keys``: their secrets, for :func:`bad_credentials_refused`."""
    expired = cli(
        "keys", "create", "--name", "old", "--scope", scope, "--ttl", "0.001", data_dir=data_dir
    )
    revoked = cli("keys", "create", "--name", "gone", "--scope", scope, data_dir=data_dir)
    assert cli("keys", "revoke", revoked["id"], data_dir=data_dir)["status"] == "revoked"
    return expired["key"], revoked["key"]


async def bad_credentials_refused(url: str, expired_key: str, revoked_key: str) -> None:
    """The bridge at ``url`` refuses an expired key, a revoked key and a signed fetch whose
    metadata was changed after signing."""
    await refused(BridgeClient(url, key=expired_key).connect(), "key_expired")
    await refused(BridgeClient(url, key=revoked_key).connect(), "key_revoked")
    forged = BridgeClient(url, identity=Identity.generate(seed=5))
    real = forged._auth_frame

    def tampered() -> dict[str, Any]:
        frame = real()
        h = frame["signedFetch"]
        h["x-identity-metadata"] = h.get("x-identity-metadata", "{}")[:-1] + ',"x":1}'
        return frame  # the signed payload no longer matches

    forged._auth_frame = tampered  # type: ignore[method-assign]
    await refused(forged.connect(), "invalid_signed_fetch")


async def gatekeeper_scene_member(port: int, seed: int, scene_id: str) -> RoomClient:
    """A member of scene ``main:<scene_id>``'s room as an explorer gets there: a signed
    ``POST /get-scene-adapter`` to the realm's gatekeeper on ``port``, then the ``ws-room:``
    adapter to ``/scene-rooms/``."""
    import aiohttp

    c = RoomClient(Wallet(seed))
    me = Identity.from_private_key(bytes(c.wallet.owner.key))
    path = "/get-scene-adapter"
    meta = {"realmName": "main", "sceneId": scene_id, "parcel": "0,0"}
    headers = me.sign_fetch_headers("POST", path, metadata=meta)
    async with (
        aiohttp.ClientSession() as h,
        h.post(f"http://127.0.0.1:{port}{path}", headers=headers) as resp,
    ):
        doc = await resp.json()
    assert resp.status == 200, doc
    assert f"/scene-rooms/main:{scene_id}?" in doc["adapter"], doc
    await c.join(doc["adapter"])
    return c


async def first_read(
    sub: Any, sender: RoomClient, tag: str, noise: RoomClient | None = None
) -> Any:
    """Chats ``<tag><i>`` from ``sender`` (after one from ``noise``, a member of a room
    ``sub`` must not read) until the bridge subscription ``sub`` reads a message: a tap
    reaches the room once the bridge's lease does. Fails when none arrives in 50 tries."""
    for i in range(50):
        if noise is not None:
            await noise.send({"peerUpdateMessage": {"fromAlias": 0, "body": chat(f"noise{i}")}})
        await sender.send({"peerUpdateMessage": {"fromAlias": 0, "body": chat(f"{tag}{i}")}})
        try:
            return await sub.get(timeout=0.2)
        except TimeoutError:
            continue
    raise AssertionError(f"no message read by {sub!r}")


def only_from(sub: Any, *members: RoomClient) -> None:
    """Every message left in ``sub``'s queue was sent by one of ``members``."""
    senders = {c.wallet.address for c in members}
    while not sub.queue.empty():
        m = sub.queue.get_nowait()
        assert m is not None and m.sender in senders, m
