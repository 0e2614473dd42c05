"""The realm end to end: real sockets on 127.0.0.1, real keys, real token verification.

Each test starts a realm in-process (``async with Realm(config)``) on a free port with
a 0.1 s flush interval and drives it with tests/helpers/realm_client.py. Wallet seeds are
fixed per test (the keys derive from them), so failures reproduce.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from livekit.api import TokenVerifier

from dclcomms.auth import jwt_decode
from dclcomms.config import RealmConfig
from dclcomms.policy import FixedTransport, IslandView, RealmPolicy, Transport
from dclcomms.pubsub import (
    InProcessPubSub,
    Message,
    PubSub,
    Subscription,
    decode_payload,
    encode_payload,
    subject_matches,
)
from dclcomms.realm import Realm
from tests.helpers.common import realm_config, run, start_app, stop_process
from tests.helpers.realm_client import ArchipelagoClient, Closed, RoomClient, eventually

LK_KEY, LK_SECRET = "devkey", "devsecret-0123456789-0123456789-abcdef"
LIVEKIT = {
    "livekit_host": "livekit.example.org",
    "livekit_api_key": LK_KEY,
    "livekit_api_secret": LK_SECRET,
}


def config(**kw: Any) -> RealmConfig:
    return realm_config(**kw)


def ws_base(realm: Realm) -> str:
    return f"ws://127.0.0.1:{realm.port}"


async def connected(realm: Realm, seed: int, **kw: Any) -> ArchipelagoClient:
    c = ArchipelagoClient(seed, **kw)
    await c.connect(ws_base(realm))
    assert await c.handshake() == c.address
    return c


def token_of(conn_str: str) -> str:
    return parse_qs(urlsplit(conn_str.split(":", 1)[1]).query)["access_token"][0]


async def http_get(realm: Realm, path: str, **kw: Any) -> tuple[int, Any, dict[str, str]]:
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"http://127.0.0.1:{realm.port}{path}", **kw) as r,
    ):
        body = await r.read()
        ctype = r.headers.get("Content-Type", "")
        value: Any = json.loads(body) if body and "json" in ctype else body.decode()
        return r.status, value, dict(r.headers)


def test_livekit_island_token_verifies_and_names_the_island() -> None:
    async def body() -> None:
        async with Realm(config(**LIVEKIT)) as realm:
            c = await connected(realm, 1)
            assert c.challenge["challengeToSign"].startswith("dcl-")
            assert len(c.challenge["challengeToSign"]) == 36
            await c.heartbeat(10.0, 1.5, 20.0)
            ic = await c.island()
            assert ic["islandId"] == "I1" and "fromIslandId" not in ic
            assert ic["peers"] == {c.address: {"x": 10.0, "y": 1.5, "z": 20.0}}
            assert ic["connStr"].startswith("livekit:wss://livekit.example.org?access_token=")
            claims = TokenVerifier(LK_KEY, LK_SECRET).verify(token_of(ic["connStr"]))
            assert claims.identity == c.address
            assert claims.video is not None and claims.video.room == "I1"
            assert claims.video.room_join and claims.video.can_publish_sources == ["microphone"]
            raw = jwt_decode(token_of(ic["connStr"]), LK_SECRET, issuer=LK_KEY)
            assert raw["exp"] - raw["nbf"] == 300 and abs(raw["nbf"] - time.time()) < 5
            with pytest.raises(Exception):  # noqa: B017 - any verification failure
                TokenVerifier(LK_KEY, "wrong-secret-wrong-secret-wrong-secret").verify(
                    token_of(ic["connStr"])
                )
            await c.close()

    run(body)


def test_islands_share_split_and_notify_members() -> None:
    async def body() -> None:
        async with Realm(config(**LIVEKIT)) as realm:
            a = await connected(realm, 11)
            await a.heartbeat(0.0, 0.0, 0.0)
            ia = await a.island()
            b = await connected(realm, 12)
            await b.heartbeat(30.0, 0.0, 0.0)
            ib = await b.island()
            assert ib["islandId"] == ia["islandId"]  # within 64 m: same island
            assert set(ib["peers"]) == {a.address, b.address}
            assert ib["peers"][a.address] == {"x": 0.0, "y": 0.0, "z": 0.0}
            joined = await a.expect("joinIsland")
            assert joined["joinIsland"] == {"islandId": ia["islandId"], "peerId": b.address}
            claims = TokenVerifier(LK_KEY, LK_SECRET).verify(token_of(ib["connStr"]))
            assert claims.identity == b.address and claims.video.room == ia["islandId"]

            # b walks 500 m away: it gets a new island, a is told b left
            await b.heartbeat(530.0, 0.0, 0.0)
            moved = await b.island(islandId=lambda_ne(ia["islandId"]))
            assert moved["fromIslandId"] == ia["islandId"]
            assert set(moved["peers"]) == {b.address}
            left = await a.expect("leftIsland")
            assert left["leftIsland"] == {"islandId": ia["islandId"], "peerId": b.address}
            for c in (a, b):
                await c.close()
            assert isinstance(realm.pubsub, InProcessPubSub) and realm.pubsub.handler_errors == 0

    run(body)


class lambda_ne:
    """Matches any value but one (expect() compares with ==)."""

    def __init__(self, value: object) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return other != self.value

    __hash__ = None  # type: ignore[assignment]


def test_disconnect_tells_the_rest_of_the_island() -> None:
    async def body() -> None:
        async with Realm(config()) as realm:
            a = await connected(realm, 21)
            b = await connected(realm, 22)
            await a.heartbeat(0.0, 0.0, 0.0)
            await b.heartbeat(5.0, 0.0, 5.0)
            ia = await a.island()
            ib = await b.island()
            assert ib["islandId"] == ia["islandId"]
            await b.close()
            left = await a.expect("leftIsland")
            assert left["leftIsland"]["peerId"] == b.address
            assert realm.stats is not None
            await eventually(lambda: b.address not in realm.stats.peers)
            await a.close()

    run(body)


def test_duplicate_session_is_kicked_and_the_new_one_gets_an_island() -> None:
    async def body() -> None:
        async with Realm(config()) as realm:
            old = await connected(realm, 31)
            await old.heartbeat(0.0, 0.0, 0.0)
            await old.island()
            new = ArchipelagoClient(31)
            await new.connect(ws_base(realm), "/ws")
            await new.handshake()
            assert new.challenge.get("alreadyConnected") is True
            kicked = await old.expect("kicked")
            assert kicked == {"kicked": {"reason": "KR_NEW_SESSION"}}  # `32 00`
            closed = await old.closed()
            assert closed.code == 4006
            await new.heartbeat(1.0, 0.0, 1.0)
            ic = await new.island()
            assert new.address in ic["peers"] and "fromIslandId" not in ic
            await new.close()

    run(body)


def test_rejections_get_their_close_codes_while_others_keep_working() -> None:
    async def body() -> None:
        async with Realm(config(connector_handshake_timeout_ms=1500)) as realm:
            good = await connected(realm, 41)
            await good.heartbeat(0.0, 0.0, 0.0)
            await good.island()
            base = ws_base(realm)

            expired = ArchipelagoClient(42, expires_in_ms=-60_000)
            await expired.connect(base)
            await expired.handshake(expect_welcome=False)  # well signed, but expired
            c = await expired.closed()
            assert (c.code, c.reason) == (4003, "auth failed: ephemeral_expired")

            forged = ArchipelagoClient(43)
            await forged.connect(base)
            await forged.handshake(forge=True)
            c = await forged.closed()
            assert c.code == 4003 and c.reason.startswith("auth failed: ")

            wrong_stage = ArchipelagoClient(44)
            await wrong_stage.connect(base)
            await wrong_stage.heartbeat(0.0, 0.0, 0.0)
            assert (await wrong_stage.closed()).code == 4000

            garbage = ArchipelagoClient(45)
            await garbage.connect(base)
            await garbage.send_raw(b"\xff\xff\xff\xff")
            c = await garbage.closed()
            assert (c.code, c.reason) == (1007, "Cannot decode ClientPacket")

            big = ArchipelagoClient(46)
            await big.connect(base)
            await big.send_raw(b"\x00" * 16385)
            assert (await big.closed()).code == 1009

            silent = ArchipelagoClient(47)
            await silent.connect(base)
            assert (await silent.closed()).code == 4001

            impostor = ArchipelagoClient(50)
            await impostor.connect(base)
            await impostor.handshake(claim=good.wallet.owner.address)  # signs with its own key
            c = await impostor.closed()
            assert (c.code, c.reason) == (4003, "auth failed: address_mismatch")

            bad_address = ArchipelagoClient(48)
            await bad_address.connect(base)
            await bad_address.send_client({"challengeRequest": {"address": "0x1234"}})
            assert (await bad_address.closed()).code == 4002

            # the good client is still served: a newcomer nearby joins its island
            other = await connected(realm, 49)
            await other.heartbeat(3.0, 0.0, 3.0)
            await other.island()
            joined = await good.expect("joinIsland")
            assert joined["joinIsland"]["peerId"] == other.address
            for cl in (
                good,
                expired,
                forged,
                wrong_stage,
                garbage,
                big,
                silent,
                bad_address,
                other,
            ):
                await cl.close()

    run(body)


def test_builtin_ws_rooms_work_end_to_end() -> None:
    """Without LiveKit, islands get this realm's RFC-5 rooms with a verified access token."""

    async def body() -> None:
        async with Realm(config(ws_room_secret="s" * 32, ws_room_require_token=True)) as realm:
            a = await connected(realm, 51)
            b = await connected(realm, 52)
            await a.heartbeat(0.0, 0.0, 0.0)
            await b.heartbeat(1.0, 0.0, 1.0)
            ia = await a.island()
            ib = await b.island()
            assert ia["islandId"] == ib["islandId"]  # converge: b joins a's island directly
            prefix = f"ws-room:ws://127.0.0.1:{realm.port}/rooms/{ib['islandId']}?access_token="
            assert ib["connStr"].startswith(prefix)
            claims = jwt_decode(token_of(ib["connStr"]), "s" * 32)
            assert claims["sub"] == b.address and claims["room"] == ib["islandId"]
            assert claims["exp"] - claims["iat"] == 300

            ra, rb = RoomClient(a.wallet), RoomClient(b.wallet)
            room_a = await ra.join(ia["connStr"])
            room_b = await rb.join(ib["connStr"])
            assert list(room_b["peerIdentities"].values()) == [a.address]
            assert room_a["alias"] != room_b["alias"]
            await rb.send({"peerUpdateMessage": {"body": "aGk=", "unreliable": False}})
            upd = await ra.expect("peerUpdateMessage")
            assert upd["peerUpdateMessage"]["fromAlias"] == room_b["alias"]
            assert upd["peerUpdateMessage"]["body"] == "aGk="
            status, rooms, _ = await http_get(realm, "/rooms/status")
            assert status == 200 and rooms["users"] == 2
            # a token for another room is refused
            bad = RoomClient(a.wallet)
            other = ib["connStr"].replace(f"/rooms/{ib['islandId']}?", "/rooms/elsewhere?")
            with pytest.raises(Closed) as e:
                await bad.join(other)
            assert e.value.code == 4010
            for cl in (a, b, ra, rb, bad):
                await cl.close()

    run(body)


