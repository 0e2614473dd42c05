"""Realm configuration: one table of settings, four sources.

Precedence, highest first: command-line flags > environment variables (the
reference services' names, e.g. ``ARCHIPELAGO_JOIN_DISTANCE``) > a TOML file
(``--config path``, keys are the snake_case setting names) > defaults.

Parsing is strict: an unknown TOML key, a value of the wrong type, a number out
of range or an unreadable file raises :class:`dclcomms.ConfigError` with one of
the codes ``unknown_key``, ``bad_value``, ``bad_toml``, ``config_not_found`` and,
when one setting is at fault, its name in ``field``.
``SETTINGS`` is the single list of keys; ``dclcomms.sample.toml`` at the repo
root and ``docs/operations.md`` document every one (a test keeps them in sync).
A setting has one name everywhere: the TOML key, the attribute, the flag and, for
the WebSocket server's settings, the field of ``dclcomms.ws.ServerConfig``.
Older spellings still work, with a warning, from the one table :data:`ALIASES`.

Every process builds its server settings with :func:`server_config`
(``RealmConfig.server_config(role)``): the realm, ``dclcomms connector``,
``dclcomms rooms`` and the HTTP fronts of ``dclcomms core`` / ``stats``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import os
import re
import tomllib
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dclcomms.errors import ConfigError

if TYPE_CHECKING:
    from dclcomms.ws import ServerConfig

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
        "flush_interval_s",
        float,
        2.0,
        "ARCHIPELAGO_FLUSH_FREQUENCY",
        "seconds between clustering ticks (next tick max(period - elapsed, 1 ms))",
        minimum=0.001,
        maximum=3600.0,
    ),
    Setting(
        "max_island_size",
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
    Setting("id_prefix", str, "I", "ROOM_PREFIX", "island id prefix", check=_prefix_ok),
    # --- connector ----------------------------------------------------------
    Setting(
        "connector_handshake_timeout_ms",
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
        "ms between ban re-checks of every session, each asking the gatekeeper afresh (with "
        "comms_gatekeeper_url: the longest a new platform ban waits, + <= 1 s lookup)",
        minimum=1000,
    ),
    Setting(
        "gatekeeper",
        bool,
        True,
        "GATEKEEPER_ENABLED",
        "mount the comms gatekeeper (ADR-204 scene rooms, docs/gatekeeper.md) on this port; "
        "its other settings come from the gatekeeper's environment variables",
    ),
    Setting(
        "gatekeeper_database",
        str,
        "",
        "GATEKEEPER_DATABASE_URL",
        "gatekeeper database: postgresql://user[:password]@host[:port]/db or sqlite:///path; "
        "empty = SQLite file gatekeeper.sqlite3 under data_dir",
    ),
    Setting(
        "data_dir",
        str,
        "",
        "DCLCOMMS_DATA_DIR",
        "directory of the embedded database; empty = $XDG_DATA_HOME/dclcomms or "
        "~/.local/share/dclcomms",
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
        "world_bound_m",
        float,
        4096.0,
        "WORLD_BOUND_M",
        "metres: a heartbeat with |x|, |y| or |z| above this is dropped and counted, like a "
        "NaN one (Genesis City's parcels reach 2,624 m; 0 = no bound)",
        minimum=0.0,
    ),
    Setting(
        "connector_max_queued_bytes",
        int,
        1 << 20,
        "CONNECTOR_MAX_QUEUED_BYTES",
        "connector: outbound bytes queued per session above which it closes 4008",
        minimum=1024,
    ),
    # --- admission (docs/operations.md, limits and hardening) ---------------
    Setting(
        "max_connections",
        int,
        0,
        "MAX_CONNECTIONS",
        "open TCP connections served on every path; past it only /health/*, /status and "
        "/metrics are served, then 503 (0 = the fd limit minus 64)",
        minimum=0,
    ),
    Setting(
        "max_unauthenticated_per_ip",
        int,
        0,
        "MAX_UNAUTHENTICATED_PER_IP",
        "connections of one IP address that have not completed a handshake; one more gets 503 "
        "unless the address has a keep-alive HTTP connection idle between requests (that one "
        "is closed instead) (0 = max_connections / 8, at least 64)",
        minimum=0,
    ),
    Setting(
        "unauthenticated_evict_min_age_ms",
        int,
        2000,
        "UNAUTHENTICATED_EVICT_MIN_AGE_MS",
        "ms: at max_connections a new connection evicts the longest idle keep-alive HTTP "
        "connection, else the oldest one not yet authenticated if it is at least this old (a "
        "many-address flood cannot keep valid clients out)",
        minimum=0,
    ),
    Setting(
        "unauthenticated_timeout_ms",
        int,
        15000,
        "UNAUTHENTICATED_TIMEOUT",
        "ms a WebSocket session may take to authenticate, all stages together (close 4001)",
        minimum=100,
    ),
    Setting(
        "http_max_body_bytes",
        int,
        64 * 1024,
        "HTTP_MAX_BODY_BYTES",
        "largest HTTP request body (Content-Length); larger is answered 413 unread",
        minimum=0,
    ),
    Setting(
        "http_keep_alive_ms",
        int,
        5000,
        "HTTP_KEEP_ALIVE_MS",
        "ms a plain HTTP/1.1 connection is kept open after an answer for its next request "
        "(keep-alive; idle ones are the first evicted at a connection limit); 0 = every "
        "answer closes its connection",
        minimum=0,
        maximum=3_600_000,
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
        "ws_room_allow_missing_token",
        bool,
        False,
        "WS_ROOM_ALLOW_MISSING_TOKEN",
        "compatibility mode: the realm's rooms accept joins without the ?access_token= the "
        "realm minted (a token is still checked when present); default: every join needs it "
        "(close 4010)",
    ),
    Setting(
        "rooms_max_users",
        int,
        100,
        "ROOMS_MAX_USERS",
        "members per WebSocket room (then close 4007)",
        minimum=1,
    ),
    Setting(
        "rooms_handshake_timeout_ms",
        int,
        10000,
        "ROOMS_HANDSHAKE_TIMEOUT_MS",
        "rooms: ms allowed per handshake stage (close 4001)",
        minimum=100,
    ),
    Setting(
        "rooms_soft_limit_bytes",
        int,
        64 * 1024,
        "ROOMS_SOFT_LIMIT_BYTES",
        "rooms: queued bytes per receiver above which unreliable updates are dropped",
        minimum=1024,
    ),
    Setting(
        "rooms_hard_limit_bytes",
        int,
        1 << 20,
        "ROOMS_HARD_LIMIT_BYTES",
        "rooms: queued bytes per receiver above which it is closed 4008",
        minimum=1024,
    ),
    Setting(
        "rooms_sender_max_msgs_per_s",
        int,
        0,
        "ROOMS_SENDER_MAX_MSGS_PER_S",
        "rooms: sender token bucket, messages/s (0 = off); over it unreliable updates are "
        "dropped, a reliable one closes the sender 4009",
        minimum=0,
    ),
    Setting(
        "rooms_sender_max_bytes_per_s",
        int,
        0,
        "ROOMS_SENDER_MAX_BYTES_PER_S",
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
        "transport_node_interval_s",
        float,
        10.0,
        "TRANSPORT_NODE_INTERVAL",
        "seconds between a transport node's announcements (dclcomms rooms sends them, the "
        "core expects them)",
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
    # --- third-party server bridge (/bridge) --------------------------------
    Setting(
        "bridge",
        bool,
        False,
        "BRIDGE_ENABLED",
        "serve the third-party server bridge WebSocket /bridge (control-plane.md 5, "
        "docs/bridge.md)",
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
    # --- live map (/map, /map/feed) ----------------------------------------------
    Setting(
        "map_feed",
        bool,
        True,
        "MAP_FEED",
        "serve the live island map page /map and its WebSocket feed /map/feed (docs/map.md)",
    ),
    Setting(
        "map_feed_max_pages",
        int,
        32,
        "MAP_FEED_MAX_PAGES",
        "map pages open at once; one more is closed 1013",
        minimum=0,
        maximum=100000,
    ),
    Setting(
        "map_feed_max_queued_bytes",
        int,
        1 << 20,
        "MAP_FEED_MAX_QUEUED_BYTES",
        "bytes queued to a map page above which its frames are skipped (it resyncs from the "
        "next key frame)",
        minimum=1024,
    ),
    Setting(
        "map_feed_max_skipped",
        int,
        30,
        "MAP_FEED_MAX_SKIPPED",
        "frames skipped for a map page without it taking a delta in between that close it 4008",
        minimum=1,
        maximum=100000,
    ),
    Setting(
        "map_replay_ticks",
        int,
        300,
        "MAP_REPLAY_TICKS",
        "core ticks kept in memory for the map's replay (/map/replay.json)",
        minimum=1,
        maximum=1000000,
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


class DeprecatedSettingWarning(FutureWarning):
    """An old spelling of a setting was used; it still works (see :data:`ALIASES`)."""


@dataclass(frozen=True)
class Alias:
    """A deprecated spelling of a setting, still accepted.

    ``kind``: ``"key"`` is an old setting name, accepted as a TOML key, a keyword
    (``RealmConfig(...)``, ``load_config(flags)``, ``replace``), an attribute and a
    ``--flag`` of the realm commands; ``"env"`` an old environment variable; ``"flag"``
    an old flag of one ``command`` only (``dclcomms rooms``). Using one warns once per
    process (:class:`DeprecatedSettingWarning`, a ``FutureWarning``: shown to operators).
    """

    old: str
    new: str
    kind: str  # "key" | "env" | "flag"
    command: str | None = None

    @property
    def flag_name(self) -> str:
        return self.old if self.kind == "flag" else "--" + self.old.replace("_", "-")


#: Every deprecated spelling, in one table (docs/operations.md lists them).
ALIASES: tuple[Alias, ...] = (
    # setting names that drifted from the server's and the engine's (one name everywhere)
    Alias("handshake_timeout_ms", "connector_handshake_timeout_ms", "key"),
    Alias("island_size", "max_island_size", "key"),
    Alias("room_prefix", "id_prefix", "key"),
    Alias("ws_room_max_users", "rooms_max_users", "key"),
    Alias("ws_room_handshake_timeout_ms", "rooms_handshake_timeout_ms", "key"),
    Alias("ws_room_soft_limit_bytes", "rooms_soft_limit_bytes", "key"),
    Alias("ws_room_hard_limit_bytes", "rooms_hard_limit_bytes", "key"),
    Alias("ws_room_sender_max_msgs_per_s", "rooms_sender_max_msgs_per_s", "key"),
    Alias("ws_room_sender_max_bytes_per_s", "rooms_sender_max_bytes_per_s", "key"),
    Alias("flush_interval", "flush_interval_s", "key"),  # the core's and /status' name
    Alias("transport_node_interval", "transport_node_interval_s", "key"),  # seconds, as flush's
    # their environment variables (the reference services' names are kept as they are)
    Alias("WS_ROOM_MAX_USERS", "rooms_max_users", "env"),
    Alias("WS_ROOM_HANDSHAKE_TIMEOUT", "rooms_handshake_timeout_ms", "env"),
    Alias("WS_ROOM_SOFT_LIMIT_BYTES", "rooms_soft_limit_bytes", "env"),
    Alias("WS_ROOM_HARD_LIMIT_BYTES", "rooms_hard_limit_bytes", "env"),
    Alias("WS_ROOM_SENDER_MAX_MSGS_PER_S", "rooms_sender_max_msgs_per_s", "env"),
    Alias("WS_ROOM_SENDER_MAX_BYTES_PER_S", "rooms_sender_max_bytes_per_s", "env"),
    # the flags ``dclcomms rooms`` had before it read the settings table
    Alias("--max-users", "rooms_max_users", "flag", "rooms"),
    Alias("--handshake-timeout-ms", "rooms_handshake_timeout_ms", "flag", "rooms"),
    Alias("--secret", "ws_room_secret", "flag", "rooms"),
    Alias("--require-token", "ws_room_require_token", "flag", "rooms"),
    Alias("--sender-max-msgs-per-s", "rooms_sender_max_msgs_per_s", "flag", "rooms"),
    Alias("--sender-max-bytes-per-s", "rooms_sender_max_bytes_per_s", "flag", "rooms"),
    Alias("--announce-interval", "transport_node_interval_s", "flag", "rooms"),
    Alias("--transport-node-interval", "transport_node_interval_s", "flag", "rooms"),
)

_KEY_ALIASES = {a.old: a for a in ALIASES if a.kind == "key"}
_ENV_ALIASES = tuple(a for a in ALIASES if a.kind == "env")
_warned: set[tuple[str, str]] = set()


def _deprecated(alias: Alias, where: str) -> None:
    """Warn once per process that ``alias`` was used (``where``: key, env, flag, keyword)."""
    if (alias.kind, alias.old) in _warned:
        return
    _warned.add((alias.kind, alias.old))
    new = _BY_NAME[alias.new]
    label, spelled = {
        "env": ("environment variable", new.env),
        "flag": ("flag", new.flag_name),
        "toml": ("config key", new.name),
    }.get(where, ("keyword", new.name))
    warnings.warn(
        f"{label} {alias.flag_name if where == 'flag' else alias.old!r} is deprecated: "
        f"use {spelled} (docs/operations.md)",
        DeprecatedSettingWarning,
        stacklevel=4,  # RealmConfig(old=...): the caller's line
    )


def _renamed(values: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``values`` with old setting names (key aliases) replaced by the current ones."""
    out: dict[str, Any] = {}
    for k, v in values.items():
        alias = _KEY_ALIASES.get(k)
        if alias is None:
            out[k] = v
            continue
        _deprecated(alias, where)
        if alias.new in values:
            raise ConfigError(
                f"{alias.old} is the old name of {alias.new}: give one of them",
                code="bad_value",
                field=alias.new,
            )
        out[alias.new] = v
    return out


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
    flush_interval_s: float = 2.0
    max_island_size: int = 100
    heartbeat_timeout_ms: int = 60000
    discovery_interval_ms: int = 10000
    id_prefix: str = "I"
    connector_handshake_timeout_ms: int = 60000
    auth_threads: int = 1
    deny_list_url: str = ""
    deny_list_refresh_s: float = 300.0
    comms_gatekeeper_url: str = ""
    ban_sweep_interval_ms: int = 30000
    gatekeeper: bool = True
    gatekeeper_database: str = ""
    data_dir: str = ""
    heartbeat_max_per_s: int = 10
    world_bound_m: float = 4096.0
    connector_max_queued_bytes: int = 1 << 20
    max_connections: int = 0
    max_unauthenticated_per_ip: int = 0
    unauthenticated_evict_min_age_ms: int = 2000
    unauthenticated_timeout_ms: int = 15000
    http_max_body_bytes: int = 64 * 1024
    http_keep_alive_ms: int = 5000
    livekit_host: str = ""
    livekit_api_key: str = ""
    livekit_api_secret: str = ""
    island_token_ttl_s: int = 300
    ws_room_url: str = ""
    ws_room_secret: str = ""
    ws_room_require_token: bool = False
    ws_room_allow_missing_token: bool = False
    rooms_max_users: int = 100
    rooms_handshake_timeout_ms: int = 10000
    rooms_soft_limit_bytes: int = 64 * 1024
    rooms_hard_limit_bytes: int = 1 << 20
    rooms_sender_max_msgs_per_s: int = 0
    rooms_sender_max_bytes_per_s: int = 0
    fixed_adapter: str = ""
    policy: str = ""
    p2p_max_island_size: int = 16
    tiered_p2p_up_at: int = 7
    tiered_p2p_down_at: int = 4
    tiered_livekit_up_at: int = 50
    tiered_livekit_down_at: int = 30
    transport_node_interval_s: float = 10.0
    transport_node_missed: int = 3
    bus: bool = True
    bus_global_topics: str = ""
    bus_max_frames_per_s: int = 50
    bus_queue: int = 50
    p2p_signal_max_per_s: float = 10.0
    p2p_signal_burst: int = 40
    bridge: bool = False
    hot_scenes_cache_s: float = 60.0
    map_feed: bool = True
    map_feed_max_pages: int = 32
    map_feed_max_queued_bytes: int = 1 << 20
    map_feed_max_skipped: int = 30
    map_replay_ticks: int = 300
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
                field="leave_distance",
            )
        if self.rooms_hard_limit_bytes < self.rooms_soft_limit_bytes:
            raise ConfigError(
                "rooms_hard_limit_bytes must be >= rooms_soft_limit_bytes",
                code="bad_value",
                field="rooms_hard_limit_bytes",
            )
        if not (
            self.tiered_p2p_down_at < self.tiered_p2p_up_at <= self.tiered_livekit_up_at
            and self.tiered_livekit_down_at < self.tiered_livekit_up_at
        ):
            raise ConfigError(
                "tiered policy thresholds need tiered_p2p_down_at < tiered_p2p_up_at <= "
                "tiered_livekit_up_at and tiered_livekit_down_at < tiered_livekit_up_at",
                code="bad_value",
                field=_first_bad_threshold(self),
            )

    @property
    def bus_global_topic_list(self) -> tuple[str, ...]:
        """``bus_global_topics`` split into its topics."""
        return _topic_list(self.bus_global_topics)

    @property
    def livekit_enabled(self) -> bool:
        return bool(self.livekit_host and self.livekit_api_key and self.livekit_api_secret)

    def replace(self, **changes: Any) -> RealmConfig:
        return dataclasses.replace(self, **_renamed(changes, "keyword"))

    def server_config(
        self, role: str = "realm", *, ws_room_secret: str | None = None
    ) -> ServerConfig:
        """The :class:`dclcomms.ws.ServerConfig` of a process of this realm (one builder).

        ``role``: ``"realm"`` (the realm and ``dclcomms connector``: connector, rooms and,
        per ``bus``, /bus), ``"rooms"`` (``dclcomms rooms``) or ``"http"`` (the plain HTTP
        front of ``dclcomms core`` / ``stats``); see :data:`SERVER_ROLES`. Every server
        field that is also a setting is copied by name, so a server limit added to
        ``DCLCOMMS_WS_CONFIG`` and to :data:`SETTINGS` needs no edit here.
        ``ws_room_secret`` overrides the setting (the realm's generated secret).
        """
        return server_config(self, role, ws_room_secret=ws_room_secret)

    def public_dict(self) -> dict[str, Any]:
        """Settings for logs: secrets redacted."""
        out: dict[str, Any] = {}
        for s in SETTINGS:
            v = getattr(self, s.name)
            out[s.name] = "***" if ("secret" in s.name and v) else v
        if self.gatekeeper_database:
            from dclcomms.gatekeeper.storage import redact

            out["gatekeeper_database"] = redact(self.gatekeeper_database)
        return out


