"""Realm configuration: one table of settings, four sources.

Precedence, highest first: command-line flags > environment variables (the
reference services' names, e.g. ``ARCHIPELAGO_JOIN_DISTANCE``) > a TOML file
(``--config path``, keys are the snake_case setting names) > defaults.

Parsing is strict: an unknown TOML key, a value of the wrong type, a number out
of range or an unreadable file raises :class:`dclcomms.ConfigError` with one of
the codes ``unknown_key``, ``bad_value``, ``bad_toml``, ``config_not_found``.
``SETTINGS`` is the single list of keys; ``dclcomms.sample.toml`` at the repo
root and ``docs/operations.md`` document every one (a test keeps them in sync).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dclcomms.errors import ConfigError

Kind = type[bool] | type[int] | type[float] | type[str]


@dataclass(frozen=True)
class Setting:
    """One configuration key: its TOML name, environment variable, flag and default."""

    name: str  # TOML key and RealmConfig attribute
    kind: Kind
    default: Any
    env: str
    help: str
    flag: str | None = None  # None = no flag (TOML/env only)
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] | None = None
    check: Callable[[Any], str | None] | None = None  # returns an error text or None

    @property
    def flag_name(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")


def _prefix_ok(value: str) -> str | None:
    if not value or any(c in value for c in ".*> \t\r\n"):
        return "must be non-empty without '.', '*', '>' or whitespace"
    return None


#: built-in policies selectable by name (dclcomms.policy.BUILTIN_POLICIES)
BUILTIN_POLICY_NAMES = ("p2p", "tiered")


def _policy_ok(value: str) -> str | None:
    if value in BUILTIN_POLICY_NAMES:
        return None
    if value and (value.count(":") != 1 or not all(value.split(":"))):
        return f"must be {' or '.join(BUILTIN_POLICY_NAMES)} or look like package.module:Class"
    return None


_TOPIC_RE = re.compile(r"[A-Za-z0-9_:-]+(\.[A-Za-z0-9_:-]+){0,7}")


def _topic_list(value: str) -> tuple[str, ...]:
    """The topics of a comma-separated list (blanks dropped)."""
    return tuple(t for t in (t.strip() for t in value.split(",")) if t)


def _topics_ok(value: str) -> str | None:
    for t in _topic_list(value):
        if _TOPIC_RE.fullmatch(t) is None:
            return f"topic {t!r}: 1-8 dot-separated tokens of [A-Za-z0-9_:-], no wildcards"
    return None


def _url_ok(value: str) -> str | None:
    if value and "://" not in value:
        return "must be an absolute URL (scheme://host[:port])"
    return None


SETTINGS: tuple[Setting, ...] = (
    # --- listener -----------------------------------------------------------
    Setting("host", str, "0.0.0.0", "HTTP_SERVER_HOST", "address to bind", flag="--host"),
    Setting(
        "port",
        int,
        5000,
        "HTTP_SERVER_PORT",
        "TCP port (0 = pick a free one)",
        flag="--port",
        minimum=0,
        maximum=65535,
    ),
    Setting(
        "public_url",
        str,
        "",
        "PUBLIC_URL",
        "public base URL (http[s]://host[:port]) used in /about and connection strings; "
        "empty = the request's Host header, else the bound address",
        check=_url_ok,
    ),
    Setting("io_threads", int, 1, "IO_THREADS", "WebSocket I/O threads", minimum=1, maximum=64),
    Setting(
        "max_frame_bytes",
        int,
        16384,
        "MAX_FRAME_BYTES",
        "largest inbound WebSocket frame; larger closes 1009",
        minimum=64,
        maximum=1 << 24,
    ),
    # --- realm /about -------------------------------------------------------
    Setting("realm_name", str, "dclcomms", "REALM_NAME", "configurations.realmName in /about"),
    Setting(
        "network_id",
        int,
        1,
        "NETWORK_ID",
        "configurations.networkId (1 mainnet, 11155111 sepolia)",
        minimum=0,
    ),
    Setting(
        "content_url",
        str,
        "",
        "CONTENT_URL",
        "content server: /about content.publicUrl and scene names for /hot-scenes",
        check=_url_ok,
    ),
    Setting("lambdas_url", str, "", "LAMBDAS_URL", "/about lambdas.publicUrl", check=_url_ok),
    Setting(
        "city_loader_content_server",
        str,
        "",
        "CITY_LOADER_CONTENT_SERVER",
        "/about configurations.cityLoaderContentServer (empty = omitted)",
    ),
    Setting(
        "max_users",
        int,
        10000,
        "MAX_USERS",
        "realm-wide user limit: /about acceptingUsers turns false at this count",
        minimum=1,
    ),
    Setting("commit_hash", str, "", "COMMIT_HASH", "commitHash reported by /about and /status"),
    # --- archipelago core ---------------------------------------------------
    Setting(
        "join_distance",
        float,
        64.0,
        "ARCHIPELAGO_JOIN_DISTANCE",
        "metres: islands merge when two members are this close (X/Z, inclusive)",
        minimum=0.0,
    ),
    Setting(
        "leave_distance",
        float,
        80.0,
        "ARCHIPELAGO_LEAVE_DISTANCE",
        "metres: an island splits into components connected under this distance; >= join",
        minimum=0.0,
    ),
    Setting(
        "flush_interval",
        float,
        2.0,
        "ARCHIPELAGO_FLUSH_FREQUENCY",
        "seconds between clustering ticks (next tick max(period - elapsed, 1 ms))",
        minimum=0.001,
        maximum=3600.0,
    ),
    Setting(
        "island_size",
        int,
        100,
        "LIVEKIT_ISLAND_SIZE",
        "island capacity (peers)",
        minimum=1,
        maximum=100000,
    ),
    Setting(
        "heartbeat_timeout_ms",
        int,
        60000,
        "CHECK_HEARTBEAT_INTERVAL",
        "ms without a position heartbeat before a peer is dropped (core and stats)",
        minimum=1000,
    ),
    Setting(
        "discovery_interval_ms",
        int,
        10000,
        "ARCHIPELAGO_STATUS_UPDATE_INTERVAL",
        "ms between engine.discovery publications",
        minimum=100,
    ),
    Setting("room_prefix", str, "I", "ROOM_PREFIX", "island id prefix", check=_prefix_ok),
    # --- connector ----------------------------------------------------------
    Setting(
        "handshake_timeout_ms",
        int,
        60000,
        "HANDSHAKE_TIMEOUT",
        "connector: ms allowed per handshake stage (close 4001)",
        minimum=100,
    ),
    Setting(
        "auth_threads",
        int,
        1,
        "AUTH_THREADS",
        "connector and rooms: worker threads verifying auth chains off the I/O thread",
        minimum=1,
        maximum=64,
    ),
    Setting(
        "deny_list_url",
        str,
        "",
        "DENYLIST_JSON_URL",
        "deny list {users:[{wallet}]} fetched at start and every deny_list_refresh_s (denied: "
        "close 4004); production: https://config.decentraland.org/denylist.json; empty = none",
        check=_url_ok,
    ),
    Setting(
        "deny_list_refresh_s",
        float,
        300.0,
        "DENYLIST_REFRESH",
        "seconds between deny-list refreshes (a failed refresh keeps the previous list)",
        minimum=1.0,
    ),
    Setting(
        "comms_gatekeeper_url",
        str,
        "",
        "COMMS_GATEKEEPER_URL",
        "gatekeeper for platform bans (GET /users/<addr>/bans): banned sessions are closed "
        "4005, unknown verdicts 1013; empty = no ban checks",
        check=_url_ok,
    ),
    Setting(
        "ban_sweep_interval_ms",
        int,
        30000,
        "BAN_SWEEP_INTERVAL_MS",
        "ms between ban re-checks of every session",
        minimum=1000,
    ),
    Setting(
        "heartbeat_max_per_s",
        int,
        10,
        "HEARTBEAT_MAX_PER_S",
        "connector: heartbeats per second per session above which they are dropped",
        minimum=1,
    ),
    Setting(
        "connector_max_queued_bytes",
        int,
        1 << 20,
        "CONNECTOR_MAX_QUEUED_BYTES",
        "connector: outbound bytes queued per session above which it closes 4008",
        minimum=1024,
    ),
    # --- transports and policy ----------------------------------------------
    Setting(
        "livekit_host",
        str,
        "",
        "LIVEKIT_HOST",
        "LiveKit server (wss:// prepended if no scheme); with key and secret makes LiveKit "
        "the default island transport",
    ),
    Setting("livekit_api_key", str, "", "LIVEKIT_API_KEY", "LiveKit API key (token iss)"),
    Setting("livekit_api_secret", str, "", "LIVEKIT_API_SECRET", "LiveKit API secret (HS256 key)"),
    Setting(
        "island_token_ttl_s",
        int,
        300,
        "ISLAND_TOKEN_TTL",
        "seconds of validity of island tokens (LiveKit and ws-room)",
        minimum=10,
        maximum=86400,
    ),
    Setting(
        "ws_room_url",
        str,
        "",
        "WS_ROOM_URL",
        "base URL of the WebSocket rooms in connection strings; empty = this realm",
        check=_url_ok,
    ),
    Setting(
        "ws_room_secret",
        str,
        "",
        "WS_ROOM_SERVICE_SECRET",
        "HS256 secret of ws-room access tokens; empty = random per start",
    ),
    Setting(
        "ws_room_require_token",
        bool,
        False,
        "WS_ROOM_REQUIRE_TOKEN",
        "rooms refuse joins without ?access_token= (close 4010)",
    ),
    Setting(
        "ws_room_max_users",
        int,
        100,
        "WS_ROOM_MAX_USERS",
        "members per WebSocket room (then close 4007)",
        minimum=1,
    ),
    Setting(
        "ws_room_handshake_timeout_ms",
        int,
        10000,
        "WS_ROOM_HANDSHAKE_TIMEOUT",
        "rooms: ms allowed per handshake stage (close 4001)",
        minimum=100,
    ),
    Setting(
        "ws_room_soft_limit_bytes",
        int,
        64 * 1024,
        "WS_ROOM_SOFT_LIMIT_BYTES",
        "rooms: queued bytes per receiver above which unreliable updates are dropped",
        minimum=1024,
    ),
    Setting(
        "ws_room_hard_limit_bytes",
        int,
        1 << 20,
        "WS_ROOM_HARD_LIMIT_BYTES",
        "rooms: queued bytes per receiver above which it is closed 4008",
        minimum=1024,
    ),
    Setting(
        "ws_room_sender_max_msgs_per_s",
        int,
        0,
        "WS_ROOM_SENDER_MAX_MSGS_PER_S",
        "rooms: sender token bucket, messages/s (0 = off); over it unreliable updates are "
        "dropped, a reliable one closes the sender 4009",
        minimum=0,
    ),
    Setting(
        "ws_room_sender_max_bytes_per_s",
        int,
        0,
        "WS_ROOM_SENDER_MAX_BYTES_PER_S",
        "rooms: sender token bucket, bytes/s (0 = off); same rule",
        minimum=0,
    ),
    Setting(
        "fixed_adapter",
        str,
        "",
        "FIXED_ADAPTER",
        "fixed connection string: /about advertises comms.fixedAdapter and the default "
        "policy hands it to every island",
    ),
    Setting(
        "policy",
        str,
        "",
        "REALM_POLICY",
        "transport policy: p2p, tiered, or a class package.module:Class (empty = built-in default)",
        check=_policy_ok,
    ),
    Setting(
        "p2p_max_island_size",
        int,
        16,
        "P2P_MAX_ISLAND_SIZE",
        "largest island the P2P transport takes (larger ones get the default transport)",
        minimum=2,
        maximum=100,
    ),
    Setting(
        "tiered_p2p_up_at",
        int,
        7,
        "TIERED_P2P_UP_AT",
        "tiered policy: an island leaves P2P for WebSocket rooms when it reaches this size",
        minimum=2,
    ),
    Setting(
        "tiered_p2p_down_at",
        int,
        4,
        "TIERED_P2P_DOWN_AT",
        "tiered policy: an island comes back to P2P when it shrinks to this size",
        minimum=1,
    ),
    Setting(
        "tiered_livekit_up_at",
        int,
        50,
        "TIERED_LIVEKIT_UP_AT",
        "tiered policy: an island moves to LiveKit (when configured) at this size",
        minimum=2,
    ),
    Setting(
        "tiered_livekit_down_at",
        int,
        30,
        "TIERED_LIVEKIT_DOWN_AT",
        "tiered policy: an island leaves LiveKit when it shrinks to this size",
        minimum=1,
    ),
    Setting(
        "transport_node_interval",
        float,
        10.0,
        "TRANSPORT_NODE_INTERVAL",
        "core: seconds between a transport node's announcements (rooms --announce-interval)",
        minimum=0.01,
        maximum=3600.0,
    ),
    Setting(
        "transport_node_missed",
        int,
        3,
        "TRANSPORT_NODE_MISSED",
        "core: announcements a transport node may miss before its islands move",
        minimum=1,
        maximum=1000,
    ),
    # --- message bus (/bus) -------------------------------------------------
    Setting(
        "bus",
        bool,
        True,
        "BUS_ENABLED",
        "serve the authenticated message bus WebSocket /bus (control-plane.md 4)",
    ),
    Setting(
        "bus_global_topics",
        str,
        "",
        "BUS_GLOBAL_TOPICS",
        "comma-separated topics any /bus session may use realm-wide (besides its own "
        "addressed and island topics)",
        check=_topics_ok,
    ),
    Setting(
        "bus_max_frames_per_s",
        int,
        50,
        "BUS_MAX_FRAMES_PER_S",
        "/bus frames a session may send per second (above: close 4009)",
        minimum=1,
    ),
    Setting(
        "bus_queue",
        int,
        50,
        "BUS_QUEUE",
        "/bus messages queued per session before the oldest is dropped",
        minimum=1,
        maximum=100000,
    ),
    Setting(
        "p2p_signal_max_per_s",
        float,
        10.0,
        "P2P_SIGNAL_MAX_PER_S",
        "/bus: P2P signalling messages (offer/answer/candidate) a session may publish per "
        "second, sustained (token bucket; over it: error rate_limited)",
        minimum=0.1,
    ),
    Setting(
        "p2p_signal_burst",
        int,
        40,
        "P2P_SIGNAL_BURST",
        "/bus: P2P signalling messages a session may publish at once (the bucket's size)",
        minimum=1,
    ),
    # --- stats --------------------------------------------------------------
    Setting(
        "hot_scenes_cache_s",
        float,
        60.0,
        "HOT_SCENES_CACHE",
        "seconds a content-server scene lookup is cached",
        minimum=0.0,
    ),
    # --- logging ------------------------------------------------------------
    Setting(
        "log_level",
        str,
        "INFO",
        "LOG_LEVEL",
        "logging level",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
    ),
    Setting(
        "log_format",
        str,
        "json",
        "LOG_FORMAT",
        "json (one object per line) or text",
        choices=("json", "text"),
    ),
)

_BY_NAME = {s.name: s for s in SETTINGS}


@dataclass(frozen=True)
class RealmConfig:
    """Every realm setting, validated. Build with :func:`load_config` or directly."""

    host: str = "0.0.0.0"
    port: int = 5000
    public_url: str = ""
    io_threads: int = 1
    max_frame_bytes: int = 16384
    realm_name: str = "dclcomms"
    network_id: int = 1
    content_url: str = ""
    lambdas_url: str = ""
    city_loader_content_server: str = ""
    max_users: int = 10000
    commit_hash: str = ""
    join_distance: float = 64.0
    leave_distance: float = 80.0
    flush_interval: float = 2.0
    island_size: int = 100
    heartbeat_timeout_ms: int = 60000
    discovery_interval_ms: int = 10000
    room_prefix: str = "I"
    handshake_timeout_ms: int = 60000
    auth_threads: int = 1
    deny_list_url: str = ""
    deny_list_refresh_s: float = 300.0
    comms_gatekeeper_url: str = ""
    ban_sweep_interval_ms: int = 30000
    heartbeat_max_per_s: int = 10
    connector_max_queued_bytes: int = 1 << 20
    livekit_host: str = ""
    livekit_api_key: str = ""
    livekit_api_secret: str = ""
    island_token_ttl_s: int = 300
    ws_room_url: str = ""
    ws_room_secret: str = ""
    ws_room_require_token: bool = False
    ws_room_max_users: int = 100
    ws_room_handshake_timeout_ms: int = 10000
    ws_room_soft_limit_bytes: int = 64 * 1024
    ws_room_hard_limit_bytes: int = 1 << 20
    ws_room_sender_max_msgs_per_s: int = 0
    ws_room_sender_max_bytes_per_s: int = 0
    fixed_adapter: str = ""
    policy: str = ""
    p2p_max_island_size: int = 16
    tiered_p2p_up_at: int = 7
    tiered_p2p_down_at: int = 4
    tiered_livekit_up_at: int = 50
    tiered_livekit_down_at: int = 30
    transport_node_interval: float = 10.0
    transport_node_missed: int = 3
    bus: bool = True
    bus_global_topics: str = ""
    bus_max_frames_per_s: int = 50
    bus_queue: int = 50
    p2p_signal_max_per_s: float = 10.0
    p2p_signal_burst: int = 40
    hot_scenes_cache_s: float = 60.0
    log_level: str = "INFO"
    log_format: str = "json"
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        for s in SETTINGS:
            object.__setattr__(self, s.name, _validate(s, getattr(self, s.name), "value"))
        if self.leave_distance < self.join_distance:
            raise ConfigError(
                f"leave_distance ({self.leave_distance}) must be >= join_distance "
                f"({self.join_distance})",
                code="bad_value",
            )
        if self.ws_room_hard_limit_bytes < self.ws_room_soft_limit_bytes:
            raise ConfigError(
                "ws_room_hard_limit_bytes must be >= ws_room_soft_limit_bytes", code="bad_value"
            )
        if not (
            self.tiered_p2p_down_at < self.tiered_p2p_up_at <= self.tiered_livekit_up_at
            and self.tiered_livekit_down_at < self.tiered_livekit_up_at
        ):
            raise ConfigError(
                "tiered policy thresholds need tiered_p2p_down_at < tiered_p2p_up_at <= "
                "tiered_livekit_up_at and tiered_livekit_down_at < tiered_livekit_up_at",
                code="bad_value",
            )

    @property
    def bus_global_topic_list(self) -> tuple[str, ...]:
        """``bus_global_topics`` split into its topics."""
        return _topic_list(self.bus_global_topics)

    @property
    def livekit_enabled(self) -> bool:
        return bool(self.livekit_host and self.livekit_api_key and self.livekit_api_secret)

    def replace(self, **changes: Any) -> RealmConfig:
        return dataclasses.replace(self, **changes)

    def public_dict(self) -> dict[str, Any]:
        """Settings for logs: secrets redacted."""
        out: dict[str, Any] = {}
        for s in SETTINGS:
            v = getattr(self, s.name)
            out[s.name] = "***" if ("secret" in s.name and v) else v
        return out


def _validate(s: Setting, value: Any, where: str) -> Any:
    def bad(why: str) -> ConfigError:
        return ConfigError(f"{s.name} ({where}): {why}, got {value!r}", code="bad_value")

    if s.kind is bool:
        if not isinstance(value, bool):
            raise bad("expected true or false")
    elif s.kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("expected an integer")
    elif s.kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad("expected a number")
        value = float(value)
        if not math.isfinite(value):
            raise bad("expected a finite number")
    elif not isinstance(value, str):
        raise bad("expected a string")
    if s.minimum is not None and value < s.minimum:
        raise bad(f"must be >= {s.minimum:g}")
    if s.maximum is not None and value > s.maximum:
        raise bad(f"must be <= {s.maximum:g}")
    if s.choices is not None and value not in s.choices:
        raise bad(f"must be one of {', '.join(s.choices)}")
    if s.check is not None and (why := s.check(value)) is not None:
        raise bad(why)
    return value


def _from_text(s: Setting, text: str, where: str) -> Any:
    """Environment variables and flags arrive as text."""
    value: Any
    try:
        if s.kind is bool:
            low = text.strip().lower()
            if low in ("1", "true", "yes", "on"):
                value = True
            elif low in ("0", "false", "no", "off"):
                value = False
            else:
                raise ValueError
        elif s.kind is int:
            value = int(text.strip(), 10)
        elif s.kind is float:
            value = float(text.strip())
        else:
            value = text
    except ValueError:
        raise ConfigError(
            f"{s.name} ({where}): expected {s.kind.__name__}, got {text!r}", code="bad_value"
        ) from None
    return _validate(s, value, where)


def read_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Validated values of a TOML file (only the keys it sets)."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {p}", code="config_not_found") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {p}: {e}", code="config_not_found") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: invalid TOML: {e}", code="bad_toml") from None
    out: dict[str, Any] = {}
    for key, value in data.items():
        s = _BY_NAME.get(key)
        if s is None:
            raise ConfigError(f"{p}: unknown key {key!r}", code="unknown_key")
        out[key] = _validate(s, value, str(p))
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per setting; unset flags stay None so lower sources apply."""
    parser.add_argument("--config", metavar="PATH", help="TOML configuration file")
    for s in SETTINGS:
        if s.kind is bool:
            parser.add_argument(
                s.flag_name,
                dest=s.name,
                default=None,
                action=argparse.BooleanOptionalAction,
                help=f"{s.help} (env {s.env})",
            )
        else:
            parser.add_argument(
                s.flag_name,
                dest=s.name,
                default=None,
                metavar=s.kind.__name__.upper(),
                help=f"{s.help} (env {s.env}, default {s.default!r})",
            )


