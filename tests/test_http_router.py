"""The HTTP router: routing, params, CORS, JSON errors, 404/405, HEAD and handler failures."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import dclcomms
from dclcomms.http import HttpError, Request, Response, Router, json_response


def _router() -> Router:
    r = Router()
    r.add("/items", lambda req: json_response({"args": req.args}))
    r.add("/items/{id}", lambda req: json_response({"id": req.params["id"]}))

    async def slow(req: Request) -> Response:
        await asyncio.sleep(0)
        return json_response({"ok": True}, 201)

    r.add("/slow", slow, methods=("POST",))

    def teapot(req: Request) -> Response:
        raise HttpError(418, "I'm a teapot", "teapot")

    r.add("/teapot", teapot)

    def broken(req: Request) -> Response:
        raise RuntimeError("bug")

    r.add("/broken", broken)
    return r


def _get(r: Router, method: str, path: str, query: str = "") -> Response:
    return asyncio.run(r.dispatch(Request(method, path, query, {"Host": "x"})))


def test_routes_params_and_query() -> None:
    r = _router()
    resp = _get(r, "GET", "/items", "id=a&id=b&x=")
    assert resp.status == 200 and resp.json() == {"args": {"id": ["a", "b"], "x": [""]}}
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert resp.headers["Content-Type"] == "application/json"
    assert _get(r, "GET", "/items/I7").json() == {"id": "I7"}
    assert _get(r, "GET", "/items/I7/").json() == {"id": "I7"}  # trailing slash
    assert _get(r, "POST", "/slow").status == 201


def test_errors_are_json_with_codes() -> None:
    r = _router()
    nf = _get(r, "GET", "/nope")
    assert (nf.status, nf.json()) == (404, {"error": "Not Found"})
    assert nf.headers["Access-Control-Allow-Origin"] == "*"
    t = _get(r, "GET", "/teapot")
    assert (t.status, t.json()) == (418, {"error": "I'm a teapot", "code": "teapot"})
    b = _get(r, "GET", "/broken")
    assert (b.status, b.json()) == (
        500,
        {"error": "Internal error: RuntimeError", "code": "internal"},
    )
    m = _get(r, "DELETE", "/items")
    assert (m.status, m.json()) == (
        405,
        {"error": "Method Not Allowed", "code": "method_not_allowed"},
    )


def test_head_and_preflight() -> None:
    r = _router()
    h = _get(r, "HEAD", "/items/x")
    assert h.status == 200 and h.body == b""
    p = _get(r, "OPTIONS", "/items")
    assert p.status == 204
    assert p.headers["Access-Control-Allow-Methods"] == "GET, HEAD, OPTIONS"
    assert p.headers["Access-Control-Max-Age"] == "86400"


def test_every_status_document_has_one_shape() -> None:
    """/status of the realm, its /rooms/status, dclcomms rooms and dclcomms core."""
    import time

    from dclcomms.http import status_document

    before = time.time_ns() // 1_000_000
    doc = status_document(commit_hash="abc", userCount=3)
    assert list(doc) == ["version", "currentTime", "commitHash", "userCount"]
    assert doc["version"] == dclcomms.__version__ and doc["commitHash"] == "abc"
    assert before <= doc["currentTime"] <= time.time_ns() // 1_000_000
    doc = status_document(commit_hash="", version="9.9", users=1, rooms=2, details=[])
    assert list(doc) == ["version", "currentTime", "commitHash", "users", "rooms", "details"]
    assert doc["version"] == "9.9"


def test_dispatch_now_answers_without_waiting_when_the_handler_does() -> None:
    """A plain handler's Response comes back at once (no task, no loop turn); a
    handler that returns an awaitable for the part that waits (or an async one) gives
    an awaitable; both finish alike: CORS, HEAD, JSON errors from either part."""
    r = Router()
    r.add("/now", lambda req: json_response({"now": True}))

    async def later(answer: int) -> Response:
        await asyncio.sleep(0)
        if answer == 0:
            raise HttpError(403, "banned", "banned")
        if answer == 1:
            raise RuntimeError("bug")
        return json_response({"later": answer})

    def split(req: Request) -> Response | Awaitable[Response]:
        if req.query == "fast":
            return json_response({"fast": True})
        if req.query == "refuse":
            raise HttpError(401, "no", "no")
        return later(int(req.query))

    r.add("/split", split, methods=("GET", "POST"))
    now = r.dispatch_now(Request("GET", "/now"))
    assert isinstance(now, Response) and now.json() == {"now": True}
    assert now.headers["Access-Control-Allow-Origin"] == "*"
    fast = r.dispatch_now(Request("POST", "/split", "fast"))
    assert isinstance(fast, Response) and fast.json() == {"fast": True}
    refused = r.dispatch_now(Request("POST", "/split", "refuse"))
    assert isinstance(refused, Response) and (refused.status, refused.json()["code"]) == (401, "no")
    head = r.dispatch_now(Request("HEAD", "/split", "fast"))
    assert isinstance(head, Response) and head.status == 200 and head.body == b""

    async def finish(query: str, method: str = "POST") -> Response:
        pending = r.dispatch_now(Request(method, "/split", query))
        assert not isinstance(pending, Response)
        resp = await pending
        assert resp.headers["Access-Control-Allow-Origin"] == "*"
        return resp

    assert asyncio.run(finish("2")).json() == {"later": 2}
    assert asyncio.run(finish("2", "HEAD")).body == b""
    banned = asyncio.run(finish("0"))
    assert (banned.status, banned.json()["code"]) == (403, "banned")
    bug = asyncio.run(finish("1"))
    assert (bug.status, bug.json()["code"]) == (500, "internal")
    # dispatch() gives the same answers.
    assert asyncio.run(r.dispatch(Request("POST", "/split", "2"))).json() == {"later": 2}
    assert asyncio.run(r.dispatch(Request("POST", "/split", "fast"))).json() == {"fast": True}
