"""The ``dclcomms`` command line.

Each subcommand lives next to the code it runs; this module only maps names to
``module:function`` entry points taking the parsed-argument list, so importing
the CLI stays cheap and areas stay independent.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from collections.abc import Callable, Sequence

# name -> (entry point "module:function", one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "codec-demo": ("dclcomms.codec:demo_main", "encode and decode the wire conformance messages"),
    "auth-verify": ("dclcomms.auth:verify_main", "verify an auth chain (file or stdin) by hand"),
    "realm": ("dclcomms.realm:main", "run a realm: connector, islands, rooms, /about, stats"),
    "gatekeeper": (
        "dclcomms.gatekeeper:main",
        "the comms gatekeeper (scene rooms): migrate, operator commands",
    ),
    "bridge": (
        "dclcomms.bridge.cli:main",
        "third-party server bridge: API keys (keys create|list|revoke), serve over NATS",
    ),
    "rooms": ("dclcomms.rooms:main", "standalone RFC-5 WebSocket room service (/rooms/<roomId>)"),
    "connector": ("dclcomms.realm.cli:connector_main", "connector + rooms + HTTP over NATS"),
    "core": ("dclcomms.realm.cli:core_main", "archipelago clustering core over NATS"),
    "stats": ("dclcomms.realm.cli:stats_main", "stats HTTP API over NATS"),
    "sim": ("dclcomms.sim.cli:main", "run the offline island simulator, print a JSON summary"),
    "bots": ("dclcomms.bots:main", "run N client bots against a realm, print a JSON summary"),
}


def _load(entry: str) -> Callable[[Sequence[str]], int]:
    module_name, func_name = entry.split(":")
    func: Callable[[Sequence[str]], int] = getattr(importlib.import_module(module_name), func_name)
    return func


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="dclcomms",
        description="dclcomms: comms backend for Decentraland-style worlds",
        usage="dclcomms [-h] [--version] COMMAND [ARGS...]",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    parser.add_argument("command", nargs="?", choices=sorted(COMMANDS), metavar="COMMAND")
    parser.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    parser.epilog = "commands:\n" + "\n".join(
        f"  {name:<12} {help_}" for name, (_, help_) in sorted(COMMANDS.items())
    )
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    ns = parser.parse_args(args)
    if ns.version:
        from dclcomms import __version__

        print(__version__)
        return 0
    if ns.command is None:
        parser.print_help()
        return 2
    _one_line_deprecations(f"dclcomms {ns.command}")
    return _load(COMMANDS[ns.command][0])(ns.rest)


def _one_line_deprecations(prog: str) -> None:
    """An old setting name reads ``<prog>: warning: <message>`` on stderr, not a traceback
    line of the package's source (only when the warning is shown at all)."""
    from dclcomms.config import DeprecatedSettingWarning

    default = warnings.formatwarning

    def formatwarning(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        line: str | None = None,
    ) -> str:
        if issubclass(category, DeprecatedSettingWarning):
            return f"{prog}: warning: {message}\n"
        return default(message, category, filename, lineno, line)

    warnings.formatwarning = formatwarning


if __name__ == "__main__":
    sys.exit(main())
