"""The wall clock every part reads: Unix time in whole milliseconds.

One helper (:func:`now_ms`) for the core's ticks, the stats, ``/status``
``currentTime``, node announcements and auth-chain expiry; parts that take a
``clock_ms`` argument default to it, so tests can inject their own.
"""

from __future__ import annotations

import time


def now_ms() -> int:
    """Milliseconds since the Unix epoch (``time.time_ns() // 1_000_000``)."""
    return time.time_ns() // 1_000_000


__all__ = ["now_ms"]
