"""The one ASGI middleware every request passes through, in front of the router.

It gives the request its id (requestid.py) and the response its
`x-spendgate-request-id` header, counts the answer (metrics.py) and writes its
access line (logs.py), and turns whatever the route raised into an
answer in the shape of the provider whose route was called (families.family_of):
a GatewayError as itself, Starlette's 404 / 405 as NotFound / MethodNotAllowed,
a client that left mid-upload as 499, anything else as a logged 500. Once a
response has started nothing can be answered any more, so the error goes on to
the server, which drops the connection (the client sees the cut).

One layer instead of Starlette's three (ServerErrorMiddleware, ExceptionMiddleware
and a request-id middleware, each wrapping every `send`): on a metered stream,
every chunk pays for each wrapper (docs/benchmarks.md). A request for a route with
no path parameters (`/v1/chat/completions`, ...) goes to its endpoint directly, the
scope set as the router would have set it: the router would try the routes before it
one by one, and its three coroutine frames would be resumed each time the request's
task is."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Route, Router
from starlette.types import Message, Receive, Scope, Send

from dataplane import logs, requestid
from dataplane.errors import GatewayError, MethodNotAllowed, NotFound, TooLarge
from dataplane.metrics import Metrics
from dataplane.providers.families import error_response, family_of

log = logging.getLogger(__name__)

LINGER_SECONDS = 5.0


class Edge:
    def __init__(self, router: Router, metrics: Metrics | None = None) -> None:
        self.router = router
        self.metrics = metrics or Metrics()
        self._direct = _direct_routes(router.routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.router(scope, receive, send)  # the lifespan
            return
        scope["app"] = self  # so the router raises its 404 / 405 instead of answering in plain text
        rid = requestid.of(scope)
        header = (requestid.HEADER, rid.encode())
        token = requestid.current.set(rid)
        began = time.perf_counter()
        started = False
        status = 0
        unread = True  # the request body has not been read to its end

        async def receive_noted() -> Message:
            nonlocal unread
            message = await receive()
            unread = unread and message["type"] == "http.request" and message.get("more_body", False)
            return message

        def send_with_id(message: Message) -> Awaitable[None]:  # (the server's send, not a frame over it)
            nonlocal started, status
            if not started and message["type"] == "http.response.start":
                started = True
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), header]}
            return send(message)

        try:
            route = None if scope.get("root_path") else self._direct.get(scope["path"])
            if route is not None and scope["method"] in (route.methods or ()):  # (as Router.app would)
                scope["router"], scope["route"] = self.router, route
                scope["endpoint"], scope["path_params"] = route.endpoint, {}
                await route.app(scope, receive_noted, send_with_id)
            else:
                await self.router(scope, receive_noted, send_with_id)
        except Exception as exc:
            if started:
                raise
            response = answer(scope, exc)
            if unread:
                await _answer_unread(response, scope, receive, send_with_id)
            else:
                await response(scope, receive, send_with_id)
        finally:
            self.metrics.finished(scope, status)
            if logs.ACCESS.isEnabledFor(logging.INFO):
                logs.access(scope, status, time.perf_counter() - began)
            requestid.current.reset(token)


def _direct_routes(routes: list[BaseRoute]) -> dict[str, Route]:
    """Each HTTP route without path parameters, by its path, unless a route before it also
    matches that path (the router would take that one)."""
    direct: dict[str, Route] = {}
    for i, route in enumerate(routes):
        if isinstance(route, Route) and not route.param_convertors and route.methods:
            probe = {"type": "http", "path": route.path, "root_path": "", "method": "POST"}
            if all(earlier.matches(probe)[0] is Match.NONE for earlier in routes[:i]):
                direct.setdefault(route.path, route)
    return direct


async def _answer_unread(response: Response, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer a request whose body was refused unread (too large, a bad key, ...).

    The server queues the body for the app: left unread, it fills the queue and the
    connection hangs, answer sent or not, while the client is still uploading (an
    SDK reads no answer before its whole body is out). So the rest is read and
    dropped, for up to LINGER_SECONDS, and then the answer sent: a client that has
    finished uploading reads it. One still uploading after that gets the answer, a
    `connection: close`, and the closed connection."""
    discard = asyncio.ensure_future(_discard(receive))
    try:
        await asyncio.wait({discard}, timeout=LINGER_SECONDS)
        if not discard.done():
            response.headers["connection"] = "close"
        await response(scope, receive, send)
    finally:
        discard.cancel()


async def _discard(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return


def answer(scope: Scope, exc: Exception) -> Response:
    family = family_of(scope)
    if isinstance(exc, TooLarge):  # answered, and the connection with it (its client may not stop)
        response = error_response(exc, family)
        response.headers["connection"] = "close"
        return response
    if isinstance(exc, GatewayError):
        return error_response(exc, family)
    if isinstance(exc, ClientDisconnect):
        return Response(status_code=499)  # nobody is listening; logged as such by the server
    if isinstance(exc, HTTPException):
        what = f"{scope['method']} {scope['path']}"
        if exc.status_code == 405:
            return error_response(
                MethodNotAllowed(f"{scope['method']} is not allowed on {scope['path']}."), family
            )
        if exc.status_code == 404:
            return error_response(
                NotFound(f"Unknown route {what}: see the gateway's README for its routes."), family
            )
        return Response(exc.detail, status_code=exc.status_code)
    log.error("request failed", exc_info=exc)
    return error_response(GatewayError("The gateway failed to handle the request."), family)
