"""HTTP/1.1 keep-alive on the C++ server's plain HTTP (http_keep_alive_ms): requests
served one after another on one TCP connection, what still closes it (Connection: close,
HTTP/1.0, idle time, a refused request, stop()), and WebSocket upgrades, including on a
connection that served plain requests first. Raw sockets on 127.0.0.1, so what the
server writes is seen byte for byte."""

from __future__ import annotations

import asyncio
import functools
import os
import random
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import aiohttp

from dclcomms.ws import HttpRequest, Server, ServerConfig, metrics_text
from tests.helpers.common import read_answer, realm_cli
from tests.helpers.ws_wire import (
    Identity,
    client_challenge_request,
    client_signed_challenge,
    connector_handshake,
    decode_server,
    recv_bin,
    run_async,
)
from tests.helpers.ws_wire import serving as ws_serving

serving = functools.partial(ws_serving, rooms=False)


@contextmanager
def answering(server: Server, body: bytes = b'{"ok":true}') -> Iterator[list[HttpRequest]]:
    """Answers every HttpRequest event 200 with body (the embedder's part); yields the
    requests seen."""
    seen: list[HttpRequest] = []
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            for ev in server.poll():
                if isinstance(ev, HttpRequest):
                    seen.append(ev)
                    server.respond(ev.request_id, 200, {"Content-Type": "application/json"}, body)
            time.sleep(0.002)

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    try:
        yield seen
    finally:
        stop.set()
        t.join(5)


