"""Transports and policies: connection strings, hysteresis, loading by name."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

import pytest

from dclcomms import ConfigError
from dclcomms.config import RealmConfig
from dclcomms.policy import (
    BUILTIN_POLICIES,
    CrowdedOnLiveKit,
    FixedTransport,
    IslandView,
    LiveKitTransport,
    P2PPolicy,
    P2PTransport,
    RealmPolicy,
    TieredPolicy,
    WsRoomTransport,
    build_transports,
    load_policy,
    public_base_url,
)

A, B = "0x" + "a" * 40, "0x" + "b" * 40
LK = {"livekit_host": "lk.example", "livekit_api_key": "key", "livekit_api_secret": "s" * 32}


def _view(n: int, transport: str | None = None) -> IslandView:
    peers = tuple(f"0x{i:040x}" for i in range(n))
    return IslandView("I1", peers, (0.0, 0.0, 0.0), 0.0, 100, transport)


def test_default_transport_choice() -> None:
    t = build_transports(RealmConfig(host="127.0.0.1"), bound_port=4000, ws_room_secret="")
    assert t.default is t.ws_room and t.livekit is None and t.fixed is None
    assert t.ws_room.issue("I1", [A]) == {A: "ws-room:ws://127.0.0.1:4000/rooms/I1"}
    t = build_transports(RealmConfig(**LK), bound_port=4000, ws_room_secret="x")
    assert t.default is t.livekit and t.livekit is not None
    assert t.livekit.host == "wss://lk.example"
    t = build_transports(
        RealmConfig(**LK, fixed_adapter="offline:offline"), bound_port=1, ws_room_secret="x"
    )
    assert t.default is t.fixed
    assert t.default.issue("I3", [A, B]) == {A: "offline:offline", B: "offline:offline"}
    assert sorted(t.by_name()) == ["fixed", "livekit", "p2p", "ws-room"]
    assert t.p2p is not None and t.default is not t.p2p  # P2P is never the default


def test_public_and_ws_room_urls() -> None:
    assert public_base_url(RealmConfig(host="0.0.0.0"), 80) == "http://127.0.0.1:80"
    assert public_base_url(RealmConfig(host="::1"), 80) == "http://[::1]:80"
    cfg = RealmConfig(public_url="https://realm.example/")
    assert public_base_url(cfg, 80) == "https://realm.example"
    t = build_transports(cfg, bound_port=80, ws_room_secret="")
    assert t.ws_room.issue("I2", [A])[A] == "ws-room:wss://realm.example/rooms/I2"
    cfg = RealmConfig(public_url="https://realm.example", ws_room_url="ws://rooms.internal:9")
    t = build_transports(cfg, bound_port=80, ws_room_secret="")
    assert t.ws_room.issue("I2", [A])[A] == "ws-room:ws://rooms.internal:9/rooms/I2"
    with pytest.raises(ConfigError) as e:
        build_transports(RealmConfig(ws_room_url="ftp://x"), bound_port=80, ws_room_secret="")
    assert (e.value.code, e.value.field) == ("bad_value", "ws_room_url")


def test_fixed_transport_validates() -> None:
    with pytest.raises(ConfigError, match="not a connection string") as e:
        FixedTransport("no-protocol-here")
    assert (e.value.code, e.value.field) == ("bad_value", "fixed_adapter")


@pytest.mark.parametrize("missing", ["livekit_host", "livekit_api_key", "livekit_api_secret"])
def test_livekit_transport_names_the_missing_setting(missing: str) -> None:
    given = {"host": "lk.example", "api_key": "key", "api_secret": "secret"}
    given[missing.removeprefix("livekit_")] = ""
    with pytest.raises(ConfigError) as e:
        LiveKitTransport(given["host"], given["api_key"], given["api_secret"])
    assert (e.value.code, e.value.field) == ("bad_value", missing)
    assert FixedTransport("livekit:wss://x?access_token=t").issue("I1", []) == {}


def test_crowded_on_livekit_hysteresis() -> None:
    t = build_transports(RealmConfig(**LK), bound_port=1, ws_room_secret="x")
    p = CrowdedOnLiveKit(t, up_at=5, down_at=2)
    lk, ws = t.livekit, t.ws_room
    assert p.transport_for(_view(4)) is ws  # new small island
    assert p.transport_for(_view(5)) is lk  # new crowded island
    assert p.transport_for(_view(4, "ws-room")) is ws
    assert p.transport_for(_view(5, "ws-room")) is lk  # up at 5
    assert p.transport_for(_view(3, "livekit")) is lk  # stays up between the thresholds
    assert p.transport_for(_view(2, "livekit")) is ws  # down at 2
    no_lk = build_transports(RealmConfig(), bound_port=1, ws_room_secret="x")
    assert CrowdedOnLiveKit(no_lk).transport_for(_view(50)) is no_lk.ws_room
    with pytest.raises(ConfigError):
        CrowdedOnLiveKit(t, up_at=2, down_at=2)


def test_load_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    t = build_transports(RealmConfig(), bound_port=1, ws_room_secret="")
    assert type(load_policy("", t)) is RealmPolicy
    assert isinstance(load_policy("dclcomms.policy:CrowdedOnLiveKit", t), CrowdedOnLiveKit)
    (tmp_path / "my_policies.py").write_text(
        textwrap.dedent(
            """
            from dclcomms.policy import RealmPolicy

            class Fails(RealmPolicy):
                def __init__(self, transports):
                    raise RuntimeError("nope")

            class NotAPolicy:
                pass
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    for spec, fragment in [
        ("no_such_module_xyz:P", "cannot be loaded"),
        ("dclcomms.policy:Nope", "cannot be loaded"),
        ("my_policies:NotAPolicy", "not a RealmPolicy subclass"),
        ("my_policies:Fails", "failed to start: nope"),
    ]:
        with pytest.raises(ConfigError, match=fragment) as e:
            load_policy(spec, t)
        assert (e.value.code, e.value.field) == ("bad_policy", "policy")
    sys.modules.pop("my_policies", None)


