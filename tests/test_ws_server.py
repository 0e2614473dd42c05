"""Server lifecycle and configuration errors of dclcomms.ws (no clients needed)."""

from __future__ import annotations

import dataclasses
import socket
from pathlib import Path

import pytest

import dclcomms
from dclcomms import errors
from dclcomms.ws import Server, ServerConfig, metrics_text


@pytest.mark.parametrize(
    "kw",
    [
        {"io_threads": 0},
        {"auth_threads": 0},
        {"max_frame_bytes": 0},
        {"heartbeat_max_per_s": 0},
        {"rooms_soft_limit_bytes": 2 << 20, "rooms_hard_limit_bytes": 1 << 20},
        {"rooms_handshake_timeout_ms": 0},
        {"port": 70000},
    ],
)
def test_invalid_config(kw: dict[str, int]) -> None:
    with pytest.raises(errors.ConfigError) as exc:
        Server(ServerConfig(**kw))  # type: ignore[arg-type]
    assert exc.value.code == "invalid_parameter"


def test_lifecycle_errors() -> None:
    server = Server(ServerConfig())
    port = server.start()
    assert port == server.port > 0
    with pytest.raises(errors.ConfigError) as exc:
        server.start()
    assert exc.value.code == "already_started"
    with pytest.raises(errors.ConfigError) as exc:
        Server(ServerConfig(port=port)).start()  # the port is taken
    assert exc.value.code == "bind_failed"
    with pytest.raises(errors.ConfigError) as exc:
        Server(ServerConfig(host="not-an-ip")).start()
    assert exc.value.code == "invalid_host"
    server.stop()
    server.stop()
    assert server.poll() == []
    for code in ("already_started", "bind_failed", "invalid_host", "eventfd_failed"):
        assert code in errors.CODES[errors.ConfigError]


def test_stopped_server_refuses_connections_and_sends_are_noops() -> None:
    server = Server(ServerConfig())
    port = server.start()
    server.stop()
    server.send_join_island("0x" + "1" * 40, "I1", "0x" + "2" * 40)  # ignored
    server.kick("0x" + "1" * 40, 4005, "x")
    with socket.socket() as s, pytest.raises(OSError):
        s.settimeout(2)
        s.connect(("127.0.0.1", port))


def test_never_started_server_stops() -> None:
    server = Server(ServerConfig())
    server.stop()
    server.stop()  # idempotent
    assert server.port == 0  # never bound
    assert server.poll() == []  # no event (no BusClosed/PeerDisconnected for nobody)
    assert server.stats()["connector"]["sessions"] == 0


def test_metrics_text_has_no_labels() -> None:
    server = Server(ServerConfig())
    server.start()
    try:
        text = metrics_text(server.stats())
    finally:
        server.stop()
    names = [line.split()[0] for line in text.splitlines() if not line.startswith("#")]
    gauges = {
        "dcl_ws_connector_sessions",
        "dcl_ws_rooms_users",
        "dcl_ws_rooms_rooms",
        "dcl_ws_rooms_scene_users",
        "dcl_ws_rooms_scene_rooms",
        "dcl_ws_bus_sessions",
        "dcl_ws_bridge_sessions",
        "dcl_ws_bridge_taps",
        "dcl_ws_feed_pages",
        "dcl_ws_server_connections",
        "dcl_ws_server_unauthenticated",
        "dcl_ws_server_idle_http",
        "dcl_ws_server_max_connections",
        "dcl_ws_server_fd_limit",
    }
    assert gauges <= set(names)
    assert "dcl_ws_feed_frames_skipped_total" in names
    assert "dcl_ws_server_refused_per_ip_total" in names
    assert "dcl_ws_bus_closed_rate_total" in names
    assert all(n.startswith("dcl_ws_") and "{" not in n for n in names)
    assert all(n.endswith("_total") for n in names if n not in gauges)
    # An area absent from stats is skipped; the other areas keep their names.
    assert metrics_text({"rooms": {"users": 1, "rooms": 1}}) == "\n".join(
        [
            "# HELP dcl_ws_rooms_users Members of RFC-5 rooms",
            "# TYPE dcl_ws_rooms_users gauge",
            "dcl_ws_rooms_users 1",
            "# HELP dcl_ws_rooms_rooms Non-empty RFC-5 rooms",
            "# TYPE dcl_ws_rooms_rooms gauge",
            "dcl_ws_rooms_rooms 1",
            "",
        ]
    )


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"io_threads": 0}, "io_threads"),
        ({"max_pending_frames": 0}, "max_pending_frames"),
        ({"idle_timeout_ms": -1}, "idle_timeout_ms"),
        ({"rooms_soft_limit_bytes": 2 << 20}, "rooms_soft_limit_bytes"),
        ({"port": -1}, "port"),
        ({"rooms_max_users": -1}, "rooms_max_users"),
        ({"bus_max_frame_bytes": 2**63}, None),  # not an int64: pybind11's TypeError
    ],
)
def test_config_errors_name_the_field(kw: dict[str, int], field: str | None) -> None:
    if field is None:
        with pytest.raises(TypeError):
            ServerConfig(**kw)  # type: ignore[arg-type]
        return
    with pytest.raises(errors.ConfigError) as exc:
        ServerConfig(**kw)  # type: ignore[arg-type]
    assert exc.value.code == "invalid_parameter"
    assert str(exc.value).startswith(f"{field}: "), str(exc.value)


def test_server_config_is_one_frozen_object() -> None:
    c = ServerConfig(rooms_max_users=5, commit_hash="abc")
    assert (c.rooms_max_users, c.max_frame_bytes, c.ws_room_secret) == (5, 16384, None)
    assert c.commit_hash == "abc" and c.version == dclcomms.__version__
    assert c == ServerConfig(rooms_max_users=5, commit_hash="abc")
    assert c != ServerConfig(rooms_max_users=5) and c != ServerConfig(commit_hash="abc")
    assert hash(c) == hash(ServerConfig(rooms_max_users=5, commit_hash="abc"))
    assert "rooms_max_users=5" in repr(c) and "commit_hash='abc'" in repr(c)
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.rooms_max_users = 6  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.commit_hash = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        ServerConfig(rooms_max_user=5)  # a misspelt setting is no silent default
    # Every field has a docstring with its default; the list is the C++ one.
    names = [name for name, _, _ in ServerConfig.fields()]
    assert names[:3] == ["host", "port", "io_threads"] and len(names) == len(set(names))
    for name, default, doc in ServerConfig.fields():
        assert getattr(ServerConfig(), name) == default
        prop = getattr(type(c), name)
        assert doc in prop.__doc__ and f"(default: {default!r})" in prop.__doc__


def test_every_server_setting_is_documented() -> None:
    text = (Path(__file__).resolve().parents[1] / "docs" / "ws.md").read_text(encoding="utf-8")
    missing = [name for name, _, _ in ServerConfig.fields() if f"`{name}`" not in text]
    assert not missing, f"docs/ws.md does not describe {missing}"


def test_every_event_kind_has_its_event() -> None:
    from dclcomms import _core
    from dclcomms.ws import _EVENTS

    assert set(_EVENTS) == set(_core.WsEventKind)
