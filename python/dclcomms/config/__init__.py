"""Realm configuration: the settings table (:mod:`dclcomms.config.settings`), read
from flags, environment, a TOML file and defaults into a validated
:class:`RealmConfig`."""

from __future__ import annotations

from dclcomms.config.settings import (
    BUILTIN_POLICY_NAMES,
    SETTINGS,
    RealmConfig,
    Setting,
    add_arguments,
    config_from_args,
    load_config,
    read_toml,
    sample_keys,
)

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
