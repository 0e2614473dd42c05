"""Each NATS process serves the metrics of every part running in it on its ``/metrics``.

Real ``dclcomms`` processes on a nats-server the test starts; a real client handshakes
and sends heartbeats, then each process's ``/metrics`` is read: the NATS clients'
``dcl_nats_*`` (the C++ client's ``dcl_nats_c_*`` too), labelled with the client's
connection name, and the core's ``dcl_archipelago_*`` count that traffic, with no
metric name exposed twice.
"""

from __future__ import annotations

import asyncio
import re

import aiohttp

from tests.helpers.nats_fixtures import (
    NatsServer,
    first_line,
    nats_server,  # noqa: F401 - fixture
    spawn,
    stop_all,
)
from tests.helpers.realm_client import ArchipelagoClient, assigned

SECRET = "metrics-ws-room-secret-0123456789abcdef"
BASE = ["--host", "127.0.0.1", "--port", "0", "--log-level", "WARNING"]
REALM = [*BASE, "--flush-interval-s", "0.1", "--ws-room-secret", SECRET]
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?) (\S+)$")


def parse(text: str) -> dict[str, float]:
    """Series (name and labels as rendered) -> value; asserts each name is typed once."""
    typed = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")]
    assert len(typed) == len(set(typed)), sorted(n for n in typed if typed.count(n) > 1)
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            m = _SAMPLE.match(line)
            assert m is not None, line
            assert m.group(1) not in out, f"series {m.group(1)} rendered twice"
            out[m.group(1)] = float(m.group(2))
    return out


async def metrics(http: aiohttp.ClientSession, url: str) -> dict[str, float]:
    async with http.get(url + "/metrics") as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return parse(await r.text())


def nats_traffic(m: dict[str, float], client: str) -> None:
    """The NATS client ``client`` is connected (both connections) and moved messages."""
    label = f'{{client="{client}"}}'
    assert m[f"dcl_nats_connected{label}"] == 1, m
    assert m[f"dcl_nats_c_connected{label}"] == 1, m
    assert m[f"dcl_nats_published_total{label}"] > 0, m
    assert m[f"dcl_nats_received_total{label}"] > 0, m
    assert m[f"dcl_nats_reconnects_total{label}"] == 0
    assert m[f"dcl_nats_c_reconnects_total{label}"] == 0
    assert f"dcl_nats_outbox_bytes{label}" in m and f"dcl_nats_c_outbox_bytes{label}" in m


def core_traffic(m: dict[str, float]) -> None:
    assert m["dcl_archipelago_heartbeats_total"] > 0, m
    assert m["dcl_archipelago_ticks_total"] > 0
    assert m['dcl_archipelago_connection_strings_total{transport="ws-room"}'] >= 2
    assert m["dcl_archipelago_peers"] == 2 and m["dcl_archipelago_islands"] == 1
    assert m["dcl_archipelago_flush_duration_seconds_count"] > 0


def connector_traffic(m: dict[str, float]) -> None:
    assert m["dcl_connector_sessions"] == 2
    assert m["dcl_connector_sessions_started_total"] == 2
    assert m["dcl_connector_heartbeats_total"] >= 2
    assert m['dcl_connector_island_messages_total{kind="island_changed"}'] >= 2


async def two_on_one_island(conn_url: str) -> list[ArchipelagoClient]:
    clients = [ArchipelagoClient(871), ArchipelagoClient(872)]
    for c in clients:
        await c.connect(conn_url.replace("http://", "ws://"))
        await c.handshake()
    seen = [await assigned(c, 2.0 * i, 0.0, timeout=15) for i, c in enumerate(clients)]
    assert seen[0]["islandId"] == seen[1]["islandId"]
    return clients


def test_realm_nats_serves_its_connector_core_and_nats_metrics(
    nats_server: NatsServer,  # noqa: F811
) -> None:
    """``dclcomms realm --nats``: one /metrics with the connector's, the core's and both
    NATS clients' metrics (two clients, one series each: labelled by connection name)."""
    procs = [
        spawn(
            "realm",
            *BASE,
            "--flush-interval-s",
            "0.1",
            "--nats",
            nats_server.url,
        )
    ]
    try:
        url = first_line(procs[0], "dclcomms realm running").split()[-1]

        async def body() -> None:
            clients = await two_on_one_island(url)
            async with aiohttp.ClientSession() as http:
                m = await metrics(http, url)
            for client in ("dclcomms-connector", "dclcomms-core"):
                nats_traffic(m, client)
            core_traffic(m)
            connector_traffic(m)
            assert m["dcl_ws_connector_sessions"] == 2  # the C++ server's counters too
            for c in clients:
                await c.close()

        asyncio.run(asyncio.wait_for(body(), 60))
    finally:
        codes = stop_all(procs)
    assert codes == [0], [p.stderr.read() if p.stderr else "" for p in procs]


def test_separate_processes_serve_their_parts_metrics(
    nats_server: NatsServer,  # noqa: F811
) -> None:
    """``dclcomms connector``, ``core`` and ``stats``: each /metrics has its parts' metrics
    and its own NATS client's, and none of another process's."""
    nats = ["--nats", nats_server.url]
    procs = [
        spawn("connector", *REALM, *nats),
        spawn("core", *REALM, *nats),
        spawn("stats", *BASE, *nats),
    ]
    try:
        conn = first_line(procs[0], "dclcomms connector running").split()[-1]
        core = first_line(procs[1], "dclcomms core running").split()[-1]
        stats = first_line(procs[2], "dclcomms stats running").split()[-1]

        async def body() -> None:
            clients = await two_on_one_island(conn)
            async with aiohttp.ClientSession() as http:
                mc = await metrics(http, conn)
                mk = await metrics(http, core)
                ms = await metrics(http, stats)
            nats_traffic(mc, "dclcomms-connector")
            connector_traffic(mc)
            assert not any(k.startswith("dcl_archipelago_") for k in mc), mc
            nats_traffic(mk, "dclcomms-core")
            core_traffic(mk)
            assert not any(k.startswith("dcl_connector_") for k in mk), mk
            # the stats process only listens (engine.islands, heartbeats...)
            assert ms['dcl_nats_connected{client="dclcomms-stats"}'] == 1
            assert ms['dcl_nats_received_total{client="dclcomms-stats"}'] > 0
            for m in (mc, mk, ms):
                assert len({k.split("{client=")[1] for k in m if "{client=" in k}) == 1
            for c in clients:
                await c.close()

        asyncio.run(asyncio.wait_for(body(), 60))
    finally:
        codes = stop_all(procs)
    assert codes == [0, 0, 0], [p.stderr.read() if p.stderr else "" for p in procs]