def test_ws_room_transport_without_secret_has_no_token() -> None:
    w = WsRoomTransport("http://h:1/", None)
    assert w.base_url == "ws://h:1"
    assert w.issue("I9", [A, B]) == {A: "ws-room:ws://h:1/rooms/I9", B: "ws-room:ws://h:1/rooms/I9"}


def test_example_policy_loads_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "examples"))
    t = build_transports(RealmConfig(**LK), bound_port=1, ws_room_secret="x")
    p = load_policy("crowded_policy:CrowdedIslands", t)
    assert isinstance(p, CrowdedOnLiveKit) and (p.up_at, p.down_at) == (10, 5)
    assert p.transport_for(_view(9)) is t.ws_room
    assert p.transport_for(_view(10)) is t.livekit
    assert p.transport_for(_view(6, "livekit")) is t.livekit
    sys.modules.pop("crowded_policy", None)


def test_minted_tokens_verify() -> None:
    import time

    from livekit.api import TokenVerifier

    from dclcomms.auth import jwt_decode

    t = build_transports(RealmConfig(**LK), bound_port=4000, ws_room_secret="w" * 32)
    assert t.livekit is not None
    (lk,) = t.livekit.issue("I7", [A]).values()
    prefix = "livekit:wss://lk.example?access_token="
    assert lk.startswith(prefix)
    claims = TokenVerifier("key", "s" * 32).verify(lk[len(prefix) :])
    assert claims.identity == A and claims.video.room == "I7"
    assert claims.video.can_publish_sources == ["microphone"] and claims.video.room_join
    (ws,) = t.ws_room.issue("I7", [A]).values()
    prefix = "ws-room:ws://127.0.0.1:4000/rooms/I7?access_token="
    assert ws.startswith(prefix)
    c = jwt_decode(ws[len(prefix) :], "w" * 32, require_exp=True)
    assert (c["sub"], c["room"], c["exp"] - c["iat"]) == (A, "I7", 300)
    assert abs(c["iat"] - time.time()) < 5