def test_default_realm_refuses_an_island_room_without_its_token() -> None:
    """An eavesdropper opening /rooms/<island> without the realm's token is closed 4010."""

    async def body() -> None:
        async with Realm(config()) as realm:  # defaults: tokens required
            a = await connected(realm, 55)
            await a.heartbeat(0.0, 0.0, 0.0)
            ia = await a.island()
            member = RoomClient(a.wallet)
            await member.join(ia["connStr"])
            bare = ia["connStr"].split("?", 1)[0]  # ws-room:ws://.../rooms/<island>
            spy = RoomClient(ArchipelagoClient(56).wallet)
            with pytest.raises(Closed) as e:
                await spy.join(bare)
            assert (e.value.code, e.value.reason) == (4010, "invalid access token: missing")
            forged = RoomClient(ArchipelagoClient(56).wallet)
            with pytest.raises(Closed) as e:
                await forged.join(bare + "?access_token=" + token_of(ia["connStr"]))
            # a member's token is bound to its address: the spy's signature does not match
            assert (e.value.code, e.value.reason) == (4003, "auth failed: address_mismatch")
            stats = realm.server.stats()["rooms"]
            assert stats["token_rejected"] == 1 and stats["users"] == 1
            for cl in (a, member, spy, forged):
                await cl.close()

    run(body)


