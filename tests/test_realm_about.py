"""/about document (wire.md 7, control-plane.md 2) built from config and live state."""

from __future__ import annotations

from dclcomms.about import AboutState, about, public_url_from_host
from dclcomms.config import RealmConfig


def test_archipelago_adapter_shape() -> None:
    cfg = RealmConfig(
        realm_name="main",
        network_id=11155111,
        content_url="https://peer.example/content",
        lambdas_url="https://peer.example/lambdas",
        commit_hash="abc123",
        city_loader_content_server="",
    )
    status, body = about(cfg, AboutState(True, 3, "0.1.0"), "https://realm.example")
    assert status == 200
    assert body == {
        "healthy": True,
        "configurations": {
            "realmName": "main",
            "networkId": 11155111,
            "globalScenesUrn": [],
            "scenesUrn": [],
        },
        "content": {"healthy": True, "publicUrl": "https://peer.example/content"},
        "lambdas": {"healthy": True, "publicUrl": "https://peer.example/lambdas"},
        "comms": {
            "healthy": True,
            "protocol": "v3",
            "version": "0.1.0",
            "commitHash": "abc123",
            "usersCount": 3,
            "adapter": "archipelago:archipelago:wss://realm.example/archipelago/ws",
        },
        "bff": {  # the /bus message bus (on by default)
            "healthy": True,
            "version": "0.1.0",
            "commitHash": "abc123",
            "publicUrl": "wss://realm.example/bus",
            "userCount": 0,
            "protocolVersion": "dclcomms-bus/1",
        },
        "acceptingUsers": True,
    }
    _, off = about(cfg.replace(bus=False), AboutState(True, 3, "0.1.0"), "https://realm.example")
    assert "bff" not in off


def test_fixed_adapter_unhealthy_and_full() -> None:
    cfg = RealmConfig(
        fixed_adapter="ws-room:realm.example/rooms/lobby",
        max_users=2,
        city_loader_content_server="https://city.example",
    )
    status, body = about(cfg, AboutState(True, 2, "v"), "http://x:1")
    assert status == 200 and body["acceptingUsers"] is False  # full
    assert "adapter" not in body["comms"]
    assert body["comms"]["fixedAdapter"] == "ws-room:realm.example/rooms/lobby"
    assert body["configurations"]["cityLoaderContentServer"] == "https://city.example"
    status, body = about(cfg, AboutState(True, 1, "v", overloaded=True), "http://x:1")
    assert status == 200 and body["healthy"] is True and body["acceptingUsers"] is False
    status, body = about(cfg, AboutState(False, 0, "v"), "http://x:1")
    assert status == 503
    assert body["healthy"] is False and body["comms"]["healthy"] is False
    assert body["acceptingUsers"] is False


def test_public_url_resolution() -> None:
    cfg = RealmConfig()
    assert public_url_from_host(cfg, "realm.local:8000", "http://127.0.0.1:9") == (
        "http://realm.local:8000"
    )
    assert public_url_from_host(cfg, None, "http://127.0.0.1:9") == "http://127.0.0.1:9"
    assert public_url_from_host(cfg, "evil/x", "http://127.0.0.1:9") == "http://127.0.0.1:9"
    cfg = RealmConfig(public_url="https://realm.example/")
    assert public_url_from_host(cfg, "other:1", "http://b") == "https://realm.example"
