"""Transports and policies: connection strings, hysteresis, loading by name."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from dclcomms import ConfigError
from dclcomms.config import RealmConfig
from dclcomms.policy import (
    CrowdedOnLiveKit,
    FixedTransport,
    IslandView,
    RealmPolicy,
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
    assert sorted(t.by_name()) == ["fixed", "livekit", "ws-room"]


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
    assert e.value.code == "bad_value"


def test_fixed_transport_validates() -> None:
    with pytest.raises(ConfigError, match="not a connection string") as e:
        FixedTransport("no-protocol-here")
    assert e.value.code == "bad_value"
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
        assert e.value.code == "bad_policy"
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