class SmallOnFixed(RealmPolicy):
    """A test policy: islands of one peer get a fixed string, bigger ones the default."""

    def __init__(self, transports: Any) -> None:
        super().__init__(transports)
        self.solo = FixedTransport("offline:offline")
        self.solo.name = "solo"
        self.calls: list[tuple[str, int, str | None]] = []

    def transport_for(self, island: IslandView) -> Transport:
        self.calls.append((island.id, len(island.peers), island.transport))
        return self.solo if len(island.peers) == 1 else self.transports.default


def test_python_policy_changes_the_transport_and_reissues() -> None:
    async def body() -> None:
        async with Realm(config(**LIVEKIT), policy=SmallOnFixed) as realm:
            policy = realm.policy
            assert isinstance(policy, SmallOnFixed)
            a = await connected(realm, 61)
            await a.heartbeat(0.0, 0.0, 0.0)
            ia = await a.island()
            assert ia["connStr"] == "offline:offline"
            b = await connected(realm, 62)
            await b.heartbeat(2.0, 0.0, 2.0)
            ib = await b.island()
            assert ib["islandId"] == ia["islandId"]
            assert ib["connStr"].startswith("livekit:")
            # a's island switched transport: a gets island_changed again, same id, from itself
            again = await a.island(islandId=ia["islandId"], fromIslandId=ia["islandId"])
            assert again["connStr"].startswith("livekit:")
            assert TokenVerifier(LK_KEY, LK_SECRET).verify(token_of(again["connStr"])).identity == (
                a.address
            )
            assert set(again["peers"]) == {a.address, b.address}
            # asked once per changed island per tick, never per peer
            ticks = [c for c in policy.calls if c[0] == ia["islandId"]]
            assert ticks[0] == (ia["islandId"], 1, None)
            assert (ia["islandId"], 2, "solo") in ticks
            for cl in (a, b):
                await cl.close()

    run(body)