def test_ws_room_token_has_one_builder() -> None:
    import jwt as pyjwt

    from dclcomms.auth import ws_room_token
    from dclcomms.gatekeeper import tokens

    secret = "w" * 32
    token = ws_room_token(secret, address=A, room="I7", ttl_s=60, now_s=1_700_000_000)
    claims = pyjwt.decode(token, secret, algorithms=["HS256"], options={"verify_exp": False})
    assert list(claims.items()) == [
        ("sub", A),
        ("room", "I7"),
        ("iat", 1_700_000_000),
        ("exp", 1_700_000_060),
    ]
    # the island transport and the gatekeeper's scene rooms mint it with this builder
    assert tokens.ws_room_token is ws_room_token
    (ws,) = WsRoomTransport("ws://h:1", secret, ttl_s=60).issue("I7", [A]).values()
    minted = ws.split("?access_token=", 1)[1]
    iat = pyjwt.decode(minted, secret, algorithms=["HS256"])["iat"]
    assert minted == ws_room_token(secret, address=A, room="I7", ttl_s=60, now_s=iat)


def test_p2p_transport_strings_and_capacity() -> None:
    t = build_transports(RealmConfig(), bound_port=1, ws_room_secret="")
    assert t.p2p is not None and t.p2p.name == "p2p" and t.p2p.max_island_size == 16
    assert t.p2p.issue("I4", [A, B]) == {A: f"p2p:I4:{A}", B: f"p2p:I4:{B}"}
    assert t.p2p.issue("I4", []) == {}
    # capped by the island size; absent without /bus (nothing could signal)
    t = build_transports(
        RealmConfig(max_island_size=5, p2p_max_island_size=8), bound_port=1, ws_room_secret=""
    )
    assert t.p2p is not None and t.p2p.max_island_size == 5
    assert build_transports(RealmConfig(bus=False), bound_port=1, ws_room_secret="").p2p is None
    with pytest.raises(ConfigError):
        P2PTransport(max_island_size=1)


def test_p2p_policy_puts_islands_on_p2p_up_to_its_capacity() -> None:
    t = build_transports(RealmConfig(p2p_max_island_size=8), bound_port=1, ws_room_secret="")
    p = load_policy("p2p", t)
    assert isinstance(p, P2PPolicy) and p.down_at == 6
    assert p.transport_for(_view(1)) is t.p2p
    assert p.transport_for(_view(8)) is t.p2p
    assert p.transport_for(_view(8, "p2p")) is t.p2p
    assert p.transport_for(_view(9, "p2p")) is t.default  # over capacity
    assert p.transport_for(_view(9)) is t.default
    assert p.transport_for(_view(7, "ws-room")) is t.default  # hysteresis: not back yet
    assert p.transport_for(_view(6, "ws-room")) is t.p2p
    with pytest.raises(ConfigError) as e:
        load_policy(
            "p2p", build_transports(RealmConfig(bus=False), bound_port=1, ws_room_secret="")
        )
    assert e.value.code == "bad_policy" and "/bus" in str(e.value) and e.value.field == "bus"


def test_tiered_policy_levels_and_hysteresis() -> None:
    cfg = RealmConfig(
        **LK,
        tiered_p2p_up_at=5,
        tiered_p2p_down_at=2,
        tiered_livekit_up_at=10,
        tiered_livekit_down_at=7,
    )
    t = build_transports(cfg, bound_port=1, ws_room_secret="x")
    p = load_policy("tiered", t, cfg)
    assert isinstance(p, TieredPolicy) and (p.up, p.down) == ((5, 10), (2, 7))
    p2p, ws, lk = t.p2p, t.ws_room, t.livekit
    # new islands start at the level their size gives
    assert [p.transport_for(_view(n)) for n in (1, 4, 5, 9, 10, 40)] == [p2p, p2p, ws, ws, lk, lk]
    # growing: P2P up to 4, rooms from 5, LiveKit from 10
    assert p.transport_for(_view(4, "p2p")) is p2p
    assert p.transport_for(_view(5, "p2p")) is ws
    assert p.transport_for(_view(12, "p2p")) is lk  # a big merge jumps both boundaries
    assert p.transport_for(_view(9, "ws-room")) is ws
    assert p.transport_for(_view(10, "ws-room")) is lk
    # shrinking: LiveKit down to 8, rooms down to 3 (no flapping in between)
    assert p.transport_for(_view(8, "livekit")) is lk
    assert p.transport_for(_view(7, "livekit")) is ws
    assert p.transport_for(_view(3, "ws-room")) is ws
    assert p.transport_for(_view(2, "ws-room")) is p2p
    assert p.transport_for(_view(1, "livekit")) is p2p
    # one island walking up and down one peer at a time switches exactly at the thresholds
    current, switches = None, []
    for n in [*range(1, 13), *range(12, 0, -1)]:
        chosen = p.transport_for(_view(n, current)).name
        if chosen != current:
            switches.append((n, chosen))
        current = chosen
    assert switches == [(1, "p2p"), (5, "ws-room"), (10, "livekit"), (7, "ws-room"), (2, "p2p")]