#: The server fields each kind of process fixes; every other server field that is a
#: setting comes from the configuration (:func:`server_config`).
SERVER_ROLES: dict[str, dict[str, Any]] = {
    "realm": {"connector": True, "rooms": True},
    "rooms": {"connector": False, "rooms": True, "bus": False, "bridge": False, "map_feed": False},
    "http": {
        "connector": False,
        "rooms": False,
        "bus": False,
        "bridge": False,
        "io_threads": 1,
        "auth_threads": 1,
        "ws_room_secret": None,
    },
}


def server_config(
    config: RealmConfig, role: str = "realm", *, ws_room_secret: str | None = None
) -> ServerConfig:
    """The one builder of a process's server settings (see :meth:`RealmConfig.server_config`)."""
    import dclcomms
    from dclcomms import ws

    fixed = SERVER_ROLES.get(role)
    if fixed is None:
        raise ConfigError(
            f"unknown server role {role!r}; one of {', '.join(SERVER_ROLES)}",
            code="bad_value",
            field="role",
        )
    values = {
        name: getattr(config, name) for name, *_ in ws.ServerConfig.fields() if name in _BY_NAME
    }
    values["ws_room_secret"] = (
        config.ws_room_secret if ws_room_secret is None else ws_room_secret
    ) or None
    values.update(fixed)
    # the gatekeeper mounted in the realm serves its built-in scene rooms on this server
    values["scene_rooms"] = role == "realm" and config.gatekeeper
    if role == "realm" and not config.ws_room_allow_missing_token:
        # the realm mints every island's token (its secret, generated when unset): an
        # upgrade to its rooms without one is an eavesdropper
        values["ws_room_require_token"] = True
    if values["rooms"] and values["ws_room_require_token"] and not values["ws_room_secret"]:
        raise ConfigError(
            "ws_room_require_token needs ws_room_secret (--ws-room-secret or "
            "WS_ROOM_SERVICE_SECRET)",
            code="bad_value",
            field="ws_room_require_token",
        )
    return ws.ServerConfig(version=dclcomms.__version__, commit_hash=config.commit_hash, **values)