def connect(server: Server) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def closed_by_server(s: socket.socket, within: float = 30.0) -> bool:
    """Whether the server closes ``s`` within ``within`` seconds (a hang guard: True as
    soon as the close arrives)."""
    s.settimeout(within)
    try:
        return s.recv(1) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def request(method: str, path: str, *headers: str, body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: x", *headers]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def test_requests_one_after_another_on_one_connection() -> None:
    with serving(http_keep_alive_ms=2000) as server, answering(server) as seen:
        s = connect(server)
        s.sendall(request("GET", "/health/live"))
        status, headers, body = read_answer(s)
        assert (status, body) == (200, b"alive")
        assert headers.get("connection", "") != "close"
        assert headers["access-control-allow-origin"] == "*"
        for i in range(5):  # the embedder's answers, on the same socket
            s.sendall(request("POST", f"/thing?i={i}", "X-Test: yes", body=b"x" * (i * 1000)))
            status, headers, body = read_answer(s)
            assert (status, body) == (200, b'{"ok":true}')
            assert headers["content-type"] == "application/json"
            assert headers.get("connection", "") != "close"
        assert [(r.method, r.path, r.query, len(r.body)) for r in seen] == [
            ("POST", "/thing", f"i={i}", i * 1000) for i in range(5)
        ]
        assert all(r.headers["X-Test"] == "yes" for r in seen)
        # Connection: close on a request: answered, then closed (by websocketpp).
        s.sendall(request("GET", "/thing", "Connection: close"))
        status, headers, _ = read_answer(s)
        assert status == 200 and headers["connection"] == "close"
        assert closed_by_server(s)
        s.close()


def test_a_body_sent_slowly_and_the_next_request_right_behind_it() -> None:
    with serving(http_keep_alive_ms=2000) as server, answering(server) as seen:
        s = connect(server)
        whole = request("POST", "/a", body=b"0123456789" * 10)
        s.sendall(whole[:-60])
        time.sleep(0.1)
        # The rest of the body and the whole next request in one segment: the next
        # request is left on the socket and served after the first answer.
        s.sendall(whole[-60:] + request("POST", "/b", body=b"z"))
        assert read_answer(s)[0] == 200
        assert read_answer(s)[0] == 200
        assert [(r.path, r.body) for r in seen] == [("/a", b"0123456789" * 10), ("/b", b"z")]
        s.close()


def test_idle_connections_close_after_http_keep_alive_ms() -> None:
    with serving(http_keep_alive_ms=200) as server:
        s = connect(server)
        s.sendall(request("GET", "/health/live"))
        assert read_answer(s)[0] == 200
        t0 = time.monotonic()
        assert closed_by_server(s)
        assert 0.1 < time.monotonic() - t0 < 2.5
        s.close()


def test_keep_alive_off_and_http_1_0_close_after_each_answer() -> None:
    with serving(http_keep_alive_ms=0) as server:
        s = connect(server)
        s.sendall(request("GET", "/health/live"))
        status, headers, _ = read_answer(s)
        assert status == 200 and headers["connection"] == "close"
        assert closed_by_server(s)
        s.close()
    with serving(http_keep_alive_ms=2000) as server:
        s = connect(server)
        s.sendall(b"GET /health/live HTTP/1.0\r\nHost: x\r\n\r\n")
        status, headers, _ = read_answer(s)
        assert status == 200 and headers["connection"] == "close"
        assert closed_by_server(s)
        s.close()


def test_refused_requests_answer_json_and_close() -> None:
    with serving(http_keep_alive_ms=2000, http_max_body_bytes=100) as server:
        s = connect(server)
        s.sendall(request("GET", "/health/live"))
        assert read_answer(s)[0] == 200
        # Over http_max_body_bytes: 413 from the headers, nothing of the body read.
        s.sendall(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 101\r\n\r\n")
        status, headers, body = read_answer(s)
        assert (status, body) == (413, b'{"error":"Request Entity Too Large"}')
        assert headers["connection"] == "close" and closed_by_server(s)
        s.close()
        # No Host: 400 (websocketpp's parser, as without keep-alive).
        s = connect(server)
        s.sendall(b"GET /health/live HTTP/1.1\r\nX: y\r\n\r\n")
        status, _, body = read_answer(s)
        assert status == 400 and body.startswith(b'{"error":')
        assert closed_by_server(s)
        s.close()
        assert "dcl_ws_server_http_too_large_total 1\n" in metrics_text(server.stats())


def test_unanswered_request_is_503_and_the_connection_stays() -> None:
    with serving(http_keep_alive_ms=2000, http_timeout_ms=300) as server:
        s = connect(server)
        s.sendall(request("GET", "/never"))
        status, headers, _ = read_answer(s)
        assert status == 503 and headers.get("connection", "") != "close"
        s.sendall(request("GET", "/health/live"))
        assert read_answer(s)[:1] == (200,)
        s.close()


def test_stop_closes_idle_keep_alive_connections() -> None:
    """stop() returns once every keep-alive session has closed its socket. It used to stop
    the I/O threads as soon as the WebSocket sessions were gone, and the sessions' close,
    posted to their strands, often never ran: under load even one connection stayed open
    (a flaky failure), and with 200 most of them did, every time."""
    server = Server(ServerConfig(rooms=False, http_keep_alive_ms=60_000))
    server.start()
    socks = []
    try:
        for _ in range(200):
            s = connect(server)
            s.sendall(request("GET", "/health/live"))
            assert read_answer(s)[0] == 200
            socks.append(s)
        t0 = time.monotonic()
        server.stop()
        assert time.monotonic() - t0 < 5
        still_open = [i for i, s in enumerate(socks) if not closed_by_server(s, within=0.05)]
        assert still_open == [], f"{len(still_open)} of 200 open after stop()"
    finally:
        for s in socks:
            s.close()


def test_upgrade_after_plain_requests_on_the_same_connection() -> None:
    """A client that pools connections may send its WebSocket upgrade on one that
    served plain requests: websocketpp takes it over at that request."""
    with serving(http_keep_alive_ms=2000) as server:
        s = connect(server)
        for _ in range(2):
            s.sendall(request("GET", "/health/live"))
            assert read_answer(s)[0] == 200
        s.sendall(
            request(
                "GET",
                "/ws",
                "Upgrade: websocket",
                "Connection: Upgrade",
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
                "Sec-WebSocket-Version: 13",
                "Sec-WebSocket-Protocol: archipelago",
            )
        )
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            assert chunk
            data += chunk
        assert data.startswith(b"HTTP/1.1 101 "), data
        assert b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in data  # RFC 6455's example accept
        s.close()


@run_async
async def test_a_pooling_client_then_a_connector_session(rng: random.Random) -> None:
    """aiohttp reuses its pooled connection for the next request and for ws_connect."""
    with serving(http_keep_alive_ms=2000) as server:
        base = f"http://127.0.0.1:{server.port}"
        conn = aiohttp.TCPConnector(limit=1)
        async with aiohttp.ClientSession(connector=conn) as s:
            for _ in range(3):
                async with s.get(f"{base}/health/live") as r:
                    assert (r.status, await r.text()) == (200, "alive")
            me = Identity.random(rng)
            ws, welcome = await connector_handshake(s, server.port, me)
            assert welcome["peer_id"] == me.lower
            await ws.close()
        await asyncio.sleep(0)


@contextmanager
def realm(*args: str, env: dict[str, str] | None = None) -> Iterator[int]:
    """``dclcomms realm`` on a free port with these flags / extra environment; yields its
    port."""
    with realm_cli(*args, env=env) as url:
        yield int(url.rsplit(":", 1)[1])


def test_the_realm_setting_reaches_the_server() -> None:
    """``http_keep_alive_ms`` is a realm setting (flag, environment, TOML) like the
    server's other limits: 0 closes after every answer, a value keeps an idle connection
    that long; an invalid value stops the realm with a ConfigError naming it (exit 2)."""

    def get(port: int) -> tuple[socket.socket, dict[str, str]]:
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(request("GET", "/health/live"))
        status, headers, _ = read_answer(s)
        assert status == 200
        return s, headers

    with realm("--http-keep-alive-ms", "0") as port:
        s, headers = get(port)
        assert headers["connection"] == "close"
        assert closed_by_server(s)
        s.close()
    with realm(env={"HTTP_KEEP_ALIVE_MS": "400"}) as port:
        s, headers = get(port)
        assert headers.get("connection", "") != "close"
        s.sendall(request("GET", "/status"))  # the realm's own route, same connection
        status, headers, _ = read_answer(s)
        assert status == 200 and headers.get("connection", "") != "close"
        t0 = time.monotonic()
        assert closed_by_server(s)
        assert 0.2 < time.monotonic() - t0 < 4
        s.close()
    for args, env in (
        (["--http-keep-alive-ms", "-1"], {}),
        (["--http-keep-alive-ms", "3600001"], {}),
        ([], {"HTTP_KEEP_ALIVE_MS": "5s"}),
    ):
        out = subprocess.run(
            [sys.executable, "-m", "dclcomms", "realm", "--port", "0", *args],
            capture_output=True,
            text=True,
            timeout=60,
            env=dict(os.environ, **env),
        )
        assert out.returncode == 2, (args, env, out.stderr)
        assert "http_keep_alive_ms" in out.stderr and "[bad_value]" in out.stderr, out.stderr


# --- idle keep-alive connections and admission -------------------------------------------
#
# A plain HTTP connection counts as "not authenticated" while it is open (it never completes
# a WebSocket handshake): against its address's max_unauthenticated_per_ip and, at
# max_connections, as an eviction candidate. One waiting between two requests holds nothing
# a client would lose (HTTP clients reopen a closed idle connection), so it is the first to
# go: before a WebSocket user in the middle of its handshake, and instead of refusing that
# address's next connection.


def idle_keep_alive(server: Server, n: int) -> list[socket.socket]:
    """n connections, each after one answered request: idle, kept for the next one."""
    out = []
    for _ in range(n):
        s = connect(server)
        s.sendall(request("GET", "/health/live"))
        assert read_answer(s)[0] == 200
        out.append(s)
    return out


def still_open(s: socket.socket) -> bool:
    """The server has not closed s: it answers the next request on it."""
    s.sendall(request("GET", "/health/live"))
    try:
        return read_answer(s)[0] == 200
    except (AssertionError, ConnectionResetError, BrokenPipeError):
        return False


@run_async
async def test_at_max_connections_an_idle_keep_alive_connection_goes_before_a_handshake(
    rng: random.Random,
) -> None:
    """Four slots: a connector user mid-handshake (the oldest connection) and three idle
    keep-alive connections. A newcomer past the eviction age takes the longest-idle HTTP
    connection's slot; the user's handshake goes on to ``welcome``. Before, the user's
    connection (the oldest unauthenticated one) was evicted."""
    with serving(
        max_connections=4,
        fd_reserve=0,
        unauthenticated_evict_min_age_ms=300,
        http_keep_alive_ms=60_000,
    ) as server:
        me = Identity.random(rng)
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(f"http://127.0.0.1:{server.port}/ws")
            await ws.send_bytes(client_challenge_request(me.address))
            kind, ch = decode_server(await recv_bin(ws))
            assert kind == "challenge_response"
            idle = idle_keep_alive(server, 3)  # the wallet is still signing
            await asyncio.sleep(0.5)  # past unauthenticated_evict_min_age_ms
            newcomer = connect(server)
            newcomer.sendall(request("GET", "/health/live"))
            assert read_answer(newcomer)[0] == 200
            await ws.send_bytes(client_signed_challenge(me.chain(ch["challenge"])))
            kind, welcome = decode_server(await recv_bin(ws))
            assert (kind, welcome["peer_id"]) == ("welcome", me.lower)
            assert closed_by_server(idle[0])  # idle longest
            assert still_open(idle[1]) and still_open(idle[2])
            stats = server.stats()["server"]
            assert stats["evicted_idle_http"] == 1
            assert stats["evicted_unauthenticated"] == 0
            assert "dcl_ws_server_evicted_idle_http_total 1\n" in metrics_text(server.stats())
            await ws.close()
            for s in (*idle, newcomer):
                s.close()


@run_async
async def test_idle_keep_alive_connections_do_not_refuse_their_address(
    rng: random.Random,
) -> None:
    """max_unauthenticated_per_ip = 3 and three idle keep-alive connections from 127.0.0.1:
    a WebSocket upgrade from the same address evicts the longest-idle one instead of being
    refused 503. Connections that are not idle (connected, no request yet) still count in
    full: with three of those the next one is refused."""
    with serving(max_unauthenticated_per_ip=3, http_keep_alive_ms=60_000) as server:
        me = Identity.random(rng)
        idle = idle_keep_alive(server, 3)
        async with aiohttp.ClientSession() as session:
            ws, welcome = await connector_handshake(session, server.port, me)
            assert welcome["peer_id"] == me.lower
            assert closed_by_server(idle[0])
            assert still_open(idle[1]) and still_open(idle[2])
            await ws.close()
        assert server.stats()["server"]["evicted_idle_http"] == 1
        assert server.stats()["server"]["refused_per_ip"] == 0
        for s in idle:
            s.close()
    with serving(max_unauthenticated_per_ip=3, http_keep_alive_ms=60_000) as server:
        silent = [connect(server) for _ in range(3)]  # no request yet: not idle
        time.sleep(0.2)
        s = connect(server)
        status, _, body = read_answer(s)
        assert status == 503 and b"too many connections from this address" in body
        assert server.stats()["server"]["refused_per_ip"] == 1
        assert server.stats()["server"]["evicted_idle_http"] == 0
        for x in (*silent, s):
            x.close()
