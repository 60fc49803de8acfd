"""A small, efficient HTTP/1.1 load generator for the spendgate benchmark.

Runs in its own process (bench.py starts one per measurement), so its CPU is
never charged to the server under test. It is a raw asyncio Protocol client:
N keep-alive connections, each sending one pre-serialized request at a time
(closed loop), parsing just enough of the response (status line,
Content-Length or chunked framing) to know when it ends.

Measured per request, from the moment the request bytes are written:

* latency: until the last byte of the response;
* TTFB: until the first byte of the response *body* (for an SSE stream, the
  first event; the status line and headers alone do not count).

Only 127.0.0.1 / localhost targets are accepted, and every loop is bounded
by a deadline and a request cap. Prints one JSON object on stdout:

    {"completed": N, "errors": E, "seconds": S, "rps": R,
     "latency_ms": {"p50": …, "p90": …, "p99": …, "max": …},
     "ttfb_ms": {…}, "status": {"200": N, …}}
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

ALLOWED_HOSTS = frozenset({"127.0.0.1", "localhost"})
MAX_REQUESTS_PER_CONNECTION = 2_000_000  # a hard bound, far above what a run can reach


class ResponseReader(asyncio.Protocol):
    """One keep-alive connection; parses one response at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.done: asyncio.Future[int] | None = None
        self.closed = asyncio.get_running_loop().create_future()
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers_done = False
        self.chunked = False
        self.remaining = -1  # Content-Length bytes still expected
        self.chunk_left = -1  # bytes left in the current chunk (+2 for its CRLF); -1: expect a size line
        self.first_body_at = 0.0
        self.must_close = False  # the server said `Connection: close`

    # asyncio.Protocol ------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_exception(ConnectionError("connection closed mid-response"))
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        try:
            self._parse()
        except Exception as exc:  # a malformed response: fail this request
            if self.done is not None and not self.done.done():
                self.done.set_exception(exc)

    # -----------------------------------------------------------------------------
    def request(self, payload: bytes) -> asyncio.Future[int]:
        self._reset()
        self.done = asyncio.get_running_loop().create_future()
        assert self.transport is not None
        self.transport.write(payload)
        return self.done

    def _body_seen(self) -> None:
        if not self.first_body_at:
            self.first_body_at = time.perf_counter()

    def _finish(self) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_result(self.status)

    def _parse(self) -> None:
        buf = self.buf
        if not self.headers_done:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end]).decode("latin-1").split("\r\n")
            del buf[: end + 4]
            self.status = int(head[0].split(" ", 2)[1])
            self.headers_done = True
            for line in head[1:]:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    self.remaining = int(value)
                elif name == "transfer-encoding" and "chunked" in value.lower():
                    self.chunked = True
                elif name == "connection" and "close" in value.lower():
                    self.must_close = True  # e.g. Hypercorn's keep_alive_max_requests
            if not self.chunked and self.remaining < 0:
                raise ValueError("response without Content-Length or chunked framing")
        if not self.chunked:
            if buf:
                self._body_seen()
                taken = min(len(buf), self.remaining)
                del buf[:taken]
                self.remaining -= taken
            if self.remaining == 0:
                if not self.first_body_at:
                    self.first_body_at = time.perf_counter()
                self._finish()
            return
        # chunked
        while buf:
            if self.chunk_left == -1:
                line_end = buf.find(b"\r\n")
                if line_end < 0:
                    return
                size = int(bytes(buf[:line_end]).split(b";", 1)[0], 16)
                del buf[: line_end + 2]
                if size == 0:
                    # last chunk: wait for the (empty) trailer section's CRLF
                    self.chunk_left = -2
                else:
                    self._body_seen()
                    self.chunk_left = size + 2
                continue
            if self.chunk_left == -2:
                line_end = buf.find(b"\r\n")
                if line_end < 0:
                    return
                del buf[: line_end + 2]
                if line_end == 0:  # end of trailers
                    if not self.first_body_at:
                        self.first_body_at = time.perf_counter()
                    self._finish()
                    return
                continue
            taken = min(len(buf), self.chunk_left)
            del buf[:taken]
            self.chunk_left -= taken
            if self.chunk_left == 0:
                self.chunk_left = -1


