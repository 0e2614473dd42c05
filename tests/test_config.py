"""Realm configuration: precedence, strict parsing, the sample file, the CLI exit code."""

from __future__ import annotations

import argparse
import math
import os
import pickle
import re
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest

from dclcomms import ConfigError
from dclcomms.config import (
    ALIASES,
    SERVER_ROLES,
    SETTINGS,
    Alias,
    DeprecatedSettingWarning,
    RealmConfig,
    add_arguments,
    config_from_args,
    load_config,
    read_toml,
    sample_keys,
    server_config,
    settings,
)
from dclcomms.ws import ServerConfig

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "dclcomms.sample.toml"


def test_defaults_match_the_reference() -> None:
    c = load_config(env={})
    assert (c.join_distance, c.leave_distance, c.flush_interval_s) == (64.0, 80.0, 2.0)
    assert (c.max_island_size, c.heartbeat_timeout_ms, c.id_prefix) == (100, 60000, "I")
    assert (c.connector_handshake_timeout_ms, c.rooms_max_users, c.max_frame_bytes) == (
        60000,
        100,
        16384,
    )
    assert c.livekit_enabled is False
    assert c == RealmConfig()


def test_precedence_flags_over_env_over_toml_over_defaults(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('join_distance = 50\nleave_distance = 90.5\nid_prefix = "T"\nport = 7000\n')
    env = {"ARCHIPELAGO_LEAVE_DISTANCE": "100", "ROOM_PREFIX": "E"}
    c = load_config({"id_prefix": "F", "port": None}, env=env, config_path=f)
    assert c.join_distance == 50.0  # toml (int accepted for a float key)
    assert c.leave_distance == 100.0  # env beats toml
    assert c.id_prefix == "F"  # flag beats env
    assert c.port == 7000  # unset flag (None) leaves the toml value
    assert c.sources == {
        "join_distance": "toml",
        "leave_distance": "env",
        "id_prefix": "flag",
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
    assert (c.join_distance, c.leave_distance, c.flush_interval_s, c.max_island_size) == (
        10,
        20,
        0.5,
        50,
    )
    assert c.livekit_enabled and c.livekit_host == "lk.example"
    assert (c.connector_handshake_timeout_ms, c.heartbeat_timeout_ms, c.id_prefix) == (
        1000,
        5000,
        "R",
    )
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
        ('id_prefix = "a.b"\n', "bad_value", "without '.'"),
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


# --- one name per setting; the old names (ALIASES) ----------------------------------


@pytest.fixture
def fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each old name warns once per process: start every test with none warned."""
    monkeypatch.setattr(settings, "_warned", set())


KEY_ALIASES = [a for a in ALIASES if a.kind == "key"]
ENV_ALIASES = [a for a in ALIASES if a.kind == "env"]
ROOMS_FLAG_ALIASES = [a for a in ALIASES if a.kind == "flag"]


def _other_value(name: str) -> Any:
    """A valid non-default value of a setting."""
    default = RealmConfig().__getattribute__(name)
    if isinstance(default, bool):
        return not default
    if isinstance(default, int | float):
        return {"rooms_hard_limit_bytes": 2 << 20}.get(name, default + 3)
    return "Z"


def _text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def test_every_alias_names_a_setting_and_is_not_one() -> None:
    names = {s.name for s in SETTINGS}
    envs = {s.env for s in SETTINGS}
    for a in ALIASES:
        assert a.new in names, a
        assert a.old not in names and a.old not in envs, a
    assert len({(a.kind, a.old, a.command) for a in ALIASES}) == len(ALIASES)


def test_settings_named_like_server_fields_share_their_defaults() -> None:
    """One name, one meaning: a setting named like a ServerConfig field is that field (the
    realm's own listener defaults and the /bus and /map/feed switches excepted, set per process
    by the builder)."""
    overridden = {"host", "port", "bus", "map_feed"}
    fields = {name: default for name, default, _doc in ServerConfig.fields()}
    shared = [s for s in SETTINGS if s.name in fields and s.name not in overridden]
    assert len(shared) >= 15
    for s in shared:
        want = None if s.name == "ws_room_secret" else fields[s.name]
        assert (s.default or None if s.name == "ws_room_secret" else s.default) == want, s.name


@pytest.mark.usefixtures("fresh_warnings")
@pytest.mark.parametrize("alias", KEY_ALIASES, ids=lambda a: a.old)
def test_old_setting_names_still_work_everywhere(alias: Alias, tmp_path: Path) -> None:
    value = _other_value(alias.new)
    f = tmp_path / "old.toml"
    f.write_text(f"{alias.old} = {value!r}\n".replace("'", '"'))
    with pytest.warns(DeprecatedSettingWarning, match=f"use {alias.new}"):
        c = load_config(env={}, config_path=f)
    assert getattr(c, alias.new) == value and c.sources == {alias.new: "toml"}
    # only once per process: the same name again is silent
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert getattr(load_config(env={}, config_path=f), alias.new) == value
        assert getattr(RealmConfig(**{alias.old: value}), alias.new) == value  # keyword
        assert getattr(c, alias.old) == value  # attribute
        assert getattr(RealmConfig().replace(**{alias.old: value}), alias.new) == value
        assert getattr(load_config({alias.old: _text(value)}, env={}), alias.new) == value
    # the old --flag of the realm commands sets that setting and no other
    p = argparse.ArgumentParser()
    add_arguments(p)
    ns = p.parse_args([alias.flag_name, _text(value)])
    assert config_from_args(ns) == RealmConfig(**{alias.new: value})


@pytest.mark.usefixtures("fresh_warnings")
@pytest.mark.parametrize("alias", KEY_ALIASES, ids=lambda a: a.old)
def test_old_and_new_name_together_is_an_error(alias: Alias, tmp_path: Path) -> None:
    value = _other_value(alias.new)
    f = tmp_path / "both.toml"
    f.write_text(f"{alias.old} = {value!r}\n{alias.new} = {value!r}\n".replace("'", '"'))
    with pytest.warns(DeprecatedSettingWarning), pytest.raises(ConfigError) as e:
        load_config(env={}, config_path=f)
    assert (e.value.code, e.value.field) == ("bad_value", alias.new)
    assert alias.old in str(e.value)


@pytest.mark.usefixtures("fresh_warnings")
@pytest.mark.parametrize("alias", ENV_ALIASES, ids=lambda a: a.old)
def test_old_environment_variables_still_work(alias: Alias) -> None:
    value = _other_value(alias.new)
    new_env = next(s.env for s in SETTINGS if s.name == alias.new)
    with pytest.warns(DeprecatedSettingWarning, match=new_env):
        c = load_config(env={alias.old: str(value)})
    assert getattr(c, alias.new) == value and c.sources == {alias.new: "env"}
    # the current variable wins over the old one
    c = load_config(
        env={alias.old: str(value), new_env: str(RealmConfig().__getattribute__(alias.new))}
    )
    assert getattr(c, alias.new) == getattr(RealmConfig(), alias.new)
    with pytest.raises(ConfigError) as e:  # an old variable's bad value names the new setting
        load_config(env={alias.old: "many"})
    assert (e.value.code, e.value.field) == ("bad_value", alias.new)
    assert f"env {alias.old}" in str(e.value)


@pytest.mark.usefixtures("fresh_warnings")
@pytest.mark.parametrize("alias", ROOMS_FLAG_ALIASES, ids=lambda a: a.old)
def test_old_rooms_flags_still_work(alias: Alias) -> None:
    from dclcomms.rooms import build_parser, settings_from_flags

    value = _other_value(alias.new)
    argv = [alias.old] if isinstance(value, bool) else [alias.old, _text(value)]
    if alias.new == "ws_room_require_token":
        argv += ["--ws-room-secret", "s3"]
    ns = build_parser().parse_args(argv)
    with pytest.warns(DeprecatedSettingWarning, match=_flag(alias.new)) as caught:
        got = settings_from_flags(ns)
    assert len(caught) == 1  # this alias only (--handshake-timeout-ms is the realm's too)
    # that setting and nothing else
    plain = ["--ws-room-secret", "s3"] if alias.new == "ws_room_require_token" else []
    assert got == settings_from_flags(build_parser().parse_args(plain)).replace(
        **{alias.new: value}
    )
    # and the current flag beats the old one
    current = RealmConfig().__getattribute__(alias.new)
    if not isinstance(value, bool):
        ns = build_parser().parse_args([*argv, _flag(alias.new), _text(current)])
        assert getattr(settings_from_flags(ns), alias.new) == current


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def test_operations_doc_lists_every_alias() -> None:
    doc = (ROOT / "docs" / "operations.md").read_text()
    for a in ALIASES:
        assert f"`{a.old}" in doc or f" {a.old}`" in doc, a.old


# --- every configuration error names its field ---------------------------------------


@pytest.mark.parametrize(
    ("values", "field", "fragment"),
    [
        ({"bus": 1}, "bus", "expected true or false"),
        ({"port": 1.5}, "port", "expected an integer"),
        ({"port": True}, "port", "expected an integer"),
        ({"join_distance": "far"}, "join_distance", "expected a number"),
        ({"join_distance": math.inf}, "join_distance", "finite"),
        ({"realm_name": 3}, "realm_name", "expected a string"),
        ({"rooms_max_users": 0}, "rooms_max_users", "must be >= 1"),
        ({"port": 70000}, "port", "must be <= 65535"),
        ({"http_keep_alive_ms": -1}, "http_keep_alive_ms", "must be >= 0"),
        ({"http_keep_alive_ms": 3_600_001}, "http_keep_alive_ms", "must be <= 3600000"),
        ({"http_keep_alive_ms": 2.5}, "http_keep_alive_ms", "expected an integer"),
        ({"log_format": "xml"}, "log_format", "one of json, text"),
        ({"id_prefix": "a.b"}, "id_prefix", "without '.'"),
        ({"policy": "x"}, "policy", "package.module:Class"),
        ({"bus_global_topics": "a.*"}, "bus_global_topics", "no wildcards"),
        ({"public_url": "host"}, "public_url", "absolute URL"),
        ({"join_distance": 90.0}, "leave_distance", "must be >= join_distance"),
        ({"rooms_soft_limit_bytes": 1 << 21}, "rooms_hard_limit_bytes", "rooms_soft_limit_bytes"),
        ({"tiered_p2p_down_at": 7}, "tiered_p2p_down_at", "tiered policy thresholds"),
        ({"tiered_p2p_up_at": 60}, "tiered_p2p_up_at", "tiered policy thresholds"),
        ({"tiered_livekit_down_at": 50}, "tiered_livekit_down_at", "tiered policy thresholds"),
    ],
)
def test_configuration_errors_name_their_field(
    values: dict[str, Any], field: str, fragment: str
) -> None:
    with pytest.raises(ConfigError) as e:
        RealmConfig(**values)
    assert (e.value.code, e.value.field) == ("bad_value", field)
    assert fragment in str(e.value)
    again = pickle.loads(pickle.dumps(e.value))  # the field survives a process boundary
    assert (again.code, again.field, str(again)) == (e.value.code, field, str(e.value))


def test_text_errors_and_unknown_keys_name_their_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(env={"HTTP_SERVER_PORT": "eighty"})
    assert (e.value.code, e.value.field) == ("bad_value", "port")
    with pytest.raises(ConfigError) as e:
        load_config({"no_such": 1}, env={})
    assert (e.value.code, e.value.field) == ("unknown_key", "no_such")
    f = tmp_path / "c.toml"
    f.write_text("bogus = 1\n")
    with pytest.raises(ConfigError) as e:
        load_config(env={}, config_path=f)
    assert (e.value.code, e.value.field) == ("unknown_key", "bogus")
    with pytest.raises(ConfigError) as e:
        load_config(env={}, config_path=tmp_path / "none.toml")
    assert (e.value.code, e.value.field) == ("config_not_found", None)


def test_server_config_errors_name_their_field() -> None:
    with pytest.raises(ConfigError) as e:
        ServerConfig(rooms_handshake_timeout_ms=0)
    assert (e.value.code, e.value.field) == ("invalid_parameter", "rooms_handshake_timeout_ms")
    with pytest.raises(ConfigError) as e:
        ServerConfig(port=-1)
    assert (e.value.code, e.value.field) == ("invalid_parameter", "port")
    with pytest.raises(ConfigError) as e:  # the builder's own rule
        RealmConfig(ws_room_require_token=True).server_config("rooms")
    assert (e.value.code, e.value.field) == ("bad_value", "ws_room_require_token")
    with pytest.raises(ConfigError) as e:
        RealmConfig().server_config("proxy")
    assert (e.value.code, e.value.field) == ("bad_value", "role")


# --- one builder of every process's server settings ------------------------------------


def _all_set() -> RealmConfig:
    """A configuration whose every server setting differs from its default."""
    return RealmConfig(
        host="127.0.0.1",
        port=7001,
        io_threads=3,
        auth_threads=2,
        max_frame_bytes=4096,
        connector_handshake_timeout_ms=1500,
        heartbeat_max_per_s=4,
        connector_max_queued_bytes=4096,
        rooms_handshake_timeout_ms=2500,
        rooms_max_users=7,
        rooms_soft_limit_bytes=2048,
        rooms_hard_limit_bytes=8192,
        rooms_sender_max_msgs_per_s=30,
        rooms_sender_max_bytes_per_s=9000,
        ws_room_secret="s3",
        ws_room_require_token=True,
        bus=False,
        bus_max_frames_per_s=9,
        http_keep_alive_ms=1234,
        commit_hash="abc",
    )


def test_server_config_of_each_role() -> None:
    c = _all_set()
    shared = dict(
        host="127.0.0.1",
        port=7001,
        max_frame_bytes=4096,
        rooms_handshake_timeout_ms=2500,
        rooms_max_users=7,
        rooms_soft_limit_bytes=2048,
        rooms_hard_limit_bytes=8192,
        rooms_sender_max_msgs_per_s=30,
        rooms_sender_max_bytes_per_s=9000,
        ws_room_require_token=True,
        connector_handshake_timeout_ms=1500,
        heartbeat_max_per_s=4,
        connector_max_queued_bytes=4096,
        bus_max_frames_per_s=9,
        http_keep_alive_ms=1234,
        commit_hash="abc",
    )
    assert c.server_config() == ServerConfig(
        **shared,
        io_threads=3,
        auth_threads=2,
        connector=True,
        rooms=True,
        scene_rooms=True,  # the mounted gatekeeper's built-in scene rooms
        bus=False,
        map_feed=True,
        ws_room_secret="s3",
    )
    assert c.server_config("realm", ws_room_secret="gen") == ServerConfig(
        **shared,
        io_threads=3,
        auth_threads=2,
        connector=True,
        rooms=True,
        scene_rooms=True,
        bus=False,
        map_feed=True,
        ws_room_secret="gen",
    )
    assert c.replace(bus=True).server_config().bus is True
    assert c.replace(gatekeeper=False).server_config().scene_rooms is False
    assert c.server_config("rooms") == ServerConfig(
        **shared,
        io_threads=3,
        auth_threads=2,
        connector=False,
        rooms=True,
        bus=False,
        map_feed=False,  # the map is the realm's and the stats service's
        ws_room_secret="s3",
    )
    assert c.server_config("http") == ServerConfig(
        **shared,
        io_threads=1,
        auth_threads=1,
        connector=False,
        rooms=False,
        bus=False,
        map_feed=True,
        ws_room_secret=None,
    )
    assert server_config(c, "rooms") == c.server_config("rooms")
    assert set(SERVER_ROLES) == {"realm", "rooms", "http"}
    # an empty secret is no secret (the rooms then reject tokens)
    assert RealmConfig().server_config("rooms").ws_room_secret is None


def test_rooms_command_reads_the_settings_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dclcomms.rooms import build_parser, config_from_flags, rooms_settings

    assert "rooms_max_users" in rooms_settings() and "commit_hash" in rooms_settings()
    assert "max_users" not in rooms_settings() and "join_distance" not in rooms_settings()
    # the admission and plain-HTTP limits of every connection (see test_rooms_cli)
    assert {
        "max_connections",
        "max_unauthenticated_per_ip",
        "unauthenticated_evict_min_age_ms",
        "http_max_body_bytes",
        "http_keep_alive_ms",
    } <= set(rooms_settings())
    assert "unauthenticated_timeout_ms" not in rooms_settings()  # connector sessions only
    assert re.search(r"default\s+'127\.0\.0\.1'", build_parser().format_help())
    for name in ("ROOMS_MAX_USERS", "HTTP_SERVER_HOST", "COMMIT_HASH", "WS_ROOM_SERVICE_SECRET"):
        monkeypatch.delenv(name, raising=False)
    server = config_from_flags(build_parser().parse_args([]))
    assert (server.host, server.port, server.connector, server.rooms) == (
        "127.0.0.1",
        5000,
        False,
        True,
    )
    f = tmp_path / "rooms.toml"
    f.write_text("rooms_max_users = 12\nport = 7002\n")
    monkeypatch.setenv("ROOMS_MAX_USERS", "13")
    monkeypatch.setenv("COMMIT_HASH", "c0ffee")
    ns = build_parser().parse_args(["--config", str(f), "--rooms-handshake-timeout-ms", "900"])
    server = config_from_flags(ns)
    assert (server.rooms_max_users, server.port, server.rooms_handshake_timeout_ms) == (
        13,
        7002,
        900,
    )
    assert server.commit_hash == "c0ffee"


def test_a_separate_core_names_the_setting_it_misses() -> None:
    from dclcomms.nats.processes import check_core_config

    with pytest.raises(ConfigError) as e:
        check_core_config(RealmConfig())
    assert (e.value.code, e.value.field) == ("bad_value", "ws_room_secret")
    check_core_config(RealmConfig(ws_room_secret="shared"))
    check_core_config(RealmConfig(fixed_adapter="offline:offline"))


def test_cli_warns_about_an_old_name_in_one_line() -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    out = subprocess.run(
        [sys.executable, "-m", "dclcomms", "rooms", "--max-users", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert out.returncode == 2
    lines = out.stderr.splitlines()
    assert (
        "dclcomms rooms: warning: flag '--max-users' is deprecated: use --rooms-max-users "
        "(docs/operations.md)" in lines
    ), out.stderr
    assert any("rooms_max_users" in x and "must be >= 1" in x for x in lines), out.stderr
