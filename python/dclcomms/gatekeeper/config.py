"""Gatekeeper settings (control-plane.md 1.1): flags > environment > defaults.

The environment variables are the reference gatekeeper's (``SCENE_ROOM_PREFIX``,
``LIVEKIT_HOST``, ``COMMS_GATEKEEPER_AUTH_TOKEN``, ...). ``dclcomms realm`` builds
the same object from its own settings (LiveKit, deny list, data directory) and the
environment, so the mounted gatekeeper is configured like the standalone one.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dclcomms.errors import ConfigError


@dataclass(frozen=True)
class GatekeeperConfig:
    #: SQLAlchemy/libpq URL (``postgresql://…``); "" = SQLite under ``data_dir``
    database: str = ""
    data_dir: str = ""
    scene_room_prefix: str = ""
    world_room_prefix: str = ""
    livekit_host: str = ""
    livekit_api_key: str = ""
    livekit_api_secret: str = ""
    #: the only signer allowed on /get-server-scene-adapter
    authoritative_server_address: str = ""
    #: bearer token of the service routes (platform bans)
    auth_token: str = ""
    #: public base URL behind a proxy: its path prefixes the signed PATH
    http_base_url: str = ""
    deny_list_url: str = ""
    deny_list_refresh_s: float = 300.0
    allow_local_preview: bool = False
    token_ttl_s: int = 300
    #: comma-separated wallets allowed on the platform-ban routes besides the bearer token
    moderators: str = ""
    #: static owner table (TOML); used when no HTTP resolver URL is set
    moderation_file: str = ""
    lambdas_url: str = ""
    worlds_url: str = ""
    places_url: str = ""
    resolver_timeout_s: float = 3.0
    #: signed-fetch window (authchain.md 8)
    max_age_ms: int = 60_000
    max_future_ms: int = 30_000
    #: ws(s):// base of the built-in scene rooms (no LiveKit); "" = this process' URL
    ws_room_url: str = ""
    ws_room_secret: str = ""
    commit_hash: str = ""
    #: stream links (control-plane.md 1.7)
    cast_link_days: float = 4.0
    cast_public_url: str = ""
    #: how often the moderation change counter is polled (bans written by other
    #: processes, e.g. `dclcomms gatekeeper ban`, apply within about this long)
    change_poll_ms: int = 250

    def __post_init__(self) -> None:
        if self.token_ttl_s < 10 or self.token_ttl_s > 86400:
            raise ConfigError("token_ttl_s must be within 10..86400", code="bad_value")
        if self.max_age_ms < 1000 or self.max_future_ms < 0:
            raise ConfigError("max_age_ms must be >= 1000, max_future_ms >= 0", code="bad_value")
        if not 20 <= self.change_poll_ms <= 60_000:
            raise ConfigError("change_poll_ms must be within 20..60000", code="bad_value")
        addr = self.authoritative_server_address
        if addr and not _is_address(addr):
            raise ConfigError(
                f"authoritative_server_address {addr!r} is not a 0x address", code="bad_value"
            )
        for w in self.moderator_list:
            if not _is_address(w):
                raise ConfigError(f"moderators: {w!r} is not a 0x address", code="bad_value")

    @property
    def livekit_enabled(self) -> bool:
        return bool(self.livekit_host and self.livekit_api_key and self.livekit_api_secret)

    @property
    def moderator_list(self) -> tuple[str, ...]:
        return tuple(w.strip().lower() for w in self.moderators.split(",") if w.strip())

    def replace(self, **changes: Any) -> GatekeeperConfig:
        return dataclasses.replace(self, **changes)

    def public_dict(self) -> dict[str, Any]:
        """For logs: secrets and passwords redacted."""
        from dclcomms.gatekeeper.storage import redact

        out = dataclasses.asdict(self)
        for k in ("livekit_api_secret", "auth_token", "ws_room_secret"):
            if out[k]:
                out[k] = "***"
        if out["database"]:
            out["database"] = redact(out["database"])
        return out


def _is_address(s: str) -> bool:
    return (
        len(s) == 42 and s[:2] in ("0x", "0X") and all(c in "0123456789abcdefABCDEF" for c in s[2:])
    )


# setting -> environment variable (the reference's names where it has one)
ENV: dict[str, str] = {
    "database": "GATEKEEPER_DATABASE_URL",
    "data_dir": "DCLCOMMS_DATA_DIR",
    "scene_room_prefix": "SCENE_ROOM_PREFIX",
    "world_room_prefix": "WORLD_ROOM_PREFIX",
    "livekit_host": "LIVEKIT_HOST",
    "livekit_api_key": "LIVEKIT_API_KEY",
    "livekit_api_secret": "LIVEKIT_API_SECRET",
    "authoritative_server_address": "AUTHORITATIVE_SERVER_ADDRESS",
    "auth_token": "COMMS_GATEKEEPER_AUTH_TOKEN",
    "http_base_url": "HTTP_BASE_URL",
    "deny_list_url": "DENYLIST_JSON_URL",
    "allow_local_preview": "ALLOW_LOCAL_PREVIEW",
    "moderators": "GATEKEEPER_MODERATORS",
    "moderation_file": "GATEKEEPER_MODERATION_FILE",
    "lambdas_url": "LAMBDAS_URL",
    "worlds_url": "WORLDS_CONTENT_SERVER_URL",
    "places_url": "PLACES_API_URL",
    "ws_room_url": "SCENE_ROOMS_WS_URL",
    "ws_room_secret": "WS_ROOM_SERVICE_SECRET",
    "commit_hash": "COMMIT_HASH",
    "cast_public_url": "CAST_PUBLIC_URL",
    "change_poll_ms": "GATEKEEPER_CHANGE_POLL_MS",
}


def _convert(name: str, text: str) -> Any:
    kind = type(getattr(GatekeeperConfig(), name))
    try:
        if kind is bool:
            low = text.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off", ""):
                return False
            raise ValueError
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
    except ValueError:
        raise ConfigError(
            f"{name}: expected {kind.__name__}, got {text!r}", code="bad_value"
        ) from None
    return text


def from_env(env: Mapping[str, str] | None = None, **overrides: Any) -> GatekeeperConfig:
    """Environment values, then ``overrides`` (None values ignored)."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    for name, var in ENV.items():
        if var in env:
            values[name] = _convert(name, env[var])
    values.update({k: v for k, v in overrides.items() if v is not None})
    return GatekeeperConfig(**values)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """One flag per setting (``--scene-room-prefix`` …); unset flags stay None."""
    for f in dataclasses.fields(GatekeeperConfig):
        flag = "--" + f.name.replace("_", "-")
        env = ENV.get(f.name)
        help_ = f"(env {env})" if env else ""
        if f.type in ("bool", bool):
            p.add_argument(
                flag, dest=f.name, default=None, action=argparse.BooleanOptionalAction, help=help_
            )
        else:
            p.add_argument(flag, dest=f.name, default=None, help=help_)


def config_from_args(
    ns: argparse.Namespace, env: Mapping[str, str] | None = None
) -> GatekeeperConfig:
    overrides: dict[str, Any] = {}
    for f in dataclasses.fields(GatekeeperConfig):
        v = getattr(ns, f.name, None)
        if v is None:
            continue
        overrides[f.name] = _convert(f.name, v) if isinstance(v, str) else v
    return from_env(env, **overrides)


__all__ = ["ENV", "GatekeeperConfig", "add_arguments", "config_from_args", "from_env"]
