"""Clients come back by themselves: a realm killed (-9) under 50 clients and restarted on its
port gets all of them back on islands, re-handshaken, within 30 s; ``reconnect=False`` keeps
the old behaviour. The realm is a real process (``python -m dclcomms realm``)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

from dclcomms.auth import Identity
from dclcomms.client import CommunicationsDirector
from tests.helpers.common import free_port, stop_process

N = 50


def start_realm(port: int) -> subprocess.Popen[str]:
    p = subprocess.Popen(
        [
            *(sys.executable, "-m", "dclcomms", "realm", "--host", "127.0.0.1"),
            *("--port", str(port), "--flush-interval", "0.2"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=dict(os.environ, LOG_LEVEL="WARNING"),
    )
    assert p.stdout is not None
    line = p.stdout.readline()
    assert line.startswith("dclcomms realm listening on "), line
    return p


def stop(p: subprocess.Popen[str]) -> None:
    stop_process(p)


def on_island(d: CommunicationsDirector) -> bool:
    return d.island_id is not None and d.adapter is not None and d.adapter.connected


async def until(predicate: object, timeout: float) -> float:
    t0 = time.monotonic()
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() - t0 < timeout, "condition not met in time"
        await asyncio.sleep(0.1)
    return time.monotonic() - t0


def test_kill_9_and_restart_every_client_is_back_on_an_island_within_30_s() -> None:
    port = free_port()
    realm = start_realm(port)
    url = f"http://127.0.0.1:{port}"

    async def body() -> None:
        nonlocal realm
        directors = [
            CommunicationsDirector(
                url,
                Identity.generate(7000 + i),
                position=lambda i=i: (float(i % 10) * 20.0, 0.0, float(i // 10) * 200.0),
                heartbeat_interval_s=0.5,
            )
            for i in range(N)
        ]
        stay_gone = CommunicationsDirector(
            url, Identity.generate(7999), position=lambda: (0.0, 0.0, 0.0), reconnect=False
        )
        gate = asyncio.Semaphore(10)

        async def start(d: CommunicationsDirector) -> None:
            async with gate:
                await d.start()

        try:
            await asyncio.gather(*(start(d) for d in [*directors, stay_gone]))
            await until(lambda: all(on_island(d) for d in directors), 30)
            islands_before = {d.island_id for d in directors}
            assert len(islands_before) >= 5  # five rows 200 m apart

            stop_process(realm, signal.SIGKILL)  # no close frames, no goodbyes
            killed = time.monotonic()
            # down for a while: every client noticed, and attempts fail and back off
            await until(
                lambda: (
                    all(d.island_id is None for d in directors)
                    and sum(d.reconnect_failures for d in directors) >= N
                ),
                30 - (time.monotonic() - killed),
            )
            realm = start_realm(port)
            await until(
                lambda: all(d.reconnects == 1 and on_island(d) for d in directors),
                30 - (time.monotonic() - killed),
            )
            back_s = time.monotonic() - killed
            assert back_s < 30, back_s
            assert all(d.handshakes == 2 for d in directors)
            assert sum(d.reconnect_failures for d in directors) >= N  # the realm was away
            # the one without reconnect stays gone
            assert stay_gone.handshakes == 1 and stay_gone.reconnects == 0
        finally:
            await asyncio.gather(
                *(d.stop() for d in [*directors, stay_gone]), return_exceptions=True
            )

    try:
        asyncio.run(asyncio.wait_for(body(), 120))
    finally:
        stop(realm)
