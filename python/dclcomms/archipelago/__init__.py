"""Archipelago: island clustering and the service that publishes islands.

* :mod:`dclcomms.archipelago.engine` - :class:`Engine`, the clustering engine
  (C++ ``converge`` mode, spec archipelago.md §2.6), re-exported here;
* :mod:`dclcomms.archipelago.reference` - the reference algorithm of §2.3
  (``Engine(mode="reference")``);
* :mod:`dclcomms.archipelago.scenarios` - replay of the conformance scenario files;
* :mod:`dclcomms.archipelago.core` - :class:`ArchipelagoCore`, the engine + policy
  + pub/sub service that ticks and publishes island updates (imported on first use:
  it needs the policy layer, the engine does not).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dclcomms.archipelago.engine import (
    UNSET,
    Engine,
    Island,
    IslandChange,
    Snapshot,
    Unset,
    monotonic_ms,
)

if TYPE_CHECKING:
    from dclcomms.archipelago.core import ArchipelagoCore, TickReport

_LAZY = {"ArchipelagoCore", "TickReport"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from dclcomms.archipelago import core

        return getattr(core, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "UNSET",
    "ArchipelagoCore",
    "Engine",
    "Island",
    "IslandChange",
    "Snapshot",
    "TickReport",
    "Unset",
    "monotonic_ms",
]
