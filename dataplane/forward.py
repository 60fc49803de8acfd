"""The upstream HTTP client, behind one narrow seam.

`UpstreamClient.send` opens a streamed upstream request and returns the status,
headers and an async iterator of raw body bytes; nothing is buffered. Two
implementations, one pooled client per worker, chosen by SPENDGATE_UPSTREAM_CLIENT:
`AiohttpUpstream` (aiohttp, the default) and `HttpxUpstream` (httpx2, the maintained
fork of httpx); docs/upstream-client.md and docs/benchmarks.md have the measurements.
Either way a body that breaks mid-way raises `StreamBroken`, and a request that
cannot be sent raises the gateway's own UpstreamTimeout / UpstreamUnreachable.
Nothing outside this module imports an HTTP client library."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import aiohttp
import httpx2 as httpx  # the maintained fork, same API: see docs/upstream-client.md

from dataplane.errors import UpstreamTimeout, UpstreamUnreachable


class StreamBroken(Exception):
    """An upstream body stream broke mid-way (caught by metering)."""


# Hop-by-hop headers (RFC 9110 §7.6.1) and ones the proxy recomputes.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
# Credentials a client may present to the gateway: never forwarded upstream.
GATEWAY_CREDENTIALS = frozenset({"authorization", "x-api-key", "xi-api-key", "x-goog-api-key", "api-key"})


@dataclass
class UpstreamResponse:
    status: int
    headers: list[tuple[str, str]]
    body: AsyncIterator[bytes]
    _close: Callable[[], Awaitable[None]]

    async def aclose(self) -> None:
        await self._close()


class UpstreamClient(Protocol):
    async def send(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes
    ) -> UpstreamResponse: ...

    async def aclose(self) -> None: ...


def upstream_headers(client_headers: list[tuple[str, str]], inject: Mapping[str, str]) -> dict[str, str]:
    """The client's headers minus hop-by-hop ones and gateway credentials,
    plus the provider's own credentials. Bodies travel uncompressed so the
    metering parsers read plain bytes."""
    out: dict[str, str] = {}
    for name, value in client_headers:
        lower = name.lower()
        if (
            lower in HOP_BY_HOP
            or lower in GATEWAY_CREDENTIALS
            or lower == "accept-encoding"
            or lower.startswith("x-spendgate-")  # the gateway's own options, not the provider's
        ):
            continue
        out[lower] = value
    out["accept-encoding"] = "identity"
    out.update(inject)
    return out


def downstream_headers(upstream: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """A provider's `x-spendgate-*` (one reached through another gateway) is not passed on:
    the client would read that gateway's cost or request id for this one's. Nor is its
    `date`: the server adds the current one, and a response has one Date, not two."""
    return [(n, v) for n, v in upstream if passed_on(n.lower())]


def passed_on(name: str) -> bool:
    """Whether an upstream response header (`name` lowercased) goes on to the client."""
    return name not in NOT_PASSED_ON and not name.startswith("x-spendgate-")


NOT_PASSED_ON = HOP_BY_HOP | {"content-encoding", "date"}


class HttpxUpstream:
    def __init__(self, connect_timeout: float, read_timeout: float, max_connections: int = 1000) -> None:
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(
                connect=connect_timeout, read=read_timeout, write=read_timeout, pool=connect_timeout
            ),
            # A bounded idle pool: every idle connection costs CPU on each request (docs/upstream-client.md).
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=100, keepalive_expiry=5.0
            ),
            http1=True,
            http2=False,
            follow_redirects=False,
        )

    async def send(self, method: str, url: str, headers: Mapping[str, str], body: bytes) -> UpstreamResponse:
        request = self._client.build_request(method, url, headers=headers, content=body)
        try:
            response = await self._client.send(request, stream=True)
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout("The upstream provider did not answer in time.") from exc
        except httpx.TransportError as exc:
            raise UpstreamUnreachable("The gateway could not connect to the upstream provider.") from exc
        return UpstreamResponse(
            status=response.status_code,
            headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in response.headers.raw],
            body=_httpx_body(response),
            _close=response.aclose,
        )

    async def aclose(self) -> None:
        await self._client.aclose()


async def _httpx_body(response: httpx.Response) -> AsyncIterator[bytes]:
    try:
        async for chunk in response.aiter_raw():
            yield chunk
    except httpx.HTTPError as exc:
        raise StreamBroken(str(exc)) from exc


class AiohttpUpstream:
    """aiohttp's client: the fastest Python HTTP client measured here (docs/benchmarks.md)."""

    def __init__(self, connect_timeout: float, read_timeout: float, max_connections: int = 1000) -> None:
        self._connect_timeout = connect_timeout
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=connect_timeout, sock_connect=connect_timeout, sock_read=read_timeout
        )
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:  # made on the worker's event loop, at its first request
            connector = aiohttp.TCPConnector(
                limit=self._max_connections,
                limit_per_host=0,
                keepalive_timeout=5.0,
                enable_cleanup_closed=True,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self._timeout,
                auto_decompress=False,  # the parsers read the bytes the provider sent
                skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
                trust_env=False,
            )
        return self._session

    async def send(self, method: str, url: str, headers: Mapping[str, str], body: bytes) -> UpstreamResponse:
        try:
            response = await self._client().request(
                method, url, headers=dict(headers), data=body, allow_redirects=False
            )
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise UpstreamTimeout("The upstream provider did not answer in time.") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamUnreachable("The gateway could not connect to the upstream provider.") from exc

        async def close() -> None:
            response.release()

        return UpstreamResponse(
            status=response.status,
            headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in response.raw_headers],
            body=_aiohttp_body(response),
            _close=close,
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


async def _aiohttp_body(response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    try:
        async for chunk in response.content.iter_any():
            yield chunk
    except (aiohttp.ClientError, TimeoutError, asyncio.IncompleteReadError) as exc:
        response.close()  # a broken connection is not handed back to the pool
        raise StreamBroken(str(exc) or exc.__class__.__name__) from exc


def make_upstream(kind: str, connect_timeout: float, read_timeout: float) -> UpstreamClient:
    if kind == "httpx":
        return HttpxUpstream(connect_timeout, read_timeout)
    return AiohttpUpstream(connect_timeout, read_timeout)
