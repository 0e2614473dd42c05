"""``dclcomms realm [flags]``: run a realm until SIGINT/SIGTERM (then exit 0).

Also the commands running its parts over NATS: ``dclcomms connector``, ``core``,
``stats`` and ``realm --nats`` (the services are :mod:`dclcomms.nats.processes`).
Configuration errors print one line ``<command>: error: <message> [<code>]`` and
exit 2, like argparse usage errors.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import secrets
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from dclcomms.config import RealmConfig, add_arguments, config_from_args
from dclcomms.errors import ConfigError, Error, SubjectError
from dclcomms.metrics import Registry
from dclcomms.nats.processes import (
    CoreService,
    StatsService,
    add_nats_arguments,
    check_core_config,
    connect_pubsub,
)
from dclcomms.nats.pubsub import NatsPubSub
from dclcomms.shutdown import stop_on_signals

log = logging.getLogger("dclcomms.realm")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dclcomms realm",
        description="Run a realm: Archipelago connector (/ws, /archipelago/ws), clustering core, "
        "WebSocket rooms (/rooms/<id>), /about, stats and /metrics on one port. Flags override "
        "environment variables, which override the --config TOML file.",
    )
    add_arguments(p)
    add_nats_arguments(p, required=False)  # --nats runs the parts over NATS
    return p


async def serve(config: RealmConfig, *, announce: bool = True) -> int:
    from dclcomms.realm.app import Realm

    realm = Realm(config)
    with stop_on_signals(realm.request_stop):
        try:
            await realm.start()
            if announce:
                print(f"dclcomms realm listening on {realm.url}", flush=True)
            await realm.wait_stopped()
        finally:
            await realm.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a == "--nats" or a.startswith("--nats=") for a in args):
        return realm_nats_main(args)  # every part, talking through NATS
    parser = build_parser()
    ns = parser.parse_args(args)
    try:
        config = config_from_args(ns)
        from dclcomms.logs import setup_logging

        setup_logging(config)
        return asyncio.run(serve(config))
    except ConfigError as e:
        print(f"dclcomms realm: error: {e} [{e.code}]", file=sys.stderr)
        return 2
    except (OSError, Error) as e:  # e.g. the port is taken
        code = f" [{e.code}]" if isinstance(e, Error) else ""
        print(f"dclcomms realm: error: cannot start: {e}{code}", file=sys.stderr)
        return 1


# --- command lines ---------------------------------------------------------------


def _parser(prog: str, description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=description)
    add_arguments(p)
    add_nats_arguments(p)
    return p


async def _run(
    parts: Callable[[], Awaitable[list[Any]]],
    pubsubs: list[NatsPubSub],
    announce: Callable[[list[Any]], str],
) -> int:
    stop = asyncio.Event()
    started: list[Any] = []
    with stop_on_signals(stop.set):
        try:
            started = await parts()
            print(announce(started), flush=True)
            await stop.wait()
        finally:
            for part in reversed(started):
                await part.stop()
            for ps in pubsubs:
                await ps.aclose()
    return 0


def _main(prog: str, description: str, argv: Sequence[str] | None, role: str) -> int:
    from dclcomms.logs import setup_logging
    from dclcomms.realm.app import Realm

    ns = _parser(prog, description).parse_args(list(sys.argv[1:] if argv is None else argv))
    pubsubs: list[NatsPubSub] = []
    # One registry for every part of this process (the embedded realm's way): each
    # part's metrics, its NATS clients' (labelled client=<connection name>) among
    # them, on the /metrics this process serves.
    registry = Registry()

    async def pubsub(name: str) -> NatsPubSub:
        ps = await connect_pubsub(ns.nats, ns.subjects, name, registry)
        pubsubs.append(ps)
        return ps

    async def parts() -> list[Any]:
        out: list[Any] = []
        connector: Any = None
        if role in ("realm", "connector"):
            # the connector first: the core's ws-room connection strings name its bound port
            connector = Realm(
                config,
                pubsub=await pubsub("dclcomms-connector"),
                run_core=False,
                registry=registry,
            )
            out.append(await connector.start())
        if role in ("core", "realm"):
            out.append(
                await CoreService(
                    config,
                    await pubsub("dclcomms-core"),
                    registry=registry,
                    http=role == "core",
                    bound_port=connector.port if connector is not None else None,
                ).start()
            )
        if role == "stats":
            out.append(
                await StatsService(
                    config, await pubsub("dclcomms-stats"), registry=registry
                ).start()
            )
        return out

    def announce(started: list[Any]) -> str:
        urls = [p.url for p in started if hasattr(p, "url")]
        where = f" listening on {', '.join(urls)}" if urls else ""
        return f"{prog} running ({ns.subjects} subjects on {', '.join(ns.nats)}){where}"

    try:
        config = config_from_args(ns)
        if role == "realm" and not config.ws_room_secret:
            # one process: the core and the connector share the generated secret
            config = config.replace(ws_room_secret=secrets.token_urlsafe(32))
        if role == "core":
            check_core_config(config)  # before connecting anywhere
        setup_logging(config)
        return asyncio.run(_run(parts, pubsubs, announce))
    except (ConfigError, SubjectError) as e:
        print(f"{prog}: error: {e} [{e.code}]", file=sys.stderr)
        return 2
    except (OSError, Error) as e:
        code = f" [{e.code}]" if isinstance(e, Error) else ""
        print(f"{prog}: error: cannot start: {e}{code}", file=sys.stderr)
        return 1


def connector_main(argv: Sequence[str] | None = None) -> int:
    return _main(
        "dclcomms connector",
        "Run a connector (WebSocket /ws, rooms, /about, stats routes, /metrics) over NATS.",
        argv,
        "connector",
    )


def core_main(argv: Sequence[str] | None = None) -> int:
    return _main("dclcomms core", "Run the archipelago clustering core over NATS.", argv, "core")


def stats_main(argv: Sequence[str] | None = None) -> int:
    return _main("dclcomms stats", "Run the stats HTTP API over NATS.", argv, "stats")


def realm_nats_main(argv: Sequence[str] | None = None) -> int:
    return _main("dclcomms realm", "Run a realm whose parts talk through NATS.", argv, "realm")
