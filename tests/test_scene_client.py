"""Client half of scene rooms (ADR-204): signed fetch over aiohttp, the gatekeeper
client's error mapping, the scene grid and the director's scene-room swaps.

The gatekeeper here is a small aiohttp app of the test that verifies every request
with the real SignedFetchVerifier (replay cache on) and hands out ``ws-room:``
strings with a room JWT for a real dclcomms rooms server (separate from the realm,
whose rooms carry the islands). End-to-end runs against dclcomms' own gatekeeper
live in tests/test_scene_bots.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from dclcomms.auth import Identity, SignedFetchVerifier, jwt_encode, signed_fetch_status
from dclcomms.client import (
    CommunicationsDirector,
    GatekeeperClient,
    Message,
    SceneChanged,
    SceneGrid,
    SceneRequest,
    SignedFetcher,
    parcel_of,
    signed_fetch,
)
from dclcomms.errors import ConfigError, TransportError
from dclcomms.ws import Server, ServerConfig
from tests.helpers.common import free_port, start_app
from tests.helpers.ws_wire import run_async

SEED = 12_204
SECRET = "scene-room-secret-for-tests-0123456789"


# --- signed fetch -------------------------------------------------------------


@dataclass
class Echo:
    """An app verifying signed fetches (real verifier, replay cache on)."""

    verifier: SignedFetchVerifier = field(default_factory=SignedFetchVerifier)
    prefix: str = ""
    seen: list[dict[str, Any]] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        result = self.verifier.verify(
            request.method, self.prefix + request.path, request.headers, body=body
        )
        if not result.ok:
            status = signed_fetch_status(result.code)
            return web.json_response({"error": result.message, "code": result.code}, status=status)
        meta = json.loads(request.headers["x-identity-metadata"])
        self.seen.append(meta)
        return web.json_response({"signer": result.signer, "metadata": meta})


@run_async
async def test_signed_fetch_requests_in_a_burst_all_verify() -> None:
    """Identical requests signed in the same millisecond would share a (deterministic)
    signature and be refused as replays; the fetcher's timestamps never repeat."""
    echo = Echo()
    runner, port = await start_app(echo.app())
    alice = Identity.generate(SEED)
    fetcher = SignedFetcher(alice)
    try:
        async with aiohttp.ClientSession() as s:
            url = f"http://127.0.0.1:{port}/get-scene-adapter?x=1"
            meta = {"realmName": "main", "sceneId": "s1"}
            answers = await asyncio.gather(
                *(signed_fetch(s, fetcher, "POST", url, metadata=meta) for _ in range(20))
            )
            assert [a[0] for a in answers] == [200] * 20, answers
            assert {a[1]["signer"] for a in answers} == {alice.address.lower()}
            assert answers[0][1]["metadata"] == meta
            # The verifier's replay cache does refuse a request sent twice.
            headers = fetcher.headers("POST", url, metadata=meta)
            statuses = []
            for _ in range(2):
                async with s.post(url, headers=headers) as r:
                    statuses.append((r.status, (await r.json()).get("code")))
            assert statuses == [(200, None), (401, "replayed")]
    finally:
        await runner.cleanup()


@run_async
async def test_signed_fetch_signs_the_path_and_binds_the_body() -> None:
    echo = Echo(prefix="/gk")  # a proxy strips /gk before the service sees the request
    runner, port = await start_app(echo.app())
    alice = Identity.generate(SEED + 1)
    try:
        async with aiohttp.ClientSession() as s:
            # The signed path is the one the client saw: through the proxy, /gk/...
            status, body = await signed_fetch(
                s, alice, "POST", f"http://127.0.0.1:{port}/scene-bans", metadata={}
            )
            assert status == 401 and body["code"] == "final_authority_mismatch", body
            echo.prefix = ""
            payload = b'{"banned_address":"0x0000000000000000000000000000000000000001"}'
            status, body = await signed_fetch(
                s,
                alice,
                "POST",
                f"http://127.0.0.1:{port}/scene-bans",
                metadata={"sceneId": "s1"},
                body=payload,
                bind_body=True,
            )
            assert status == 200, body
            assert body["metadata"]["bodySha256"] == hashlib.sha256(payload).hexdigest()
            # A different body under the same signed metadata is refused.
            fetcher = SignedFetcher(alice)
            headers = fetcher.headers(
                "POST", "/scene-bans", metadata={}, body=payload, bind_body=True
            )
            async with s.post(
                f"http://127.0.0.1:{port}/scene-bans", headers=headers, data=b"{}"
            ) as r:
                assert r.status == 401
                assert (await r.json())["code"] == "signed_fetch_body_mismatch"
    finally:
        await runner.cleanup()


