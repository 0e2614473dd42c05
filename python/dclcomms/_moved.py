"""Old import paths of modules that moved, kept working from one table.

The package is grouped by layer (``dclcomms.auth``, ``dclcomms.archipelago``,
``dclcomms.nats``, ``dclcomms.config``, ``dclcomms.pubsub``). Code written against
the earlier flat layout keeps importing: ``import dclcomms.natsbus`` or
``from dclcomms.bus import InProcessBus`` gives the very objects of the new
modules. An old module path is a thin module whose attributes are read from
its new module on access (renamed names through :data:`NAMES`); nothing is
copied, so ``dclcomms.bus.Heartbeat is dclcomms.pubsub.Heartbeat``.

:func:`install` (called by ``dclcomms/__init__.py``) appends the finder to
``sys.meta_path``: it is asked only for names no file provides any more.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
from collections.abc import Sequence
from typing import Any

# old module -> new module
MODULES: dict[str, str] = {
    "dclcomms._auth_chain": "dclcomms.auth.chain",
    "dclcomms._auth_identity": "dclcomms.auth.identity",
    "dclcomms._auth_signed_fetch": "dclcomms.auth.signed_fetch",
    "dclcomms.archipelago_reference": "dclcomms.archipelago.reference",
    "dclcomms.archipelago_scenarios": "dclcomms.archipelago.scenarios",
    "dclcomms.realm.core": "dclcomms.archipelago.core",
    "dclcomms.bus": "dclcomms.pubsub",
    "dclcomms.natsbus": "dclcomms.nats.pubsub",
    "dclcomms.subjects": "dclcomms.nats.subjects",
    "dclcomms.nodes": "dclcomms.nats.nodes",
    "dclcomms.processes": "dclcomms.nats.processes",
}

# (old module, old name) -> (module, name) for names renamed or moved elsewhere
NAMES: dict[tuple[str, str], tuple[str, str]] = {
    ("dclcomms.bus", "Bus"): ("dclcomms.pubsub", "PubSub"),
    ("dclcomms.bus", "InProcessBus"): ("dclcomms.pubsub", "InProcessPubSub"),
    ("dclcomms.natsbus", "NatsBus"): ("dclcomms.nats.pubsub", "NatsPubSub"),
    ("dclcomms.natsbus", "BusError"): ("dclcomms.errors", "PubSubError"),
    ("dclcomms.processes", "BusError"): ("dclcomms.errors", "PubSubError"),
    # the NATS commands compose a Realm: they moved up a layer, to dclcomms.realm.cli
    **{
        (old, name): ("dclcomms.realm.cli", name)
        for old in ("dclcomms.processes", "dclcomms.nats.processes")
        for name in ("connector_main", "core_main", "stats_main", "realm_nats_main")
    },
}


def moved_name(module: str, name: str) -> Any:
    """``module.name`` for a name that moved out of a module still in place (its
    module-level ``__getattr__``); AttributeError for any other name."""
    target = NAMES.get((module, name))
    if target is None:
        raise AttributeError(f"module {module!r} has no attribute {name!r}")
    return getattr(importlib.import_module(target[0]), target[1])


class _MovedModule(types.ModuleType):
    """An old module path: every attribute is read from the new module."""

    __moved_to__: str
    __all__: list[str]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        target = NAMES.get((self.__name__, name))
        if target is not None:
            return getattr(importlib.import_module(target[0]), target[1])
        return getattr(importlib.import_module(self.__moved_to__), name)

    def __dir__(self) -> list[str]:
        new = importlib.import_module(self.__moved_to__)
        old = [n for (m, n) in NAMES if m == self.__name__]
        return sorted(set(dir(new)) | set(old))


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: types.ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MODULES:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        new_name = MODULES[spec.name]
        new = importlib.import_module(new_name)  # import errors surface here
        module = _MovedModule(spec.name, f"Moved to :mod:`{new_name}` (old import path).")
        module.__moved_to__ = new_name
        old = [n for (m, n) in NAMES if m == spec.name]
        module.__all__ = [*getattr(new, "__all__", ()), *old]
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        pass


_FINDER = _Finder()


def install() -> None:
    """Make the old paths importable (idempotent)."""
    if _FINDER not in sys.meta_path:
        sys.meta_path.append(_FINDER)