def load_config(
    flags: Mapping[str, Any] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    config_path: str | os.PathLike[str] | None = None,
) -> RealmConfig:
    """Merge flags > environment > TOML file > defaults into a validated RealmConfig.

    ``flags`` maps setting names to values (text from argparse, or typed values);
    ``None`` values are ignored. ``env`` defaults to ``os.environ``.
    """
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    if config_path is not None:
        for k, v in read_toml(config_path).items():
            values[k], sources[k] = v, "toml"
    for s in SETTINGS:
        if s.env in env:
            values[s.name], sources[s.name] = _from_text(s, env[s.env], f"env {s.env}"), "env"
    for k, v in (flags or {}).items():
        if v is None:
            continue
        found = _BY_NAME.get(k)
        if found is None:
            raise ConfigError(f"unknown setting {k!r}", code="unknown_key")
        s = found
        where = f"flag {s.flag_name}"
        values[k] = _from_text(s, v, where) if isinstance(v, str) else _validate(s, v, where)
        sources[k] = "flag"
    return RealmConfig(**values, sources=sources)


def config_from_args(ns: argparse.Namespace) -> RealmConfig:
    flags = {s.name: getattr(ns, s.name, None) for s in SETTINGS}
    return load_config(flags, config_path=getattr(ns, "config", None))


def sample_keys(text: str) -> list[str]:
    """Keys set in a TOML text (used by the sample-config test)."""
    return list(tomllib.loads(text))


__all__ = [
    "BUILTIN_POLICY_NAMES",
    "SETTINGS",
    "RealmConfig",
    "Setting",
    "add_arguments",
    "config_from_args",
    "load_config",
    "read_toml",
    "sample_keys",
]


def _defaults_match() -> None:  # pragma: no cover - import-time guard
    fields = {f.name: f.default for f in dataclasses.fields(RealmConfig) if f.name != "sources"}
    table = {s.name: s.default for s in SETTINGS}
    if fields != table:
        raise RuntimeError(f"RealmConfig and SETTINGS disagree: {set(fields) ^ set(table)}")


_defaults_match()