def build_request(host: str, port: int, path: str, headers: list[str], body: bytes) -> bytes:
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        *headers,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": float("nan"), "p90": float("nan"), "p99": float("nan"), "max": float("nan")}
    values = sorted(values)
    n = len(values)

    def at(q: float) -> float:
        return round(values[min(n - 1, int(q * n))] * 1000, 3)

    return {"p50": at(0.50), "p90": at(0.90), "p99": at(0.99), "max": round(values[-1] * 1000, 3)}


async def run(args: argparse.Namespace) -> dict[str, object]:
    if args.host not in ALLOWED_HOSTS:
        raise SystemExit(
            f"loadgen only targets loopback ({', '.join(sorted(ALLOWED_HOSTS))}), not {args.host}"
        )
    loop = asyncio.get_running_loop()
    payload = build_request(args.host, args.port, args.path, args.header, args.body.encode())
    latencies: list[float] = []
    ttfbs: list[float] = []
    statuses: dict[int, int] = {}
    error_kinds: dict[str, int] = {}
    errors = 0
    completed_in_window = 0
    completed_total = 0  # with the warm-up: for per-request CPU figures
    start = time.perf_counter()
    measure_from = start + args.warmup
    measure_to = measure_from + args.duration
    max_requests = args.max_requests

    async def connect() -> ResponseReader:
        _, proto = await loop.create_connection(ResponseReader, args.host, args.port)
        return proto

    async def worker() -> None:
        nonlocal errors, completed_in_window, completed_total, max_requests
        conn = await connect()
        issued = 0
        try:
            while issued < MAX_REQUESTS_PER_CONNECTION:
                t0 = time.perf_counter()
                if t0 >= measure_to:
                    break
                if max_requests is not None:
                    if max_requests <= 0:
                        break
                    max_requests -= 1
                issued += 1
                try:
                    status = await asyncio.wait_for(conn.request(payload), args.timeout)
                except (ConnectionError, ValueError, TimeoutError) as exc:
                    if t0 >= measure_from:
                        errors += 1
                        kind = f"{type(exc).__name__}: {exc}"[:120]
                        error_kinds[kind] = error_kinds.get(kind, 0) + 1
                    conn.transport.close()  # type: ignore[union-attr]
                    conn = await connect()
                    continue
                t1 = time.perf_counter()
                completed_total += 1
                first_body_at = conn.first_body_at
                if conn.must_close:
                    conn.transport.close()  # type: ignore[union-attr]
                    conn = await connect()
                if t0 >= measure_from:
                    statuses[status] = statuses.get(status, 0) + 1
                    if 200 <= status < 300:
                        latencies.append(t1 - t0)
                        ttfbs.append(first_body_at - t0)
                    else:
                        errors += 1
                if measure_from <= t1 <= measure_to and 200 <= status < 300:
                    completed_in_window += 1
        finally:
            if conn.transport is not None:
                conn.transport.close()

    results = await asyncio.gather(*(worker() for _ in range(args.concurrency)), return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures and not latencies:
        raise failures[0]
    return {
        "concurrency": args.concurrency,
        "completed": completed_in_window,
        "completed_total": completed_total,
        "errors": errors + len(failures),
        "seconds": args.duration,
        "rps": round(completed_in_window / args.duration, 1),
        "latency_ms": percentiles(latencies),
        "ttfb_ms": percentiles(ttfbs),
        "status": {str(k): v for k, v in sorted(statuses.items())},
        "error_kinds": error_kinds,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", default="/v1/chat/completions")
    p.add_argument("--header", action="append", default=[], help="'Name: value', repeatable")
    p.add_argument("--body", required=True, help="the JSON request body")
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--duration", type=float, default=5.0, help="measured seconds")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds of unmeasured load first")
    p.add_argument("--timeout", type=float, default=30.0, help="per-request timeout, seconds")
    p.add_argument("--max-requests", type=int, default=None, help="stop after this many requests")
    args = p.parse_args(argv)
    result = asyncio.run(run(args))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
