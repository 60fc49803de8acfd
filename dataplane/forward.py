"""The upstream HTTP client, behind one narrow seam.

`Upstream.send` opens a streamed upstream request and returns the status,
headers and an async iterator of raw body bytes; nothing is buffered. The
implementation uses httpx2 (the maintained fork of httpx, same API), one
pooled client per worker; docs/upstream-client.md has the measurements that
chose it over httpx and aiohttp. Nothing outside this module imports it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Protocol

import httpx2 as httpx  # the maintained fork, same API: see docs/upstream-client.md

from dataplane.errors import UpstreamTimeout, UpstreamUnreachable

# What an upstream body stream raises when it breaks mid-way (caught by metering).
StreamBroken = httpx.HTTPError

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
    _response: httpx.Response

    async def aclose(self) -> None:
        await self._response.aclose()


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
        if lower in HOP_BY_HOP or lower in GATEWAY_CREDENTIALS or lower == "accept-encoding":
            continue
        out[lower] = value
    out["accept-encoding"] = "identity"
    out.update(inject)
    return out


def downstream_headers(upstream: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(n, v) for n, v in upstream if n.lower() not in HOP_BY_HOP and n.lower() != "content-encoding"]


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
            body=response.aiter_raw(),
            _response=response,
        )

    async def aclose(self) -> None:
        await self._client.aclose()
