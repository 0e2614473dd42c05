"""Realm configuration: the settings table (:mod:`dclcomms.config.settings`), read
from flags, environment, a TOML file and defaults into a validated
:class:`RealmConfig`, which builds every process's server settings
(:meth:`RealmConfig.server_config`)."""

from __future__ import annotations

from dclcomms.config.settings import (
    ALIASES,
    BUILTIN_POLICY_NAMES,
    SERVER_ROLES,
    SETTINGS,
    Alias,
    DeprecatedSettingWarning,
    RealmConfig,
    Setting,
    add_arguments,
    config_from_args,
    load_config,
    read_toml,
    sample_keys,
    server_config,
)

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