def test_about_stats_and_metrics_over_http() -> None:
    async def body() -> None:
        cfg = config(
            realm_name="testrealm", commit_hash="cafe", discovery_interval_ms=100, **LIVEKIT
        )
        async with Realm(cfg) as realm:
            a = await connected(realm, 71)
            await a.heartbeat(20.0, 0.0, -20.0)
            ia = await a.island()

            status, about, headers = await http_get(realm, "/about")
            assert status == 200 and headers["Access-Control-Allow-Origin"] == "*"
            assert about["healthy"] is True and about["acceptingUsers"] is True
            assert about["configurations"] == {
                "realmName": "testrealm",
                "networkId": 1,
                "globalScenesUrn": [],
                "scenesUrn": [],
            }
            assert about["comms"] == {
                "healthy": True,
                "protocol": "v3",
                "version": __import__("dclcomms").__version__,
                "commitHash": "cafe",
                "usersCount": 1,
                "adapter": f"archipelago:archipelago:ws://127.0.0.1:{realm.port}/archipelago/ws",
                "gatekeeperUrl": f"http://127.0.0.1:{realm.port}",  # mounted by default
            }
            _, about2, _ = await http_get(realm, "/about", headers={"Host": "realm.test:443"})
            assert (
                about2["comms"]["adapter"]
                == "archipelago:archipelago:ws://realm.test:443/archipelago/ws"
            )

            status, st, _ = await http_get(realm, "/status")
            assert status == 200 and st["userCount"] == 1 and st["commitHash"] == "cafe"
            assert abs(st["currentTime"] - time.time() * 1000) < 5000

            peer = {
                "id": a.address,
                "address": a.address,
                "parcel": [1, -2],
                "position": [20.0, 0.0, -20.0],
            }
            _, peers, _ = await http_get(realm, "/peers")
            assert peers["ok"] is True and len(peers["peers"]) == 1
            assert {k: v for k, v in peers["peers"][0].items() if k != "lastPing"} == peer
            _, one, _ = await http_get(realm, f"/comms/peers/{a.address}")
            assert one["peer"]["id"] == a.address
            islands = await eventually_http(realm, "/islands", lambda b: b["islands"])
            (island,) = islands["islands"]
            assert island["id"] == ia["islandId"] and island["maxPeers"] == 100
            assert island["center"] == [20.0, 0.0, -20.0] and island["radius"] == 0.0
            assert [p["id"] for p in island["peers"]] == [a.address]
            status, single, _ = await http_get(realm, f"/islands/{ia['islandId']}")
            assert status == 200 and single["id"] == ia["islandId"]
            assert (await http_get(realm, "/islands/nope"))[0] == 404
            _, parcels, _ = await http_get(realm, "/parcels")
            assert parcels == {"parcels": [{"peersCount": 1, "parcel": {"x": 1, "y": -2}}]}
            _, hot, _ = await http_get(realm, "/hot-scenes")
            assert hot == [
                {
                    "id": "1,-2",
                    "name": "",
                    "baseCoords": [1, -2],
                    "usersTotalCount": 1,
                    "parcels": [[1, -2]],
                }
            ]
            core = await eventually_http(realm, "/core-status", lambda b: b["userCount"] == 1)
            assert core == {"healthy": True, "userCount": 1}
            status, live, _ = await http_get(realm, "/health/live")
            assert (status, live) == (200, "alive")
            status, nf, _ = await http_get(realm, "/nope")
            assert (status, nf) == (404, {"error": "Not Found"})

            status, metrics, headers = await http_get(realm, "/metrics")
            assert status == 200 and headers["Content-Type"].startswith("text/plain")
            lines = metrics.splitlines()
            assert "dcl_archipelago_peers 1" in lines and "dcl_archipelago_islands 1" in lines
            assert "dcl_connector_sessions 1" in lines
            assert any(
                line.startswith("dcl_archipelago_flush_duration_seconds_count ") for line in lines
            )
            assert 'dcl_archipelago_connection_strings_total{transport="livekit"} 1' in lines
            assert any(line.startswith("dcl_ws_connector_") for line in lines)
            assert a.address not in metrics  # no per-peer labels
            await a.close()

    run(body)