def test_tiered_policy_without_livekit_and_p2p_capacity() -> None:
    cfg = RealmConfig(p2p_max_island_size=3)
    t = build_transports(cfg, bound_port=1, ws_room_secret="")
    p = load_policy("tiered", t, cfg)
    assert p.transport_for(_view(3)) is t.p2p
    assert p.transport_for(_view(4)) is t.ws_room  # over the P2P capacity below up_at (7)
    assert p.transport_for(_view(4, "p2p")) is t.ws_room
    assert p.transport_for(_view(80, "ws-room")) is t.ws_room  # no LiveKit: rooms on top
    assert p.transport_for(_view(80)) is t.ws_room
    assert p.transport_for(_view(3, "fixed")) is t.p2p  # an unranked transport: by size


@pytest.mark.parametrize(
    "bad",
    [
        {"tiered_p2p_up_at": 4, "tiered_p2p_down_at": 4},
        {"tiered_p2p_up_at": 60},
        {"tiered_livekit_down_at": 50},
    ],
)
def test_tiered_thresholds_are_validated(bad: dict[str, int]) -> None:
    with pytest.raises(ConfigError) as e:
        RealmConfig(**bad)
    assert e.value.code == "bad_value"
    t = build_transports(RealmConfig(), bound_port=1, ws_room_secret="")
    with pytest.raises(ConfigError):
        TieredPolicy(t, p2p_up_at=3, p2p_down_at=3)


def test_builtin_policy_names_are_accepted_by_the_config() -> None:
    assert sorted(BUILTIN_POLICIES) == ["p2p", "tiered"]
    for name in BUILTIN_POLICIES:
        assert RealmConfig(policy=name).policy == name
    with pytest.raises(ConfigError, match="p2p or tiered"):
        RealmConfig(policy="mesh")


def test_built_in_transports_mint_in_one_call_what_the_token_builders_write(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """WsRoomTransport and LiveKitTransport mint an island's tokens in one C++ call: the
    tokens of dclcomms.auth's builders, also for a subclass that extends issue()."""
    from dclcomms.auth import livekit_token, ws_room_token

    now = 1_800_000_000
    monkeypatch.setattr("dclcomms.policy.time.time", lambda: float(now))
    peers = [A, B, "0x" + "c" * 40, 'odd"id\\é']
    ws = WsRoomTransport("http://rooms.example:9", "w" * 32, ttl_s=60)
    assert ws.issue("I7", peers) == {
        p: "ws-room:ws://rooms.example:9/rooms/I7?access_token="
        + ws_room_token("w" * 32, address=p, room="I7", ttl_s=60, now_s=now)
        for p in peers
    }
    lk = LiveKitTransport("lk.example", "key", "s" * 32, ttl_s=90)
    assert lk.issue("I8", peers) == {
        p: "livekit:wss://lk.example?access_token="
        + livekit_token("key", "s" * 32, identity=p, room="I8", ttl_s=90, now_s=now)
        for p in peers
    }
    assert ws.issue("I7", []) == {} and lk.issue("I8", []) == {}

    class Extended(WsRoomTransport):
        def issue(self, island_id: str, peer_ids: Sequence[str]) -> dict[str, str]:
            return {p: s + "&x=1" for p, s in super().issue(island_id, peer_ids).items()}

    ext = Extended("http://rooms.example:9", "w" * 32, ttl_s=60)
    assert ext.native_issuer() is None  # the core asks its issue()
    assert ext.issue("I7", [A]) == {A: ws.issue("I7", [A])[A] + "&x=1"}
