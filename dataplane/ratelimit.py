"""A key's rate limits on the data plane: what a request counts, what it is told.

The control plane keeps the counters (controlplane/ratelimits.py). A request of a
rate-limited key is admitted either by its Reserve, which counts it there, or against a
grant's *slice* (`Slice`): part of the key's requests, tokens and slots in flight that
the control plane took out of its buckets for this worker, so that every worker
together admits at most the limit. Keys without limits (KeyState.limits is None) pass
none of this.

A request counts one request, one slot while it runs, and `token_bound` tokens: its
body's bytes (each token is at least one byte), each image part at its provider's
per-image maximum, and its output bound (max_tokens or the catalog's maximum, times
the answers asked for). Its settlement corrects that to the tokens it used
(spendgate.contract.TOKEN_UNITS). Speech, transcription and image routes count no tokens.

Answers carry OpenAI's `x-ratelimit-*` headers (`headers`); a refusal is a 429 with
`retry-after` (errors.RateLimited). docs/rate-limits.md has the reasoning."""

from __future__ import annotations

from dataclasses import dataclass

from dataplane import estimate
from dataplane.errors import RateLimited
from dataplane.inbound import RequestView
from dataplane.pricing import ModelPrice
from spendgate.contract import MAX_RATE_LIMIT, MINUTE_MS, RateLimits, enum_names
from spendgate.v1 import usage_pb2

DIMENSIONS = enum_names(usage_pb2.RateLimitDimension)  # "requests", "tokens", "parallel"
# Headers a provider sent about the operator's own quota: replaced by the key's (docs/rate-limits.md).
PROVIDER_HEADERS = (b"x-ratelimit-", b"anthropic-ratelimit-")


Limits = RateLimits


@dataclass(frozen=True)
class Status:
    """A limited key's state as a response reports it."""

    limits: Limits
    requests_remaining: int = 0
    requests_reset_ms: int = 0
    tokens_remaining: int = 0
    tokens_reset_ms: int = 0
    refused: str = ""  # "requests" | "tokens" | "parallel" on a refusal
    retry_after_ms: int = 0

    @classmethod
    def from_pb(cls, msg: usage_pb2.RateLimitStatus) -> Status:
        return cls(
            limits=Limits.from_pb(msg.limits),
            requests_remaining=msg.requests_remaining,
            requests_reset_ms=msg.requests_reset_ms,
            tokens_remaining=msg.tokens_remaining,
            tokens_reset_ms=msg.tokens_reset_ms,
            refused=DIMENSIONS.get(msg.refused, ""),
            retry_after_ms=msg.retry_after_ms,
        )


def token_bound(view: RequestView, price: ModelPrice, token_route: bool) -> int:
    """What a request counts against tokens per minute at admission (see the module's doc)."""
    if not token_route:
        return 0
    images = estimate.unseen_inputs(view.body, price.provider).images
    bound = (
        view.raw_len + images * estimate.image_tokens(price) + estimate.output_tokens_bound(view.body, price)
    )
    return min(bound, MAX_RATE_LIMIT)  # a body asking for 10**30 answers still fits the ledger


# --- a grant's slice -------------------------------------------------------------------