async def eventually_http(realm: Realm, path: str, ok: Callable[[Any], Any]) -> Any:
    deadline = time.monotonic() + 5
    while True:
        _, body, _ = await http_get(realm, path)
        if ok(body) or time.monotonic() > deadline:
            return body
        await asyncio.sleep(0.05)


def test_about_in_fixed_adapter_mode() -> None:
    async def body() -> None:
        async with Realm(config(fixed_adapter="ws-room:rooms.example/rooms/lobby")) as realm:
            _, about, _ = await http_get(realm, "/about")
            assert about["comms"]["fixedAdapter"] == "ws-room:rooms.example/rooms/lobby"
            assert "adapter" not in about["comms"]
            c = await connected(realm, 81)
            await c.heartbeat(0.0, 0.0, 0.0)
            assert (await c.island())["connStr"] == "ws-room:rooms.example/rooms/lobby"
            await c.close()

    run(body)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_cli_runs_prints_its_url_and_stops_on_signals(sig: int) -> None:
    env = dict(os.environ, LOG_FORMAT="json")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dclcomms",
            "realm",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--flush-interval-s",
            "0.1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("dclcomms realm listening on http://127.0.0.1:"), line
        url = line.split()[-1]

        async def probe() -> None:
            async with aiohttp.ClientSession() as s, s.get(url + "/about") as r:
                assert r.status == 200
                assert (await r.json())["comms"]["protocol"] == "v3"

        asyncio.run(probe())
        proc.send_signal(sig)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        err = proc.stderr.read() if proc.stderr else ""
        stop_process(proc)
    records = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert any(r["msg"] == "realm started" for r in records), err
    assert any(r["msg"] == "realm stopped" for r in records), err