def _first_bad_threshold(c: RealmConfig) -> str:
    """The tiered threshold named by the error: the first one out of order."""
    if not c.tiered_p2p_down_at < c.tiered_p2p_up_at:
        return "tiered_p2p_down_at"
    if not c.tiered_p2p_up_at <= c.tiered_livekit_up_at:
        return "tiered_p2p_up_at"
    return "tiered_livekit_down_at"


def _old_attribute(alias: Alias) -> property:
    def get(self: RealmConfig) -> Any:
        _deprecated(alias, "keyword")
        return getattr(self, alias.new)

    return property(get, doc=f"Deprecated name of :attr:`{alias.new}`.")


def _init_accepting_old_names(init: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(init)
    def __init__(self: RealmConfig, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **_renamed(kwargs, "keyword"))

    return __init__


# Old setting names keep working on RealmConfig too: as keywords and attributes.
setattr(RealmConfig, "__init__", _init_accepting_old_names(RealmConfig.__init__))  # noqa: B010
for _alias in _KEY_ALIASES.values():
    setattr(RealmConfig, _alias.old, _old_attribute(_alias))


def _validate(s: Setting, value: Any, where: str) -> Any:
    def bad(why: str) -> ConfigError:
        return ConfigError(
            f"{s.name} ({where}): {why}, got {value!r}", code="bad_value", field=s.name
        )

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

    def bound(x: float) -> str:  # 3600000, not 3.6e+06
        return str(int(x)) if s.kind is int else f"{x:g}"

    if s.minimum is not None and value < s.minimum:
        raise bad(f"must be >= {bound(s.minimum)}")
    if s.maximum is not None and value > s.maximum:
        raise bad(f"must be <= {bound(s.maximum)}")
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
            f"{s.name} ({where}): expected {s.kind.__name__}, got {text!r}",
            code="bad_value",
            field=s.name,
        ) from None
    return _validate(s, value, where)


