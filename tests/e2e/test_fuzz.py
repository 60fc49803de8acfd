"""Fuzzing the gateway's request handling: whatever arrives, never a 500, and
never a charge without a matching event."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clients.client import ControlPlaneClient
from tests.e2e.conftest import MINTED_SECRETS, Account, Running

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.text(max_size=30),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
models = st.one_of(
    st.sampled_from(["gpt-4o-mini", "openai/gpt-4o-mini", "claude-sonnet-4-6", "", "gpt-4o-mini\x00"]),
    json_values,
)
bodies = st.fixed_dictionaries(
    {},
    optional={
        "model": models,
        "messages": st.one_of(st.just([{"role": "user", "content": "hi"}]), json_values),
        "max_tokens": st.one_of(st.integers(min_value=-(2**64), max_value=2**64), json_values),
        "stream": st.one_of(st.booleans(), json_values),
        "stream_options": json_values,
        "input": json_values,
    },
)
ROUTES = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses", "/v1/messages"]


@pytest.fixture(scope="module")
def fuzzed(gateway: Running) -> tuple[Account, dict[str, object]]:
    """One account and key that every fuzz example uses, checked afterwards."""
    with ControlPlaneClient(gateway.grpc, gateway.admin_token) as admin:
        created = admin.create_account("fuzz", 1_000_000_000)
    MINTED_SECRETS.append(created.master_key_secret)
    account = Account(created.account.id, created.master_key_secret, gateway)
    return account, account.mint("fuzzed", max_spend_usd=100)


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    route=st.sampled_from(ROUTES),
    body=st.one_of(bodies.map(lambda b: json.dumps(b).encode()), st.binary(max_size=200)),
)
def test_random_requests_never_500(
    gateway: Running, fuzzed: tuple[Account, dict[str, object]], route: str, body: bytes
) -> None:
    _, user_key = fuzzed
    response = httpx.post(
        gateway.base + route,
        content=body,
        headers={
            "Authorization": f"Bearer {user_key['secret']}",
            "content-type": "application/json",
            "x-mock-output-tokens": "2",
        },
        timeout=30,
    )
    assert response.status_code < 500, (route, body, response.text)
    if response.status_code >= 400 and response.headers.get("content-type", "").startswith(
        "application/json"
    ):
        assert "error" in response.json()


def test_after_the_fuzzing_every_charge_has_its_event(fuzzed: tuple[Account, dict[str, object]]) -> None:
    account, key = fuzzed
    deadline = time.monotonic() + 15
    while True:
        usage = account.key_usage(str(key["id"]))
        if usage["reserved_micros"] == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    events = account.get(f"/v1/keys/{key['id']}/usage?limit=1000").json()["events"]
    assert usage["reserved_micros"] == 0
    assert usage["spent_micros"] == sum(int(e["cost_micros"]) for e in events)
    assert len({e["request_id"] for e in events}) == len(events)