def test_deny_list_is_fetched_enforced_and_kept_on_failure() -> None:
    from aiohttp import web

    from dclcomms.realm.denylist import parse_deny_list

    denied = ArchipelagoClient(91)
    state = {"fail": False}

    async def handler(_request: web.Request) -> web.Response:
        if state["fail"]:
            return web.Response(status=500)
        users = [{"wallet": denied.wallet.owner.address}, {"wallet": "not-an-address"}, {}]
        return web.json_response({"users": users})

    async def body() -> None:
        app = web.Application()
        app.router.add_get("/denylist.json", handler)
        runner, port = await start_app(app)
        cfg = config(deny_list_url=f"http://127.0.0.1:{port}/denylist.json")
        try:
            async with Realm(cfg) as realm:
                dl = realm.deny_list
                assert dl is not None
                await eventually(lambda: dl.loaded)
                assert dl.addresses == [denied.address]
                await denied.connect(ws_base(realm))
                await denied.send_client({"challengeRequest": {"address": denied.address}})
                assert (await denied.closed()).code == 4004
                ok = await connected(realm, 92)  # everybody else is served
                state["fail"] = True
                assert await dl.refresh() is False
                assert dl.addresses == [denied.address]  # the old list stays in force
                _, metrics, _ = await http_get(realm, "/metrics")
                assert 'dcl_denylist_refreshes_total{result="error"} 1' in metrics
                assert "dcl_denylist_addresses 1" in metrics
                for c in (denied, ok):
                    await c.close()
        finally:
            await runner.cleanup()

    run(body)
    with pytest.raises(ValueError, match="users"):
        parse_deny_list([])


def test_banned_sessions_are_kicked_and_an_unreachable_gatekeeper_fails_closed() -> None:
    from aiohttp import web

    banned, clean = ArchipelagoClient(101), ArchipelagoClient(102)
    state = {"down": False}
    asked: list[str] = []

    async def bans(request: web.Request) -> web.Response:
        asked.append(request.match_info["addr"])
        if state["down"]:
            return web.Response(status=503)
        is_banned = request.match_info["addr"] == banned.address
        return web.json_response({"data": {"isBanned": is_banned}})

    async def body() -> None:
        app = web.Application()
        app.router.add_get("/users/{addr}/bans", bans)
        runner, port = await start_app(app)
        try:
            async with Realm(config(comms_gatekeeper_url=f"http://127.0.0.1:{port}")) as realm:
                for c in (banned, clean):
                    await c.connect(ws_base(realm))
                    await c.handshake()
                assert await banned.expect("kicked") == {"kicked": {"reason": "KR_NEW_SESSION"}}
                assert (await banned.closed()).code == 4005
                await clean.heartbeat(0.0, 0.0, 0.0)
                await clean.island()  # the clean session is served
                assert sorted(asked) == sorted([banned.address, clean.address])
                # the gatekeeper goes down: a newcomer without a verdict is closed 1013,
                # the clean session keeps its cached verdict
                state["down"] = True
                late = await connected(realm, 103)
                assert (await late.closed()).code == 1013
                assert realm.bans is not None
                await realm.bans.sweep()
                await clean.heartbeat(0.0, 0.0, 0.0)
                _, metrics, _ = await http_get(realm, "/metrics")
                assert 'dcl_bans_kicks_total{code="4005"} 1' in metrics
                assert 'dcl_bans_kicks_total{code="1013"} 1' in metrics
                assert realm.connector is not None and clean.address in realm.connector.sessions
                for c in (banned, clean, late):
                    await c.close()
        finally:
            await runner.cleanup()

    run(body)


