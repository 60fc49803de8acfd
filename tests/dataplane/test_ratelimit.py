"""Rate limits on the data plane: the headers as OpenAI writes them, and two workers'
budgets (grants with slices of the limits) against one real control plane, which
together admit exactly the limit."""

from __future__ import annotations

import asyncio
import json
from unittest.mock import ANY

import pytest

from clients.client import ControlPlaneClient
from controlplane.server import ControlPlane
from controlplane.store.schema import rate_buckets
from dataplane.budget import Decision
from dataplane.providers.families import Family, error_response
from dataplane.ratelimit import Limits, Status, duration, refusal, replace_headers
from dataplane.settlement import Settlement
from spendgate.v1 import keys_pb2
from tests.dataplane.test_budget import eventually, running_budget


@pytest.mark.parametrize(
    ("ms", "text"),
    [(0, "0s"), (7, "7ms"), (999, "999ms"), (1_000, "1s"), (1_500, "1.5s"), (17_280, "17.28s"),
     (60_000, "1m0s"), (360_000, "6m0s"), (61_001, "1m1.001s"), (3_723_000, "1h2m3s")],
)  # fmt: skip
def test_durations_read_as_openai_writes_them(ms: int, text: str) -> None:
    assert duration(ms) == text


def test_the_keys_headers_replace_the_providers() -> None:
    upstream = [(b"content-type", b"application/json"), (b"x-ratelimit-limit-requests", b"10000")]
    upstream += [(b"x-ratelimit-remaining-tokens", b"1999"), (b"anthropic-ratelimit-requests-limit", b"50")]
    status = Status(Limits(rpm=60, tpm=None), requests_remaining=59, requests_reset_ms=1_000)
    assert replace_headers(upstream, status) == [
        (b"content-type", b"application/json"),
        (b"x-ratelimit-limit-requests", b"60"),
        (b"x-ratelimit-remaining-requests", b"59"),
        (b"x-ratelimit-reset-requests", b"1s"),
    ]


def test_two_workers_slices_admit_exactly_the_limit(plane: ControlPlane, master: ControlPlaneClient) -> None:
    """A busy key earns grants on both workers, each with a slice of its requests per minute
    and slots; the two admit, locally or by Reserve, exactly the 400 a minute allows."""
    limits = keys_pb2.RateLimits(rpm_limit=400, max_parallel_requests=64)
    key, _ = master.create_key("busy", cap_micros=10**10, rate_limits=limits)

    async def scenario() -> None:
        async with running_budget(plane) as one, running_budget(plane) as two:
            decisions: list[Decision] = []
            began = asyncio.get_running_loop().time()
            for n in range(300):  # as fast as they come, alternating workers
                for i, budget in enumerate((one, two)):
                    decision = await budget.reserve(key.id, f"r{n}-{i}", 1_000, tokens=0)
                    if decision.granted:
                        decisions.append(decision)
                        units = {"input_tokens": 10, "output_tokens": 5}
                        settlement = Settlement(f"r{n}-{i}", key.id, "openai", "gpt-4o-mini", units)
                        budget.settle(settlement, decision)
            local = [d for d in decisions if d.grant is not None]
            assert local and local[0].grant is not None and local[0].grant.slice is not None
            assert local[0].rate is not None and local[0].rate.limits.rpm == 400
            # The minute's 400 and what refilled while the loop ran (400 a minute).
            elapsed = asyncio.get_running_loop().time() - began
            assert 400 <= len(decisions) <= 400 + int(elapsed * 400 / 60) + 1
            await eventually(lambda: one.pending == 0 and two.pending == 0)
        with plane.engine.connect() as conn:  # every grant went back, with its slots
            bucket = conn.execute(rate_buckets.select().where(rate_buckets.c.key_id == key.id)).one()
        assert bucket.in_flight == 0

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("family", "shape"),
    [
        (
            Family.OPENAI,
            {"error": {"message": ANY, "type": "tokens", "param": None, "code": "rate_limit_exceeded"}},
        ),
        (Family.ANTHROPIC, {"type": "error", "error": {"type": "rate_limit_error", "message": ANY}}),
        (Family.GOOGLE, {"error": {"code": 429, "message": ANY, "status": "RESOURCE_EXHAUSTED"}}),
        (Family.ELEVENLABS, {"detail": {"status": "rate_limit_exceeded", "message": ANY}}),
        (Family.DEEPGRAM, {"err_code": "TOO_MANY_REQUESTS", "err_msg": ANY, "request_id": ANY}),
    ],
)
def test_a_429_is_in_each_providers_shape_with_its_retry_headers(family: Family, shape: object) -> None:
    status = Status(
        Limits(tpm=1_000), tokens_remaining=3, tokens_reset_ms=59_820, refused="tokens", retry_after_ms=1_250
    )
    response = error_response(refusal(status), family)
    assert response.status_code == 429 and json.loads(bytes(response.body)) == shape
    assert (response.headers["retry-after"], response.headers["retry-after-ms"]) == ("2", "1250")
    assert (
        response.headers["x-should-retry"] == "true"
        and response.headers["x-ratelimit-reset-tokens"] == "59.82s"
    )
    assert "try again in 1.25s" in bytes(response.body).decode()
