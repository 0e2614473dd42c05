"""Stopping a service on SIGINT and SIGTERM, without losing the signal.

asyncio's ``loop.add_signal_handler`` alone turns a signal into one byte written to the
loop's self-pipe, and runs the callback when the loop reads that byte. The same pipe
carries a byte for every ``call_soon_threadsafe`` (every ``asyncio.to_thread`` result, for
one): when a starved loop lets it fill, the signal's byte is dropped and the signal is
lost. A realm under a burst of 5,000 handshakes (one ban lookup in a worker thread each)
ignored SIGTERM that way and ran on until killed.

:func:`stop_on_signals` keeps asyncio's handler (it sets the wake-up fd, so a signal
caught on any thread wakes the loop) and replaces the Python-level handler with one that
schedules ``stop`` itself. That handler runs in the main thread at the next bytecode
whatever happened to the byte: a full pipe is readable, so the loop is awake anyway.
``stop`` may therefore run twice and must be idempotent (``Event.set``, ``request_stop``).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Iterable, Iterator
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def stop_on_signals(
    stop: Callable[[], object], signals: Iterable[int] = STOP_SIGNALS
) -> Iterator[list[int]]:
    """While the block runs, SIGINT and SIGTERM call ``stop`` in the running loop.

    Yields the signals handled: none when not on the main thread, where Python cannot
    install handlers (the caller then stops by other means). The previous handlers are
    restored on exit."""
    loop = asyncio.get_running_loop()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(stop)

    installed: list[int] = []
    try:
        for sig in signals:
            try:
                loop.add_signal_handler(sig, stop)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
                continue
            installed.append(sig)
            signal.signal(sig, on_signal)
        if installed:
            # asyncio set the wake-up fd reporting a full pipe as an error ("Exception
            # ignored ... BlockingIOError" on stderr); a full pipe is harmless here.
            fd = signal.set_wakeup_fd(-1)
            signal.set_wakeup_fd(fd, warn_on_full_buffer=False)
        yield installed
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