@dataclass(eq=False)
class Slice:
    """Part of a key's limits that this worker admits against locally (a grant's). A
    dimension the key has no limit in is None. Tokens may go below zero: requests that
    used more than their estimates; the control plane takes the debt back with the slice."""

    requests: int | None
    tokens: int | None
    slots: int | None
    status: Status  # the key's, when the slice was granted (what was left beside it)
    in_flight: int = 0
    granted: tuple[int, int] = (0, 0)  # requests and tokens, as granted

    @classmethod
    def from_pb(cls, granted: usage_pb2.RateSlice, status: usage_pb2.RateLimitStatus) -> Slice:
        limits = Limits.from_pb(status.limits)
        return cls(
            granted.requests if limits.rpm is not None else None,
            granted.tokens if limits.tpm is not None else None,
            granted.slots if limits.parallel is not None else None,
            Status.from_pb(status),
            granted=(granted.requests, granted.tokens),
        )

    def fits(self, tokens: int) -> bool:
        return (
            (self.requests is None or self.requests >= 1)
            and (self.tokens is None or self.tokens >= tokens)
            and (self.slots is None or self.in_flight < self.slots)
        )

    def low(self) -> bool:
        """Less than a quarter of it left: time to ask for the next one."""
        return (self.requests is not None and self.requests * 4 < self.granted[0]) or (
            self.tokens is not None and self.tokens * 4 < self.granted[1]
        )

    def take(self, tokens: int) -> Status:
        if self.requests is not None:
            self.requests -= 1
        if self.tokens is not None:
            self.tokens -= tokens
        self.in_flight += 1
        return self.view()

    def finished(self) -> None:
        self.in_flight -= 1

    def released(self, tokens: int) -> None:
        """A request that reached no provider: it counts for nothing."""
        self.finished()
        if self.requests is not None:
            self.requests += 1
        if self.tokens is not None:
            self.tokens += tokens

    def correct(self, estimate_tokens: int, used_tokens: int) -> None:
        if self.tokens is not None:
            self.tokens += estimate_tokens - used_tokens

    def unused(self) -> usage_pb2.RateSlice:
        """What goes back with the grant: no slot (the grant's end frees them)."""
        return usage_pb2.RateSlice(requests=max(self.requests or 0, 0), tokens=self.tokens or 0)

    def view(self) -> Status:
        """The key's state as this worker sees it: what was left beside the slice when it
        was granted, and what is left of the slice (others' use since is not seen)."""
        s, limits = self.status, self.status.limits
        requests = s.requests_remaining + max(self.requests or 0, 0)
        tokens = s.tokens_remaining + max(self.tokens or 0, 0)
        return Status(
            limits=limits,
            requests_remaining=requests,
            requests_reset_ms=_until_full(requests, limits.rpm),
            tokens_remaining=tokens,
            tokens_reset_ms=_until_full(tokens, limits.tpm),
        )


def _until_full(remaining: int, limit: int | None) -> int:
    return 0 if limit is None else -(-max(0, limit - remaining) * MINUTE_MS // limit)


# --- headers ---------------------------------------------------------------------------


def duration(ms: int) -> str:
    """OpenAI's reset format (Go's time.Duration): `20ms`, `1s`, `1.5s`, `6m0s`, `1h2m3s`."""
    if ms <= 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    text = f"{seconds}.{millis:03d}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{hours}h{minutes}m{text}"
    return f"{minutes}m{text}" if minutes else text


def headers(status: Status) -> list[tuple[bytes, bytes]]:
    limits, out = status.limits, []
    if limits.rpm is not None:
        out += [
            (b"x-ratelimit-limit-requests", str(limits.rpm).encode()),
            (b"x-ratelimit-remaining-requests", str(status.requests_remaining).encode()),
            (b"x-ratelimit-reset-requests", duration(status.requests_reset_ms).encode()),
        ]
    if limits.tpm is not None:
        out += [
            (b"x-ratelimit-limit-tokens", str(limits.tpm).encode()),
            (b"x-ratelimit-remaining-tokens", str(status.tokens_remaining).encode()),
            (b"x-ratelimit-reset-tokens", duration(status.tokens_reset_ms).encode()),
        ]
    return out


def replace_headers(raw: list[tuple[bytes, bytes]], status: Status) -> list[tuple[bytes, bytes]]:
    """The provider's rate-limit headers (the operator's quota) out, the key's in."""
    return [(n, v) for n, v in raw if not n.startswith(PROVIDER_HEADERS)] + headers(status)


def refusal(status: Status) -> RateLimited:
    """The 429, with `retry-after` (whole seconds, as the header wants; the SDKs read the
    exact `retry-after-ms` first) and the key's x-ratelimit-* headers."""
    wait = max(status.retry_after_ms, 1)
    extra = {name.decode(): value.decode() for name, value in headers(status)}
    extra.update(
        {"retry-after": str(-(-wait // 1000)), "retry-after-ms": str(wait), "x-should-retry": "true"}
    )
    return RateLimited(refusal_message(status), status.refused or "requests", extra)


def refusal_message(status: Status) -> str:
    limits = status.limits
    wait = duration(max(status.retry_after_ms, 1))
    if status.refused == "parallel":
        return (
            f"Rate limit reached for this API key on requests in flight: limit {limits.parallel}. "
            "Try again when one of its requests has finished."
        )
    if status.refused == "tokens":
        return (
            f"Rate limit reached for this API key on tokens per min (TPM): limit {limits.tpm}, "
            f"remaining {status.tokens_remaining}. Please try again in {wait}."
        )
    return (
        f"Rate limit reached for this API key on requests per min (RPM): limit {limits.rpm}, "
        f"remaining {status.requests_remaining}. Please try again in {wait}."
    )