def read_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Validated values of a TOML file (only the keys it sets; old key names renamed)."""
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
    for key in data:
        if key not in _BY_NAME and key not in _KEY_ALIASES:
            raise ConfigError(f"{p}: unknown key {key!r}", code="unknown_key", field=key)
    for key, value in _renamed(data, "toml").items():
        out[key] = _validate(_BY_NAME[key], value, str(p))
    return out


def _flag_aliases(command: str, names: set[str]) -> list[Alias]:
    """The deprecated flags a command accepts: its own, then old setting names."""
    own = [a for a in ALIASES if a.kind == "flag" and a.command == command and a.new in names]
    taken = {a.flag_name for a in own}
    olds = [
        a
        for a in ALIASES
        if a.kind == "key" and a.new in names and a.flag_name not in taken and command != "rooms"
    ]
    return own + olds


def _alias_dest(alias: Alias) -> str:
    """Where argparse keeps a deprecated flag: one per alias (two aliases may share a flag
    spelling in different commands, e.g. ``--handshake-timeout-ms``)."""
    return f"deprecated:{alias.kind}:{alias.old}"


def add_arguments(
    parser: argparse.ArgumentParser,
    *,
    command: str = "realm",
    only: Iterable[str] | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> None:
    """One flag per setting (``only``: a subset); unset flags stay None so lower sources apply.

    ``command`` selects the deprecated flags accepted besides (:data:`ALIASES`); ``defaults``
    are the command's own defaults shown in the help (pass them to :func:`config_from_args`).
    """
    shown = {s.name: s.default for s in SETTINGS} | dict(defaults or {})
    parser.add_argument("--config", metavar="PATH", help="TOML configuration file")
    chosen = [s for s in SETTINGS if only is None or s.name in set(only)]
    for s in chosen:
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
                help=f"{s.help} (env {s.env}, default {shown[s.name]!r})",
            )
    for a in _flag_aliases(command, {s.name for s in chosen}):
        kind = _BY_NAME[a.new].kind
        extra: dict[str, Any] = (
            {"action": argparse.BooleanOptionalAction}
            if kind is bool
            else {"metavar": kind.__name__.upper()}
        )
        parser.add_argument(
            a.flag_name, dest=_alias_dest(a), default=None, help=argparse.SUPPRESS, **extra
        )


def load_config(
    flags: Mapping[str, Any] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    config_path: str | os.PathLike[str] | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> RealmConfig:
    """Merge flags > environment > TOML file > ``defaults`` > built-in defaults.

    ``flags`` maps setting names to values (text from argparse, or typed values);
    ``None`` values are ignored. ``env`` defaults to ``os.environ``. ``defaults``: a
    command's own defaults (``dclcomms rooms`` listens on 127.0.0.1). Old names and
    environment variables (:data:`ALIASES`) are accepted with a warning.
    """
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for k, v in (defaults or {}).items():
        values[k] = _validate(_BY_NAME[k], v, "default")
    if config_path is not None:
        for k, v in read_toml(config_path).items():
            values[k], sources[k] = v, "toml"
    for a in _ENV_ALIASES:
        s = _BY_NAME[a.new]
        if a.old in env and s.env not in env:
            _deprecated(a, "env")
            values[s.name] = _from_text(s, env[a.old], f"env {a.old}")
            sources[s.name] = "env"
    for s in SETTINGS:
        if s.env in env:
            values[s.name], sources[s.name] = _from_text(s, env[s.env], f"env {s.env}"), "env"
    given = {k: v for k, v in (flags or {}).items() if v is not None}
    for k in given:
        if k not in _BY_NAME and k not in _KEY_ALIASES:
            raise ConfigError(f"unknown setting {k!r}", code="unknown_key", field=k)
    for k, v in _renamed(given, "flag").items():
        s = _BY_NAME[k]
        where = f"flag {s.flag_name}"
        values[k] = _from_text(s, v, where) if isinstance(v, str) else _validate(s, v, where)
        sources[k] = "flag"
    return RealmConfig(**values, sources=sources)


def config_from_args(
    ns: argparse.Namespace, *, defaults: Mapping[str, Any] | None = None
) -> RealmConfig:
    """The configuration of parsed flags (:func:`add_arguments`), env and ``--config``."""
    flags: dict[str, Any] = {}
    for a in ALIASES:  # deprecated flags first: the current one wins when both are given
        v = getattr(ns, _alias_dest(a), None) if a.kind in ("flag", "key") else None
        if v is not None:
            _deprecated(a, "flag")
            flags[a.new] = v
    for s in SETTINGS:
        v = getattr(ns, s.name, None)
        if v is not None:
            flags[s.name] = v
    return load_config(flags, config_path=getattr(ns, "config", None), defaults=defaults)


def sample_keys(text: str) -> list[str]:
    """Keys set in a TOML text (used by the sample-config test)."""
    return list(tomllib.loads(text))


__all__ = [
    "ALIASES",
    "BUILTIN_POLICY_NAMES",
    "SERVER_ROLES",
    "SETTINGS",
    "Alias",
    "DeprecatedSettingWarning",
    "RealmConfig",
    "Setting",
    "add_arguments",
    "config_from_args",
    "load_config",
    "read_toml",
    "sample_keys",
    "server_config",
]


def _defaults_match() -> None:  # pragma: no cover - import-time guard
    fields = {f.name: f.default for f in dataclasses.fields(RealmConfig) if f.name != "sources"}
    table = {s.name: s.default for s in SETTINGS}
    if fields != table:
        raise RuntimeError(f"RealmConfig and SETTINGS disagree: {set(fields) ^ set(table)}")


_defaults_match()
