"""Realm configuration: precedence, strict parsing, the sample file, the CLI exit code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dclcomms import ConfigError
from dclcomms.config import SETTINGS, RealmConfig, load_config, read_toml, sample_keys

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "dclcomms.sample.toml"


def test_defaults_match_the_reference() -> None:
    c = load_config(env={})
    assert (c.join_distance, c.leave_distance, c.flush_interval) == (64.0, 80.0, 2.0)
    assert (c.island_size, c.heartbeat_timeout_ms, c.room_prefix) == (100, 60000, "I")
    assert (c.handshake_timeout_ms, c.ws_room_max_users, c.max_frame_bytes) == (60000, 100, 16384)
    assert c.livekit_enabled is False
    assert c == RealmConfig()


def test_precedence_flags_over_env_over_toml_over_defaults(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('join_distance = 50\nleave_distance = 90.5\nroom_prefix = "T"\nport = 7000\n')
    env = {"ARCHIPELAGO_LEAVE_DISTANCE": "100", "ROOM_PREFIX": "E"}
    c = load_config({"room_prefix": "F", "port": None}, env=env, config_path=f)
    assert c.join_distance == 50.0  # toml (int accepted for a float key)
    assert c.leave_distance == 100.0  # env beats toml
    assert c.room_prefix == "F"  # flag beats env
    assert c.port == 7000  # unset flag (None) leaves the toml value
    assert c.sources == {
        "join_distance": "toml",
        "leave_distance": "env",
        "room_prefix": "flag",
        "port": "toml",
    }


def test_reference_environment_names() -> None:
    env = {
        "ARCHIPELAGO_JOIN_DISTANCE": "10",
        "ARCHIPELAGO_LEAVE_DISTANCE": "20",
        "ARCHIPELAGO_FLUSH_FREQUENCY": "0.5",
        "LIVEKIT_ISLAND_SIZE": "50",
        "LIVEKIT_HOST": "lk.example",
        "LIVEKIT_API_KEY": "key",
        "LIVEKIT_API_SECRET": "secret",
        "HANDSHAKE_TIMEOUT": "1000",
        "CHECK_HEARTBEAT_INTERVAL": "5000",
        "ROOM_PREFIX": "R",
        "WS_ROOM_SERVICE_SECRET": "s3",
        "MAX_USERS": "7",
        "WS_ROOM_REQUIRE_TOKEN": "yes",
    }
    c = load_config(env=env)
    assert (c.join_distance, c.leave_distance, c.flush_interval, c.island_size) == (10, 20, 0.5, 50)
    assert c.livekit_enabled and c.livekit_host == "lk.example"
    assert (c.handshake_timeout_ms, c.heartbeat_timeout_ms, c.room_prefix) == (1000, 5000, "R")
    assert (c.ws_room_secret, c.max_users, c.ws_room_require_token) == ("s3", 7, True)
    assert c.public_dict()["livekit_api_secret"] == "***"


@pytest.mark.parametrize(
    ("toml", "code", "fragment"),
    [
        ("joinDistance = 3\n", "unknown_key", "unknown key 'joinDistance'"),
        ('join_distance = "far"\n', "bad_value", "expected a number"),
        ("port = 70000\n", "bad_value", "must be <= 65535"),
        ("port = 1.5\n", "bad_value", "expected an integer"),
        ("ws_room_require_token = 1\n", "bad_value", "expected true or false"),
        ('room_prefix = "a.b"\n', "bad_value", "without '.'"),
        ('log_format = "xml"\n', "bad_value", "one of json, text"),
        ('policy = "nocolon"\n', "bad_value", "package.module:Class"),
        ("join_distance = nan\n", "bad_value", "finite"),
        ("join_distance = [\n", "bad_toml", "invalid TOML"),
        ("join_distance = 90\n", "bad_value", "leave_distance (80.0) must be >= join_distance"),
    ],
)
def test_strict_toml(tmp_path: Path, toml: str, code: str, fragment: str) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(toml)
    with pytest.raises(ConfigError) as e:
        load_config(env={}, config_path=f)
    assert e.value.code == code
    assert fragment in str(e.value)


@pytest.mark.parametrize(
    ("env", "code", "fragment"),
    [
        ({"ARCHIPELAGO_JOIN_DISTANCE": "near"}, "bad_value", "env ARCHIPELAGO_JOIN_DISTANCE"),
        ({"HTTP_SERVER_PORT": "-1"}, "bad_value", "must be >= 0"),
        ({"WS_ROOM_REQUIRE_TOKEN": "maybe"}, "bad_value", "expected bool"),
        ({"ARCHIPELAGO_FLUSH_FREQUENCY": "0"}, "bad_value", "must be >= 0.001"),
        ({"PUBLIC_URL": "example.com"}, "bad_value", "absolute URL"),
    ],
)
def test_strict_env(env: dict[str, str], code: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(env=env)
    assert e.value.code == code and fragment in str(e.value)


def test_missing_file_and_unknown_flag(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(env={}, config_path=tmp_path / "nope.toml")
    assert e.value.code == "config_not_found"
    with pytest.raises(ConfigError) as e:
        load_config({"no_such": 1}, env={})
    assert e.value.code == "unknown_key"


def test_sample_config_lists_every_key_and_parses() -> None:
    text = SAMPLE.read_text()
    assert sample_keys(text) == [s.name for s in SETTINGS]
    values = read_toml(SAMPLE)
    for s in SETTINGS:  # every key documented with its flag and env var, at its default
        assert values[s.name] == s.default, s.name
        assert f"env {s.env}" in text and s.flag_name in text
    assert load_config(env={}, config_path=SAMPLE) == RealmConfig()


def test_operations_doc_lists_every_key() -> None:
    doc = (ROOT / "docs" / "operations.md").read_text()
    for s in SETTINGS:
        assert f"`{s.name}`" in doc and f"`{s.env}`" in doc and f"`{s.flag_name}`" in doc, s.name


def test_cli_reports_config_errors_with_exit_2(tmp_path: Path) -> None:
    f = tmp_path / "bad.toml"
    f.write_text("bogus = 1\n")
    out = subprocess.run(
        [sys.executable, "-m", "dclcomms", "realm", "--config", str(f)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "dclcomms realm: error:" in out.stderr and "[unknown_key]" in out.stderr
    out = subprocess.run(
        [sys.executable, "-m", "dclcomms", "realm", "--join-distance", "x"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "flag --join-distance" in out.stderr
    out = subprocess.run(  # a policy that cannot be loaded is found after binding: still exit 2
        [
            sys.executable,
            "-m",
            "dclcomms",
            "realm",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--policy",
            "no_such_module_xyz:Policy",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "[bad_policy]" in out.stderr, out.stderr