def test_fetcher_timestamps_strictly_increase() -> None:
    fetcher = SignedFetcher(Identity.generate(SEED))
    now = 1_748_779_200_000
    assert [fetcher.timestamp(now) for _ in range(3)] == [now, now + 1, now + 2]
    assert fetcher.timestamp(now + 10) == now + 10
    h = fetcher.headers("get", "http://h/a/b?q=1#f", metadata={"k": "v"}, now_ms=now + 10)
    assert h["x-identity-timestamp"] == str(now + 11)
    assert json.loads(h["x-identity-auth-chain-2"])["payload"].startswith(
        f'get:/a/b:{now + 11}:{{"k":"v"}}'
    )


# --- the gatekeeper client ----------------------------------------------------


@run_async
async def test_gatekeeper_client_maps_every_refusal_to_a_code() -> None:
    answers: list[tuple[int, Any]] = []

    async def handle(request: web.Request) -> web.Response:
        status, body = answers.pop(0)
        if isinstance(body, str):
            return web.Response(status=status, text=body)
        return web.json_response(body, status=status)

    app = web.Application()
    app.router.add_post("/get-scene-adapter", handle)
    runner, port = await start_app(app)
    client = GatekeeperClient(f"http://127.0.0.1:{port}/", Identity.generate(SEED))
    request = SceneRequest("main", "scene-0-0", (1, 2))
    assert request.metadata() == {"realmName": "main", "sceneId": "scene-0-0", "parcel": "1,2"}
    cases = [
        (400, {"error": "Access denied, invalid scene id"}, "scene_rejected"),
        (401, {"error": "Access denied, deny-listed wallet"}, "scene_denied"),
        (403, {"error": "User is banned from this scene"}, "scene_banned"),
        (404, {"error": "Not found"}, "scene_rejected"),
        (503, {"error": "places API down"}, "gatekeeper_unavailable"),
        (500, "oops", "gatekeeper_failed"),
        (200, {"no": "adapter"}, "gatekeeper_failed"),
    ]
    try:
        for status, body, code in cases:
            answers.append((status, body))
            with pytest.raises(TransportError) as e:
                await client.scene_adapter(request)
            assert e.value.code == code and e.value.status == status, (status, e.value)
            if isinstance(body, dict) and "error" in body:
                assert body["error"] in str(e.value)
        answers.append((200, {"adapter": "ws-room:ws://h/rooms/main:scene-0-0"}))
        assert await client.scene_adapter(request) == "ws-room:ws://h/rooms/main:scene-0-0"
        assert client.requests == len(cases) + 1
    finally:
        await client.close()
        await runner.cleanup()
    # Nobody listening: unavailable, no status.
    client = GatekeeperClient(f"http://127.0.0.1:{free_port()}", Identity.generate(SEED))
    try:
        with pytest.raises(TransportError) as e:
            await client.scene_adapter(request)
        assert e.value.code == "gatekeeper_unavailable" and e.value.status is None
    finally:
        await client.close()


# --- scene grid ---------------------------------------------------------------


