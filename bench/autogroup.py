"""``--autogroup-nice``: a bench's fair share of a shared Linux machine.

With ``sched_autogroup_enabled`` every terminal session (autogroup) shares the CPU equally
whatever the nice values of its processes, so ``nice`` cannot give a bench its share; the
autogroup's own nice can (as root). The bench's children (servers, load processes) inherit
the autogroup. The JSON output records the group so a figure says how it was taken.
"""

from __future__ import annotations

import argparse
import sys


def add_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--autogroup-nice",
        type=int,
        default=None,
        help="set this session's scheduler autogroup nice (Linux, root) before starting; the "
        "servers and load processes inherit the autogroup: with autogroups every terminal "
        "session shares the CPU equally whatever its processes' nice values, so on a shared "
        "machine this is how the bench gets its share",
    )


def apply(nice: int | None, prog: str) -> str | None:
    """Sets the autogroup nice when given; returns ``/proc/self/autogroup`` as then read
    (None when not set or not settable, which is reported on stderr)."""
    if nice is None:
        return None
    try:
        with open("/proc/self/autogroup", "w") as f:
            f.write(str(nice))
        with open("/proc/self/autogroup") as f:
            return f.read().strip()
    except OSError as e:
        print(f"{prog}: cannot set the autogroup nice: {e}", file=sys.stderr)
        return None
