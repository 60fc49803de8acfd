"""A bare pass-through proxy on spendgate's stack: the benchmark's baseline.

Hypercorn (one asyncio worker, configured as `dataplane.serve` configures
spendgate's) + Starlette routing + a pooled upstream HTTP client. No auth, no
metering, no body parsing: read the request body, forward it with the same
header filtering spendgate applies (`dataplane.forward.upstream_headers`),
and stream the upstream response back chunk by chunk. Whatever this costs,
spendgate cannot cost less; the difference is what spendgate itself adds.

    python bench/bare_proxy.py --port P --upstream http://127.0.0.1:M [--client NAME] [--loop uvloop]

`--client` picks the upstream HTTP client (see CLIENTS), so the same proxy
measures the candidates for spendgate's upstream seam. The default,
`spendgate`, is `dataplane.forward.HttpxUpstream` exactly as spendgate builds
it, so the baseline uses the same client as the gateway whatever that is."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root, for `dataplane`

from starlette.applications import Starlette  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import PlainTextResponse, Response  # noqa: E402
from starlette.routing import Route  # noqa: E402
from starlette.types import Receive, Scope, Send  # noqa: E402

from dataplane.forward import downstream_headers, upstream_headers  # noqa: E402

CONNECT_TIMEOUT = 10.0  # dataplane.config.Settings defaults
READ_TIMEOUT = 600.0
POOL_SIZE = 1000
KEEPALIVE_EXPIRY = 5.0  # httpx's default: an idle upstream connection lives 5 s


class Upstream:
    """What the proxy needs from a client: open a streamed request."""

    async def send(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, list[tuple[str, str]], AsyncIterator[bytes], Callable[[], Any]]:
        raise NotImplementedError

    async def aclose(self) -> None:
        raise NotImplementedError


class SpendgateUpstream(Upstream):
    """The gateway's own upstream client (dataplane.forward), exactly as it builds it by default."""

    def __init__(self) -> None:
        from dataplane.config import Settings
        from dataplane.forward import make_upstream

        self._upstream = make_upstream(Settings.from_env({}).upstream_client, CONNECT_TIMEOUT, READ_TIMEOUT)

    async def send(self, method, url, headers, body):  # type: ignore[no-untyped-def]
        r = await self._upstream.send(method, url, headers, body)
        return r.status, r.headers, r.body, r.aclose

    async def aclose(self) -> None:
        await self._upstream.aclose()


class HttpxLike(Upstream):
    """An httpx-API client (httpx or httpx2), used the way HttpxUpstream uses it."""

    def __init__(self, client: Any) -> None:
        self._client = client

    async def send(self, method, url, headers, body):  # type: ignore[no-untyped-def]
        request = self._client.build_request(method, url, headers=headers, content=body)
        response = await self._client.send(request, stream=True)
        return (
            response.status_code,
            [(k.decode("latin-1"), v.decode("latin-1")) for k, v in response.headers.raw],
            response.aiter_raw(),
            response.aclose,
        )

    async def aclose(self) -> None:
        await self._client.aclose()


def httpx_default(module: Any) -> Any:
    """The library's defaults (max_connections=100, max_keepalive_connections=20), timeouts as spendgate's."""
    return module.AsyncClient(
        timeout=module.Timeout(
            connect=CONNECT_TIMEOUT, read=READ_TIMEOUT, write=READ_TIMEOUT, pool=CONNECT_TIMEOUT
        )
    )


def httpx_tuned(module: Any) -> Any:
    """A big pool (no connection cap in practice, keep-alive as large unless
    BARE_PROXY_KEEPALIVE says otherwise) on an explicit HTTP/1.1-only
    transport without retries, and no environment (proxy/netrc) lookups."""
    keepalive = int(os.environ.get("BARE_PROXY_KEEPALIVE", POOL_SIZE))
    limits = module.Limits(
        max_connections=POOL_SIZE, max_keepalive_connections=keepalive, keepalive_expiry=KEEPALIVE_EXPIRY
    )
    return module.AsyncClient(
        transport=module.AsyncHTTPTransport(
            limits=limits, http1=True, http2=False, retries=0, trust_env=False
        ),
        timeout=module.Timeout(
            connect=CONNECT_TIMEOUT, read=READ_TIMEOUT, write=READ_TIMEOUT, pool=CONNECT_TIMEOUT
        ),
        follow_redirects=False,
        trust_env=False,
    )