def test_scene_grid_maps_parcels_to_scenes() -> None:
    grid = SceneGrid.square(16, block=2)
    assert (grid.columns, grid.rows, grid.count) == (4, 4, 16)
    assert (SceneGrid.square(12).columns, SceneGrid.square(12).rows) == (4, 3)
    assert (SceneGrid.square(7).columns, SceneGrid.square(7).rows) == (7, 1)
    assert grid.scene_at((0, 0)) == grid.scene_at((1, 1)) == "scene-0-0"
    assert grid((2, 0)) == "scene-1-0" and grid((7, 7)) == "scene-3-3"
    assert grid((8, 0)) is None and grid((-1, 0)) is None and grid((0, 8)) is None
    assert len(set(grid.scene_ids())) == 16
    b = grid.bounds()
    assert (b.x_min, b.x_max, b.z_min, b.z_max) == (0.0, 128.0, 0.0, 128.0)
    assert parcel_of(0.0, 0.0) == (0, 0) and parcel_of(15.99, 16.0) == (0, 1)
    assert parcel_of(-0.01, -16.0) == (-1, -1)
    shifted = SceneGrid(2, 2, block=3, origin=(-3, -3))
    assert shifted((-3, -3)) == "scene-0-0" and shifted((0, 2)) == "scene-1-1"
    with pytest.raises(ConfigError):
        SceneGrid(0, 1)
    with pytest.raises(ConfigError):
        SceneGrid(1, 1, block=0)
    with pytest.raises(ConfigError):
        SceneGrid.square(0)


# --- the director's scene room ------------------------------------------------


