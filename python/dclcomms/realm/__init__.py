"""``dclcomms realm``: connector, archipelago core, stats and WebSocket rooms on one port.

Public API: :class:`Realm` (asyncio, ``async with Realm(config) as realm``),
:class:`ArchipelagoCore`, :class:`Connector` and the CLI entry point :func:`main`.
"""

from __future__ import annotations

from dclcomms.archipelago.core import ArchipelagoCore, TickReport
from dclcomms.logs import setup_logging
from dclcomms.realm.app import Realm
from dclcomms.realm.cli import main
from dclcomms.realm.connector import Connector

__all__ = ["ArchipelagoCore", "Connector", "Realm", "TickReport", "main", "setup_logging"]