class AiohttpUpstream(Upstream):
    """aiohttp, for reference only: spendgate's seam keeps the httpx API."""

    def __init__(self) -> None:
        import aiohttp  # type: ignore[import-not-found, unused-ignore]  # only with the bench extra

        self._aiohttp = aiohttp
        self._session: Any = None

    def _get(self) -> Any:
        if self._session is None:  # must be created inside the running loop
            aiohttp = self._aiohttp
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=POOL_SIZE, limit_per_host=0, keepalive_timeout=KEEPALIVE_EXPIRY
                ),
                timeout=aiohttp.ClientTimeout(sock_connect=CONNECT_TIMEOUT, sock_read=READ_TIMEOUT),
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
            )
        return self._session

    async def send(self, method, url, headers, body):  # type: ignore[no-untyped-def]
        response = await self._get().request(method, url, headers=headers, data=body, allow_redirects=False)

        async def chunks() -> AsyncIterator[bytes]:
            async for chunk in response.content.iter_any():
                yield chunk

        async def close() -> None:
            response.release()

        return (
            response.status,
            [(k.decode("latin-1"), v.decode("latin-1")) for k, v in response.raw_headers],
            chunks(),
            close,
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


def _httpx() -> Any:
    import httpx

    return httpx


def _httpx2() -> Any:
    import httpx2

    return httpx2


CLIENTS: dict[str, Callable[[], Upstream]] = {
    "spendgate": SpendgateUpstream,
    "httpx-default": lambda: HttpxLike(httpx_default(_httpx())),
    "httpx-tuned": lambda: HttpxLike(httpx_tuned(_httpx())),
    "httpx2-default": lambda: HttpxLike(httpx_default(_httpx2())),
    "httpx2-tuned": lambda: HttpxLike(httpx_tuned(_httpx2())),
    "aiohttp": AiohttpUpstream,
}


class Passthrough(Response):
    """Stream the upstream body to the client as it arrives."""

    def __init__(self, status: int, headers: list[tuple[str, str]], body: AsyncIterator[bytes], close: Any):
        self.status_code = status
        self.background = None
        self.raw_headers = [(n.lower().encode("latin-1"), v.encode("latin-1")) for n, v in headers]
        self._body = body
        self._close = close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send(
                {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
            )
            async for chunk in self._body:
                if chunk:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await self._close()


def create_app(client: str | None = None, upstream: str | None = None) -> Starlette:
    client = client or os.environ.get("BARE_PROXY_CLIENT", "spendgate")
    base = (upstream or os.environ["BARE_PROXY_UPSTREAM"]).rstrip("/")
    inject = {"authorization": f"Bearer {os.environ.get('BARE_PROXY_UPSTREAM_KEY', 'sk-bench')}"}
    state: dict[str, Upstream] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state["client"] = CLIENTS[client]()
        try:
            yield
        finally:
            await state["client"].aclose()

    async def forward(request: Request) -> Response:
        body = await request.body()
        query = request.url.query
        url = base + request.url.path + (f"?{query}" if query else "")
        status, headers, chunks, close = await state["client"].send(
            request.method, url, upstream_headers(request.headers.items(), inject), body
        )
        return Passthrough(status, downstream_headers(headers), chunks, close)

    async def healthz(request: Request) -> Response:
        return PlainTextResponse(client)

    return Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/{path:path}", forward, methods=["GET", "POST"]),
        ],
        lifespan=lifespan,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="A bare pass-through proxy (benchmark baseline).")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--upstream", required=True, help="upstream origin, e.g. http://127.0.0.1:9000")
    p.add_argument("--client", choices=sorted(CLIENTS), default="spendgate")
    p.add_argument(
        "--loop", choices=("asyncio", "uvloop"), default="asyncio", help="Hypercorn's worker class"
    )
    p.add_argument(
        "--keepalive",
        type=int,
        default=None,
        help=f"max_keepalive_connections for the *-tuned clients (default {POOL_SIZE}, like max_connections)",
    )
    args = p.parse_args(argv)
    if args.keepalive is not None:
        os.environ["BARE_PROXY_KEEPALIVE"] = str(args.keepalive)
    if args.host not in ("127.0.0.1", "localhost"):
        raise SystemExit("the bare proxy binds loopback only")

    from hypercorn.config import Config
    from hypercorn.run import run

    os.environ["BARE_PROXY_CLIENT"] = args.client
    os.environ["BARE_PROXY_UPSTREAM"] = args.upstream
    # As dataplane.serve configures spendgate's workers, except workers=0: the one
    # asyncio worker runs in this process rather than a spawned child.
    config = Config()
    config.bind = [f"{args.host}:{args.port}"]
    config.workers = 0
    config.worker_class = args.loop
    config.application_path = f"{Path(__file__).resolve()}:create_app()"
    config.accesslog = None
    config.errorlog = "-"
    config.keep_alive_timeout = 75
    config.graceful_timeout = 10
    config.loglevel = "WARNING"
    config.include_server_header = False
    print(
        f"bare proxy ({args.client}, {args.loop}) on http://{args.host}:{args.port} -> {args.upstream}",
        flush=True,
    )
    return run(config)


if __name__ == "__main__":
    raise SystemExit(main())
