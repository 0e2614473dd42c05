"""The comms gatekeeper (ADR-204 scene rooms; control-plane.md section 1).

Parts: :mod:`~dclcomms.gatekeeper.schema` (tables), :mod:`~dclcomms.gatekeeper.storage`
(SQLite/PostgreSQL with Alembic migrations), and the ``dclcomms gatekeeper`` command
(:mod:`~dclcomms.gatekeeper.cli`). See docs/gatekeeper.md.
"""

from __future__ import annotations

from collections.abc import Sequence

from dclcomms.gatekeeper.storage import Conflict, PlatformBan, StorageError, Store


def main(argv: Sequence[str]) -> int:
    from dclcomms.gatekeeper.cli import main as cli_main

    return cli_main(argv)


__all__ = ["Conflict", "PlatformBan", "StorageError", "Store", "main"]