class WirePubSub(PubSub):
    """A pub/sub that behaves like NATS: bytes only, heartbeats split per subject.

    Uses only the abstract PubSub interface plus the base-class heartbeat helpers, so the
    realm running unchanged on it shows that a network pub/sub plugs in without touching
    the connector glue, the core or stats.
    """

    def __init__(self) -> None:
        self.subs: list[Subscription] = []
        self.bytes_published = 0

    def publish(self, subject: str, payload: bytes | Message) -> None:
        data = payload if isinstance(payload, bytes) else encode_payload(payload)
        self.bytes_published += len(data)
        for sub in list(self.subs):
            if subject_matches(sub.pattern, subject):
                sub.handler(subject, decode_payload(subject, data))

    def subscribe(self, pattern: str, handler: Any) -> Subscription:
        sub = Subscription(pattern, handler, self)
        self.subs.append(sub)
        return sub

    def _remove(self, sub: Subscription) -> None:
        self.subs.remove(sub)


def test_realm_runs_unchanged_on_a_bytes_only_bus() -> None:
    async def body() -> None:
        bus = WirePubSub()
        async with Realm(config(**LIVEKIT), pubsub=bus) as realm:
            a = await connected(realm, 111)
            b = await connected(realm, 112)
            await a.heartbeat(0.0, 0.0, 0.0)
            ia = await a.island()
            await b.heartbeat(8.0, 0.0, 8.0)
            ib = await b.island()
            assert ib["islandId"] == ia["islandId"]
            assert ib["peers"][a.address] == {"x": 0.0, "y": 0.0, "z": 0.0}
            assert (await a.expect("joinIsland"))["joinIsland"]["peerId"] == b.address
            claims = TokenVerifier(LK_KEY, LK_SECRET).verify(token_of(ib["connStr"]))
            assert claims.identity == b.address
            await b.close()
            assert (await a.expect("leftIsland"))["leftIsland"]["peerId"] == b.address
            _, peers, _ = await http_get(realm, "/peers")
            assert [p["id"] for p in peers["peers"]] == [a.address]
            assert bus.bytes_published > 0
            await a.close()

    run(body)


def test_silent_peer_expires_from_island_and_stats() -> None:
    """A connected peer that stops heartbeating leaves its island after the timeout."""

    async def body() -> None:
        async with Realm(config(heartbeat_timeout_ms=1000)) as realm:
            a = await connected(realm, 121)
            b = await connected(realm, 122)
            await a.heartbeat(0.0, 0.0, 0.0)
            await b.heartbeat(4.0, 0.0, 4.0)
            ia = await a.island()
            await b.island()
            for _ in range(8):  # a keeps heartbeating for ~1.6 s, b is silent
                await asyncio.sleep(0.2)
                await a.heartbeat(0.0, 0.0, 0.0)
            left = await a.expect("leftIsland")
            assert left["leftIsland"] == {"islandId": ia["islandId"], "peerId": b.address}
            _, peers, _ = await http_get(realm, "/peers")
            assert [p["id"] for p in peers["peers"]] == [a.address]
            assert realm.connector is not None and b.address in realm.connector.sessions
            for c in (a, b):
                await c.close()

    run(body)


def test_a_start_failing_after_the_gatekeeper_mounted_stops_what_it_spawned() -> None:
    """start() failing late (here the pub/sub's readiness) stops the tasks it spawned, the
    gatekeeper's database poll first, before closing the store. That poll used to be left
    running: it went on querying the closed store (reopening connections nobody closes)
    and was destroyed pending with the loop."""

    class NotReady(InProcessPubSub):
        async def ready(self) -> None:
            raise RuntimeError("the bus never became ready")

    async def body() -> None:
        realm = Realm(config(), pubsub=NotReady())
        with pytest.raises(RuntimeError, match="never became ready"):
            await realm.start()
        assert realm.gatekeeper is not None  # mounted before the failure
        assert not realm._tasks  # each leaves the set when done; none was left pending
        assert realm.server is None

    run(body)
