"""``dclcomms realm [flags]``: run a realm until SIGINT/SIGTERM (then exit 0).

Configuration errors print one line ``dclcomms realm: error: <message> [<code>]``
and exit 2, like argparse usage errors.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

from dclcomms.config import RealmConfig, add_arguments, config_from_args
from dclcomms.errors import ConfigError, Error

log = logging.getLogger("dclcomms.realm")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dclcomms realm",
        description="Run a realm: Archipelago connector (/ws, /archipelago/ws), clustering core, "
        "WebSocket rooms (/rooms/<id>), /about, stats and /metrics on one port. Flags override "
        "environment variables, which override the --config TOML file.",
    )
    add_arguments(p)
    from dclcomms.nats.processes import add_nats_arguments  # --nats runs the parts over NATS

    add_nats_arguments(p, required=False)
    return p


async def serve(config: RealmConfig, *, announce: bool = True) -> int:
    from dclcomms.realm.app import Realm

    realm = Realm(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, realm.request_stop)
    try:
        await realm.start()
        if announce:
            print(f"dclcomms realm listening on {realm.url}", flush=True)
        await realm.wait_stopped()
    finally:
        await realm.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a == "--nats" or a.startswith("--nats=") for a in args):
        from dclcomms.nats.processes import realm_nats_main  # every part, talking through NATS

        return realm_nats_main(args)
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