@dataclass
class StandIn:
    """A gatekeeper stand-in: verifies the signed fetch, names the room like the spec
    (``realmName:sceneId``) and mints the room JWT for a real rooms server."""

    rooms_port: int
    banned: set[tuple[str, str]] = field(default_factory=set)
    verifier: SignedFetchVerifier = field(default_factory=SignedFetchVerifier)
    calls: list[dict[str, Any]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        result = self.verifier.verify(request.method, request.path, request.headers)
        if not result.ok:
            return web.json_response({"error": result.message}, status=401)
        meta = json.loads(request.headers["x-identity-metadata"])
        self.calls.append({"signer": result.signer, **meta})
        if not meta.get("realmName"):
            return web.json_response({"error": "Access denied, invalid metadata"}, status=401)
        if not meta.get("sceneId"):
            return web.json_response({"error": "Access denied, invalid scene"}, status=400)
        if (str(result.signer), meta["sceneId"]) in self.banned:
            return web.json_response({"error": "User is banned from this scene"}, status=403)
        room = f"{meta['realmName']}:{meta['sceneId']}"
        now = int(time.time())
        claims = {"sub": result.signer, "room": room, "iat": now, "exp": now + 300}
        token = jwt_encode(claims, SECRET)
        adapter = f"ws-room:ws://127.0.0.1:{self.rooms_port}/rooms/{room}?access_token={token}"
        return web.json_response({"adapter": adapter})


@asynccontextmanager
async def scene_world() -> AsyncIterator[tuple[str, str, StandIn]]:
    """A realm (islands) + a rooms server (scene rooms) + the gatekeeper stand-in."""
    from dclcomms.config import RealmConfig
    from dclcomms.realm import Realm

    rooms = Server(ServerConfig(connector=False, ws_room_secret=SECRET, ws_room_require_token=True))
    rooms.start()
    stand_in = StandIn(rooms.port)
    app = web.Application()
    app.router.add_post("/get-scene-adapter", stand_in.handle)
    runner, port = await start_app(app)
    config = RealmConfig(
        host="127.0.0.1", port=0, flush_interval_s=0.2, log_format="text", log_level="WARNING"
    )
    try:
        async with Realm(config) as realm:
            yield realm.url, f"http://127.0.0.1:{port}", stand_in
    finally:
        await runner.cleanup()
        rooms.stop()


async def wait_for(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


class Walker:
    """A director whose player stands where the test puts it."""

    def __init__(self, realm: str, gatekeeper: str, seed: int, grid: SceneGrid) -> None:
        self.xyz = (8.0, 0.0, 8.0)
        self.identity = Identity.generate(seed)
        self.director = CommunicationsDirector(
            realm,
            self.identity,
            position=lambda: self.xyz,
            heartbeat_interval_s=0.05,
            scenes=grid,
            gatekeeper_url=gatekeeper,
        )
        self.scene_messages: list[Message] = []
        self.changes: list[SceneChanged] = []
        self.errors: list[Exception] = []
        self.director.on("scene_message", self.scene_messages.append)
        self.director.on("scene_changed", self.changes.append)
        self.director.on("error", self.errors.append)

    def at_parcel(self, px: int, pz: int) -> None:
        self.xyz = (px * 16.0 + 8.0, 0.0, pz * 16.0 + 8.0)


@run_async
async def test_director_swaps_the_scene_room_when_the_player_crosses() -> None:
    grid = SceneGrid(2, 1, block=1)
    async with scene_world() as (realm, gatekeeper, stand_in):
        a = Walker(realm, gatekeeper, SEED + 10, grid)
        b = Walker(realm, gatekeeper, SEED + 11, grid)
        async with a.director, b.director:
            d_a, d_b = a.director, b.director
            await wait_for(lambda: d_a.scene_room is not None and d_b.scene_room is not None)
            assert d_a.realm_name and d_a.scene_room == f"{d_a.realm_name}:scene-0-0"
            assert d_b.scene_room == d_a.scene_room and d_b.scene_id == "scene-0-0"
            assert stand_in.calls[0]["parcel"] == "0,0"
            assert stand_in.calls[0]["signer"] in {
                a.identity.address.lower(),
                b.identity.address.lower(),
            }
            # Same scene: a's scene packets reach b (not through the island).
            await wait_for(lambda: d_b.scene_adapter is not None and d_b.scene_adapter.connected)
            await asyncio.sleep(0.2)  # b's join reached a's room view
            assert await d_a.send_scene(b"hello scene 0", reliable=True)
            await wait_for(lambda: len(b.scene_messages) == 1)
            assert b.scene_messages[0] == Message(a.identity.address.lower(), b"hello scene 0")
            # b crosses into scene-1-0: leaves the old room, joins the new one.
            b.at_parcel(1, 0)
            await wait_for(lambda: d_b.scene_id == "scene-1-0" and d_b.scene_room is not None)
            assert d_b.scene_room == f"{d_b.realm_name}:scene-1-0"
            assert (d_b.scene_joins, d_b.scene_swaps) == (2, 1)
            assert b.changes[-1].from_scene_id == "scene-0-0"
            assert b.changes[-1].parcel == (1, 0)
            assert stand_in.calls[-1]["parcel"] == "1,0"
            await asyncio.sleep(0.2)
            assert await d_a.send_scene(b"only scene 0", reliable=True)
            await asyncio.sleep(0.3)
            assert len(b.scene_messages) == 1  # a's room is no longer b's
            # Walking out of every scene: no scene room at all.
            b.at_parcel(5, 5)
            await wait_for(lambda: d_b.scene_id is None and d_b.scene_adapter is None)
            assert b.changes[-1].scene_id is None and b.changes[-1].conn_str is None
            assert not await d_b.send_scene(b"nowhere", reliable=False)
            # Back in scene-0-0: a hears b again.
            b.at_parcel(0, 0)
            await wait_for(lambda: d_b.scene_room == d_a.scene_room)
            await asyncio.sleep(0.2)
            before = len(a.scene_messages)
            assert await d_b.send_scene(b"back", reliable=True)
            await wait_for(lambda: len(a.scene_messages) == before + 1)
            assert a.errors == [] and b.errors == []
            assert d_b.protocol_errors == 0 and d_a.scene_swaps == 0
            # The island transport is untouched by scene swaps.
            assert d_a.adapter is not None and d_a.adapter.connected


@run_async
async def test_director_reports_a_refused_scene_and_moves_on() -> None:
    grid = SceneGrid(2, 1, block=1)
    async with scene_world() as (realm, gatekeeper, stand_in):
        a = Walker(realm, gatekeeper, SEED + 20, grid)
        stand_in.banned.add((a.identity.address.lower(), "scene-1-0"))
        a.at_parcel(1, 0)
        async with a.director as d:
            await wait_for(lambda: any(getattr(e, "code", "") == "scene_banned" for e in a.errors))
            assert d.scene_id == "scene-1-0" and d.scene_adapter is None
            assert d.scene_failures == 1 and d.scene_joins == 0
            err = a.errors[0]
            assert isinstance(err, TransportError) and err.status == 403
            assert "banned from this scene" in str(err)
            calls = len(stand_in.calls)
            await asyncio.sleep(0.5)  # standing still: no request storm (retry after 2 s)
            assert len(stand_in.calls) == calls
            a.at_parcel(0, 0)
            await wait_for(lambda: d.scene_room is not None)
            assert d.scene_id == "scene-0-0" and d.scene_joins == 1


@run_async
async def test_bots_walk_a_scene_grid_and_talk_only_within_their_scene() -> None:
    from dclcomms.bots import run_bots

    async with scene_world() as (realm, gatekeeper, stand_in):
        summary = await run_bots(
            realm,
            12,
            seconds=5.0,
            seed=3,
            position_interval_s=0.25,
            chat_interval_s=1.0,
            scenes=4,
            scene_block=1,
            gatekeeper_url=gatekeeper,
        )
    assert summary["protocol_errors"] == 0, summary
    scenes = summary["scenes"]
    assert scenes["grid"] == "2x2" and summary["mobility"] == "scene-grid"
    assert scenes["joins"] >= 12 and scenes["swaps"] > 0, scenes
    assert scenes["kicks"] == 0 and scenes["failures"] == 0
    assert scenes["packets_sent"] > 0 and scenes["packets_received"] > 0
    assert 1 <= scenes["rooms"] <= 4
    assert {c["sceneId"] for c in stand_in.calls} <= set(SceneGrid.square(4, block=1).scene_ids())


def test_a_kept_alive_connection_closed_as_idle_is_retried_signed_afresh() -> None:
    """The server's keep-alive timeout races the client's pool: the server closes an idle
    connection just as the next request goes out on it. That request was never read, so
    the client sends it again on a new connection, with a new signature (the replay cache
    would refuse the old one)."""
    answer = json.dumps({"adapter": "ws-room:ws://127.0.0.1/scene-rooms/x?access_token=t"})
    response = (
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(answer)}\r\nConnection: keep-alive\r\n\r\n{answer}"
    ).encode()
    signatures: list[str] = []
    connections = 0

    async def read_request(reader: asyncio.StreamReader) -> bool:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        hdrs = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
        await reader.readexactly(int(hdrs.get("content-length", "0")))
        signatures.append(hdrs["x-identity-auth-chain-2"])
        return True

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        try:
            await read_request(reader)
            writer.write(response)  # the first request on each connection is answered
            await writer.drain()
            await read_request(reader)  # the next one finds the connection closing
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    async def body() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = GatekeeperClient(f"http://127.0.0.1:{port}", Identity.generate(SEED + 40))
        try:
            req = SceneRequest("dclcomms", "scene-a")
            first = await client.scene_adapter(req)
            second = await client.scene_adapter(req)  # reuses, is closed, retried
            assert first == second == json.loads(answer)["adapter"]
        finally:
            await client.close()
            server.close()
            await server.wait_closed()
        assert connections == 2
        assert len(signatures) == 3 and len(set(signatures)) == 3

    asyncio.run(asyncio.wait_for(body(), 60))


def test_a_gatekeeper_that_closes_without_answering_is_unavailable_after_one_retry() -> None:
    """Only the one retry: a server that closes every connection unanswered gives
    ``gatekeeper_unavailable`` after two requests, not a loop."""
    requests = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal requests
        try:
            await reader.readuntil(b"\r\n\r\n")
            requests += 1
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    async def body() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = GatekeeperClient(f"http://127.0.0.1:{port}", Identity.generate(SEED + 41))
        try:
            with pytest.raises(TransportError) as err:
                await client.scene_adapter(SceneRequest("dclcomms", "scene-a"))
            assert err.value.code == "gatekeeper_unavailable"
            assert getattr(err.value, "status", None) is None
            assert "ServerDisconnectedError" in str(err.value)
        finally:
            await client.close()
            server.close()
            await server.wait_closed()
        assert requests == 2

    asyncio.run(asyncio.wait_for(body(), 60))
