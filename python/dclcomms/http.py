"""A small HTTP router for requests handed over by the C++ server.

No framework: the C++ WebSocket server owns the socket and delivers every HTTP
request it does not answer itself as an ``HttpRequest`` event; :class:`Router`
maps ``(method, path)`` to a handler and produces a :class:`Response` that the
realm writes back with ``Server.respond``. Every response carries
``Access-Control-Allow-Origin: *``; errors are JSON ``{"error": ..., "code": ...}``
with their status, unknown paths 404 ``{"error": "Not Found"}``.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from dclcomms.clock import now_ms

log = logging.getLogger("dclcomms.http")

CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Credentials": "true",
    "Access-Control-Max-Age": "86400",
}


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    params: Mapping[str, str] = field(default_factory=dict)  # from the route pattern

    def header(self, name: str, default: str | None = None) -> str | None:
        low = name.lower()
        for k, v in self.headers.items():
            if k.lower() == low:
                return v
        return default

    @property
    def args(self) -> dict[str, list[str]]:
        return parse_qs(self.query, keep_blank_values=True)


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.body)


def json_response(value: Any, status: int = 200) -> Response:
    body = json.dumps(value, separators=(",", ":"), allow_nan=False).encode()
    return Response(status, body, {"Content-Type": "application/json"})


def status_document(
    *, commit_hash: str, version: str | None = None, **fields: Any
) -> dict[str, Any]:
    """The one shape of every ``/status`` (the realm's, its ``/rooms/status``, ``dclcomms
    rooms`` and ``dclcomms core``): ``version``, ``currentTime`` (Unix ms) and
    ``commitHash`` first, then the fields of that front, in order."""
    if version is None:
        from dclcomms import __version__ as version
    return {"version": version, "currentTime": now_ms(), "commitHash": commit_hash, **fields}


def text_response(text: str, status: int = 200, content_type: str = "text/plain") -> Response:
    return Response(status, text.encode(), {"Content-Type": f"{content_type}; charset=utf-8"})


class HttpError(Exception):
    """Raised by handlers: becomes ``{"error": message, "code": code}`` with ``status``."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code

    def response(self) -> Response:
        body: dict[str, Any] = {"error": self.message}
        if self.code is not None:
            body["code"] = self.code
        return json_response(body, self.status)


Handler = Callable[[Request], Response | Awaitable[Response]]


@dataclass(frozen=True)
class _Route:
    methods: frozenset[str]
    parts: tuple[str, ...]
    handler: Handler

    def match(self, parts: list[str]) -> dict[str, str] | None:
        if len(parts) != len(self.parts):
            return None
        params = {}
        for pat, seg in zip(self.parts, parts, strict=True):
            if pat.startswith("{") and pat.endswith("}"):
                if not seg:
                    return None
                params[pat[1:-1]] = seg
            elif pat != seg:
                return None
        return params


def _split(path: str) -> list[str]:
    path = path.split("?", 1)[0]
    if len(path) > 1 and path.endswith("/"):
        path = path[:-1]
    return path.split("/")[1:] if path.startswith("/") else path.split("/")


class Router:
    """Routes ``{name}`` path patterns; ``methods=None`` accepts every method."""

    def __init__(self) -> None:
        self._routes: list[_Route] = []

    def add(self, path: str, handler: Handler, methods: tuple[str, ...] | None = ("GET",)) -> None:
        m = frozenset(x.upper() for x in methods) if methods else frozenset()
        if methods and "GET" in m:
            m = m | {"HEAD"}
        self._routes.append(_Route(m, tuple(_split(path)), handler))

    def dispatch_now(self, req: Request) -> Response | Awaitable[Response]:
        """The response when the handler gives it without waiting (a handler may be a
        plain function returning a Response, or an awaitable for the part that waits),
        else an awaitable of it: no task and no event-loop turn for a request answered
        from memory. Same answers as :meth:`dispatch`."""
        try:
            result = self._dispatch(req)
        except Exception as e:
            return self._finish(req, self._error(req, e))
        if isinstance(result, Response):
            return self._finish(req, result)
        return self._await(req, result)

    async def dispatch(self, req: Request) -> Response:
        result = self.dispatch_now(req)
        if isinstance(result, Response):
            return result
        return await result

    async def _await(self, req: Request, pending: Awaitable[Response]) -> Response:
        try:
            resp = await pending
            assert isinstance(resp, Response)
        except Exception as e:
            resp = self._error(req, e)
        return self._finish(req, resp)

    @staticmethod
    def _error(req: Request, e: Exception) -> Response:
        if isinstance(e, HttpError):
            return e.response()
        # a handler bug must not take the realm down
        log.exception("handler failed", extra={"path": req.path}, exc_info=e)
        return HttpError(500, f"Internal error: {type(e).__name__}", "internal").response()

    @staticmethod
    def _finish(req: Request, resp: Response) -> Response:
        for k, v in CORS_HEADERS.items():
            resp.headers.setdefault(k, v)
        if req.method.upper() == "HEAD":
            resp.body = b""
        return resp

    def _dispatch(self, req: Request) -> Response | Awaitable[Response]:
        parts = _split(req.path)
        method = req.method.upper()
        allowed: set[str] = set()
        for route in self._routes:
            params = route.match(parts)
            if params is None:
                continue
            if route.methods and method not in route.methods:
                allowed |= route.methods
                continue
            bound = (
                Request(req.method, req.path, req.query, req.headers, req.body, params)
                if params or req.params
                else req
            )
            result = route.handler(bound)
            if not isinstance(result, Response) and not inspect.isawaitable(result):
                raise TypeError(f"handler of {req.path} returned {type(result).__name__}")
            return result
        if allowed:
            if method == "OPTIONS":  # CORS preflight
                return Response(
                    204,
                    b"",
                    {
                        "Access-Control-Allow-Methods": ", ".join(sorted(allowed | {"OPTIONS"})),
                        "Access-Control-Allow-Headers": req.header(
                            "Access-Control-Request-Headers", "*"
                        )
                        or "*",
                    },
                )
            raise HttpError(405, "Method Not Allowed", "method_not_allowed")
        return json_response({"error": "Not Found"}, 404)


__all__ = [
    "CORS_HEADERS",
    "HttpError",
    "Request",
    "Response",
    "Router",
    "json_response",
    "text_response",
]
