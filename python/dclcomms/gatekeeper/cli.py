"""``dclcomms gatekeeper``: the gatekeeper's operator commands.

``dclcomms gatekeeper migrate [--database URL | --data-dir DIR] [--revision REV] [--current]``
brings the database to the newest revision (or the given one) and prints where it
ends as JSON. Errors print ``dclcomms gatekeeper: error: <message> [<code>]`` and
exit 2 (configuration) or 1 (the database).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from dclcomms.errors import ConfigError


def _db_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--database",
        default=os.environ.get("GATEKEEPER_DATABASE_URL") or None,
        metavar="URL",
        help="postgresql://user[:password]@host[:port]/db or sqlite:///path "
        "(env GATEKEEPER_DATABASE_URL; default: SQLite under --data-dir)",
    )
    p.add_argument(
        "--data-dir",
        default=None,
        metavar="DIR",
        help="directory of the default SQLite file gatekeeper.sqlite3 (env DCLCOMMS_DATA_DIR, "
        "default $XDG_DATA_HOME/dclcomms or ~/.local/share/dclcomms)",
    )


def _migrate(ns: argparse.Namespace) -> int:
    from dclcomms.gatekeeper import storage

    url = storage.database_url(ns.database, ns.data_dir)
    engine = storage.create_engine(url)
    try:
        before = storage.current_revision(engine)
        after = before if ns.current else storage.migrate(engine, ns.revision)
    finally:
        engine.dispose()
    print(
        json.dumps(
            {
                "database": storage.redact(url),
                "from": before,
                "to": after,
                "head": storage.head_revision(),
            }
        )
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dclcomms gatekeeper",
        description="The comms gatekeeper (ADR-204 scene rooms): operator commands.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    m = sub.add_parser("migrate", help="upgrade the database schema (Alembic revisions)")
    _db_arguments(m)
    m.add_argument("--revision", default="head", help="target revision (default: head)")
    m.add_argument("--current", action="store_true", help="only print the current revision")
    m.set_defaults(run=_migrate)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    ns = build_parser().parse_args(args)
    try:
        rc: int = ns.run(ns)
        return rc
    except ConfigError as e:
        print(f"dclcomms gatekeeper: error: {e} [{e.code}]", file=sys.stderr)
        return 2
    except Exception as e:  # the database: unreachable, refused, failed revision
        import sqlalchemy as sa

        if not isinstance(e, sa.exc.SQLAlchemyError):
            raise
        print(f"dclcomms gatekeeper: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
