"""``dclcomms gatekeeper``: run the gatekeeper, or its operator commands.

``dclcomms gatekeeper [--host H] [--port P] [settings]`` serves every route on one
port (plus ``/scene-rooms/<room>`` WebSocket rooms when LiveKit is not configured)
until SIGINT/SIGTERM, then exits 0.

``dclcomms gatekeeper migrate [--database URL | --data-dir DIR] [--revision REV] [--current]``
brings the database to the newest revision (or the given one) and prints where it
ends as JSON. ``ban ADDRESS --reason R [--duration-ms N] [--message M]``, ``unban
ADDRESS``, ``bans``, ``admins list|add|remove [ADDRESS] --place P`` and ``scene-bans
list|add|remove [ADDRESS] --place P`` edit the rows directly; a running gatekeeper (or
realm) on the same database sees the change within ``change_poll_ms`` (database
triggers bump a change counter it polls) and kicks the newly banned at once. Errors
print ``dclcomms gatekeeper: error: <message> [<code>]`` and
exit 2 (configuration) or 1 (the database).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

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


def _address(text: str) -> str:
    if len(text) != 42 or not text.lower().startswith("0x"):
        raise ConfigError(f"{text!r} is not a 0x address", code="bad_value")
    try:
        int(text[2:], 16)
    except ValueError:
        raise ConfigError(f"{text!r} is not a 0x address", code="bad_value") from None
    return text.lower()


def _open(ns: argparse.Namespace) -> Any:
    from dclcomms.gatekeeper.storage import Store

    return Store.open(ns.database, data_dir=ns.data_dir)


def _ban(ns: argparse.Namespace) -> int:
    from dclcomms.gatekeeper.storage import Conflict

    address = _address(ns.address)
    store = _open(ns)
    try:
        ban = store.add_platform_ban(
            address,
            banned_by=ns.by,
            reason=ns.reason,
            duration_ms=ns.duration_ms,
            custom_message=ns.message,
        )
    except Conflict:
        print(
            f"dclcomms gatekeeper: error: {address} is already banned [already_banned]",
            file=sys.stderr,
        )
        return 1
    finally:
        store.close()
    print(json.dumps(ban.to_json()))
    return 0


def _unban(ns: argparse.Namespace) -> int:
    address = _address(ns.address)
    store = _open(ns)
    try:
        lifted = store.lift_platform_ban(address, lifted_by=ns.by)
    finally:
        store.close()
    print(json.dumps({"address": address, "lifted": lifted}))
    return 0 if lifted else 1


def _bans(ns: argparse.Namespace) -> int:
    store = _open(ns)
    try:
        print(json.dumps([b.to_json() for b in store.platform_bans()]))
    finally:
        store.close()
    return 0


def _place_entries(
    ns: argparse.Namespace,
    key: str,
    rows: Callable[[Any], list[dict[str, Any]]],
    add: Callable[[Any, str], bool],
    remove: Callable[[Any, str], bool],
) -> int:
    """``admins`` / ``scene-bans``: ``list`` prints the place's entries (``rows``); ``add``
    and ``remove`` change ADDRESS's and print ``{"place", key: address, "changed"}``
    (exit 1 when nothing changed)."""
    store = _open(ns)
    try:
        if ns.action == "list":
            print(json.dumps(rows(store)))
            return 0
        if ns.address is None:
            raise ConfigError(f"{ns.command} {ns.action} needs an ADDRESS", code="bad_value")
        address = _address(ns.address)
        changed = (add if ns.action == "add" else remove)(store, address)
    finally:
        store.close()
    print(json.dumps({"place": ns.place, key: address, "changed": changed}))
    return 0 if changed else 1


def _admins(ns: argparse.Namespace) -> int:
    return _place_entries(
        ns,
        "admin",
        rows=lambda store: [
            {"admin": a.admin, "addedBy": a.added_by, "createdAt": a.created_at}
            for a in store.scene_admins(ns.place)
        ],
        add=lambda store, address: store.add_scene_admin(ns.place, address, added_by=ns.by),
        remove=lambda store, address: store.remove_scene_admin(ns.place, address),
    )


def _scene_bans(ns: argparse.Namespace) -> int:
    return _place_entries(
        ns,
        "bannedAddress",
        rows=lambda store: [
            {"bannedAddress": b.banned_address, "bannedBy": b.banned_by, "bannedAt": b.banned_at}
            for b in store.scene_bans(ns.place, limit=1_000_000)[0]
        ],
        add=lambda store, address: store.add_scene_ban(ns.place, address, banned_by=ns.by),
        remove=lambda store, address: store.remove_scene_ban(ns.place, address),
    )


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
    b = sub.add_parser("ban", help="ban a wallet from the platform (running realms kick it)")
    _db_arguments(b)
    b.add_argument("address")
    b.add_argument("--reason", required=True)
    b.add_argument("--duration-ms", type=int, default=None, help="default: until lifted")
    b.add_argument("--message", default=None, help="custom message shown to the user")
    b.add_argument("--by", default="operator", help="who bans (recorded)")
    b.set_defaults(run=_ban)
    u = sub.add_parser("unban", help="lift a wallet's platform ban")
    _db_arguments(u)
    u.add_argument("address")
    u.add_argument("--by", default="operator")
    u.set_defaults(run=_unban)
    bl = sub.add_parser("bans", help="list the active platform bans (JSON)")
    _db_arguments(bl)
    bl.set_defaults(run=_bans)
    for name, noun, verb, run in (
        ("admins", "admins", "adds", _admins),
        ("scene-bans", "bans", "bans", _scene_bans),
    ):
        a = sub.add_parser(name, help=f"list, add or remove the {noun} of a scene's place")
        _db_arguments(a)
        a.add_argument("action", choices=("list", "add", "remove"))
        a.add_argument("--place", required=True, help="place id (the scene id without a resolver)")
        a.add_argument("address", nargs="?")
        a.add_argument("--by", default="0x" + "0" * 40, help=f"who {verb} (recorded)")
        a.set_defaults(run=run)
    return p


def build_serve_parser() -> argparse.ArgumentParser:
    from dclcomms.gatekeeper.config import add_arguments

    p = argparse.ArgumentParser(
        prog="dclcomms gatekeeper",
        description="Run the comms gatekeeper (ADR-204 scene rooms; control-plane.md 1). "
        "Operator commands: dclcomms gatekeeper migrate|ban|unban|admins --help. Flags "
        "override environment variables.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=5001, help="TCP port, 0 = a free one (default 5001)")
    p.add_argument("--log-level", default="INFO")
    p.add_argument("--log-format", default="json", choices=("json", "text"))
    add_arguments(p)
    return p


async def _serve(ns: argparse.Namespace) -> int:
    from dclcomms.gatekeeper.config import config_from_args
    from dclcomms.gatekeeper.server import GatekeeperServer
    from dclcomms.shutdown import stop_on_signals

    config = config_from_args(ns)
    gk = GatekeeperServer(config, host=ns.host, port=ns.port)
    with stop_on_signals(gk.request_stop):
        try:
            await gk.start()
            print(f"dclcomms gatekeeper listening on {gk.url}", flush=True)
            await gk.wait_stopped()
        finally:
            await gk.stop()
    return 0


def _setup_logging(level: str, fmt: str) -> None:
    import logging

    from dclcomms.logs import JsonFormatter

    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    root = logging.getLogger("dclcomms")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


SUBCOMMANDS = ("migrate", "ban", "unban", "bans", "admins", "scene-bans")


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in SUBCOMMANDS:
        import asyncio

        sns = build_serve_parser().parse_args(args)
        from dclcomms.gatekeeper.storage import StorageError

        try:
            _setup_logging(sns.log_level, sns.log_format)
            return asyncio.run(_serve(sns))
        except StorageError as e:  # the database: unreachable, not migrated
            print(f"dclcomms gatekeeper: error: {e} [{e.code}]", file=sys.stderr)
            return 1
        except ConfigError as e:
            print(f"dclcomms gatekeeper: error: {e} [{e.code}]", file=sys.stderr)
            return 2
        except OSError as e:
            print(f"dclcomms gatekeeper: error: cannot start: {e}", file=sys.stderr)
            return 1
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
