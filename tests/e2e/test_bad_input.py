"""Hostile input against `spendgate up` over real HTTP (issue 15, points 7 to 9):
deeply nested JSON, numbers outside the 64-bit fields they travel in, forged page
tokens, and bearer tokens that could never be keys. Each is a 4xx in the
caller's own error shape (a provider's on an inference route, the REST facade's
on the key API), never a 500 or a 503, and nothing reaches the provider."""

from __future__ import annotations

import base64
import json

import httpx
import pytest

from fakeupstream.server import MockUpstream
from spendgate.contract import format_usd
from tests.e2e.conftest import Account, Running

INT64_MAX = 2**63 - 1
HUGE = 99999999999999999999999  # valid JSON, no 64-bit integer
DEEP_ARRAYS = b"[" * 100_000
DEEP_OBJECTS = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
MESSAGES = [{"role": "user", "content": "hi"}]


def bearer(secret: object) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}", "content-type": "application/json"}


def nested(depth: int) -> bytes:
    """A chat request the gateway rewrites upstream (`openai/` prefix), with a field nested
    `depth` levels below the body."""
    head = json.dumps({"model": "openai/gpt-4o-mini", "messages": MESSAGES, "max_tokens": 1})[:-1]
    return head.encode() + b', "x": ' + b"[" * depth + b"]" * depth + b"}"


def assert_openai_400(response: httpx.Response, fragment: str, param: str | None = None) -> None:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and fragment in error["message"], error
    assert error["param"] == param, error


# --- 15.7: nesting depth -------------------------------------------------------------------------


def test_deeply_nested_json_is_a_400_in_each_providers_shape(
    gateway: Running, user_key: dict[str, object], mock: MockUpstream
) -> None:
    seen = len(mock.requests)
    headers = bearer(user_key["secret"])
    for raw in (DEEP_ARRAYS, DEEP_OBJECTS, b'{"model": "gpt-4o-mini", "x": ' + DEEP_ARRAYS):
        chat = httpx.post(gateway.base + "/v1/chat/completions", content=raw, headers=headers)
        assert_openai_400(chat, "nests deeper than 256 levels")
    messages = httpx.post(gateway.base + "/v1/messages", content=DEEP_OBJECTS, headers=headers)
    assert messages.status_code == 400, messages.text
    assert messages.json()["error"]["type"] == "invalid_request_error"
    gemini = httpx.post(
        gateway.base + "/v1beta/models/gemini-2.5-flash:generateContent", content=DEEP_ARRAYS, headers=headers
    )
    assert gemini.status_code == 400, gemini.text
    assert gemini.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert len(mock.requests) == seen


def test_a_deep_body_that_parses_is_refused_before_the_gateway_rewrites_it(
    gateway: Running, user_key: dict[str, object], mock: MockUpstream
) -> None:
    """json.loads accepts ~990 levels; re-serialising the rewritten body (json.dumps, deeper in
    the stack) overflowed it. The depth limit keeps both far away."""
    headers = bearer(user_key["secret"])
    seen = len(mock.requests)
    for depth in (300, 990):
        response = httpx.post(gateway.base + "/v1/chat/completions", content=nested(depth), headers=headers)
        assert_openai_400(response, "nests deeper than 256 levels")
    assert len(mock.requests) == seen
    within = httpx.post(gateway.base + "/v1/chat/completions", content=nested(250), headers=headers)
    assert within.status_code == 200, within.text
    forwarded = json.loads(mock.requests[-1].body)
    assert forwarded["model"] == "gpt-4o-mini"  # rewritten, and the deep field intact
    assert json.dumps(forwarded["x"]) == "[" * 250 + "]" * 250


def test_deeply_nested_json_on_the_key_api_is_a_400(gateway: Running, account: Account) -> None:
    key = account.mint("nested")
    headers = bearer(account.master_key)
    # Within the key API's 64 KiB body limit, and past Python's recursion limit.
    deep_arrays, deep_objects = b"[" * 30_000, b'{"a":' * 6_000 + b"1" + b"}" * 6_000
    for raw in (deep_arrays, deep_objects):
        created = httpx.post(gateway.base + "/v1/keys", content=raw, headers=headers)
        assert_openai_400(created, "nests deeper than 256 levels")
        patched = httpx.patch(gateway.base + f"/v1/keys/{key['id']}", content=raw, headers=headers)
        assert_openai_400(patched, "nests deeper than 256 levels")
    huge_literal = b'{"name": "x", "max_spend_usd": 1' + b"0" * 5000 + b"}"  # over Python's 4,300 digits
    assert_openai_400(httpx.post(gateway.base + "/v1/keys", content=huge_literal, headers=headers), "parse")


# --- 15.8: numbers outside int64, forged page tokens ---------------------------------------------


@pytest.mark.parametrize(
    "cap",
    [b"1e30", str(HUGE).encode(), b'"1e999990"', b'"1e999999999"', b"9223372036855", b"1e-999999999"],
)
def test_a_cap_outside_int64_micros_is_a_400_naming_max_spend_usd(
    gateway: Running, account: Account, cap: bytes
) -> None:
    headers = bearer(account.master_key)
    created = httpx.post(
        gateway.base + "/v1/keys", content=b'{"name": "x", "max_spend_usd": ' + cap + b"}", headers=headers
    )
    assert_openai_400(created, "max_spend_usd", param="max_spend_usd")
    key = account.mint("patched", max_spend_usd=5)
    patched = httpx.patch(
        gateway.base + f"/v1/keys/{key['id']}", content=b'{"max_spend_usd": ' + cap + b"}", headers=headers
    )
    assert_openai_400(patched, "max_spend_usd", param="max_spend_usd")
    assert account.get(f"/v1/keys/{key['id']}").json()["max_spend_micros"] == 5_000_000


def test_the_largest_cap_int64_holds_is_accepted(gateway: Running, account: Account) -> None:
    largest = format_usd(INT64_MAX)  # 9223372036854.775807
    key = account.mint("largest", max_spend_usd=largest)
    assert key["max_spend_micros"] == INT64_MAX and key["max_spend_usd"] == largest


@pytest.mark.parametrize(
    ("query", "param"),
    [
        (f"limit={HUGE}", "limit"),
        ("limit=3000000000", "limit"),  # fits int64, not the int32 page size
        ("limit=-1", "limit"),
        ("limit=1e30", "limit"),
        (f"page_token={base64.urlsafe_b64encode(str(HUGE).encode()).decode()}", "page_token"),
        (f"page_token={base64.urlsafe_b64encode(str(2**63).encode()).decode()}", "page_token"),
        (f"page_token={base64.urlsafe_b64encode(b'-5').decode()}", "page_token"),
    ],
)
def test_bad_paging_parameters_are_a_400_naming_the_field(
    gateway: Running, account: Account, query: str, param: str
) -> None:
    key = account.mint("paged")
    for path in ("/v1/keys", f"/v1/keys/{key['id']}/usage"):
        assert_openai_400(account.get(f"{path}?{query}"), param, param=param)


@pytest.mark.parametrize(
    ("query", "param"),
    [
        (f"from_ms=0&to_ms={HUGE}", "to_ms"),
        (f"from_ms={-HUGE}&to_ms=5", "from_ms"),
        (f"from_ms={2**63}&to_ms=5", "from_ms"),
        ("from_ms=0&to_ms=1e30", "to_ms"),
        ("from_ms=-5&to_ms=5", "from_ms"),
    ],
)
def test_usage_window_outside_int64_is_a_400_naming_the_field(
    gateway: Running, account: Account, query: str, param: str
) -> None:
    assert_openai_400(account.get(f"/v1/usage?{query}"), param, param=param)


def test_the_widest_usage_window_is_answered(gateway: Running, account: Account) -> None:
    response = account.get(f"/v1/usage?from_ms=0&to_ms={INT64_MAX}")
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("count", [1e25, HUGE, INT64_MAX, -(2**70)])
def test_candidate_count_outside_int64_is_never_a_500(
    gateway: Running, user_key: dict[str, object], count: float
) -> None:
    """Gemini's candidateCount multiplies the output estimate; however large, the estimate is
    bounded before it reaches the ledger's 64-bit integers (estimate.MAX_ESTIMATE_MICROS)."""
    for config in ({"candidateCount": count}, {"candidate_count": count}):
        body = {
            "contents": [{"parts": [{"text": "hi"}]}],
            "generationConfig": {**config, "maxOutputTokens": 1},
        }
        response = httpx.post(
            gateway.base + "/v1beta/models/gemini-2.5-flash:generateContent",
            json=body,
            headers=bearer(user_key["secret"]),
        )
        assert response.status_code in (200, 402), response.text


@pytest.mark.parametrize("field", ["n", "partial_images"])
@pytest.mark.parametrize("count", [10**15, 2**62, 10**30])
def test_an_image_count_outside_int64_is_refused_over_the_cap_not_a_500(
    gateway: Running, account: Account, mock: MockUpstream, field: str, count: int
) -> None:
    """Every estimator's bound is clamped before it reaches the ledger (proxy.upper_bound).
    (A strict key: one that is not admits while anything is left, and the provider refuses.)"""
    user_key = account.mint("images", max_spend_usd=5, strict=True)
    seen = len(mock.requests)
    body = {"model": "gpt-image-1", "prompt": "a cat", field: count}
    if field == "partial_images":
        body["stream"] = True
    response = httpx.post(
        gateway.base + "/v1/images/generations", json=body, headers=bearer(user_key["secret"])
    )
    assert response.status_code == 402, response.text
    assert len(mock.requests) == seen


# --- 15.9: credentials that cannot be keys -------------------------------------------------------

WEIRD_BEARERS = ["é" * 10, "\u2603-key", "x" * 20_000, "sg_live_\x7fabc"]


@pytest.mark.parametrize("secret", WEIRD_BEARERS, ids=["latin", "snowman", "20kB", "control"])
def test_a_bearer_that_cannot_be_a_key_is_401_on_the_key_api(gateway: Running, secret: str) -> None:
    headers = {b"authorization": f"Bearer {secret}".encode()}  # raw UTF-8 bytes on the wire
    for method, path in (("GET", "/v1/keys"), ("POST", "/v1/keys"), ("GET", "/v1/usage?from_ms=0&to_ms=1")):
        response = httpx.request(method, gateway.base + path, headers=headers, json={"name": "x"})
        assert response.status_code == 401, (method, path, response.text)
        error = response.json()["error"]
        assert error["code"] == "invalid_api_key" and error["message"] == "invalid credentials"


@pytest.mark.parametrize("secret", WEIRD_BEARERS, ids=["latin", "snowman", "20kB", "control"])
def test_a_bearer_that_cannot_be_a_key_is_401_on_inference_routes(
    gateway: Running, secret: str, mock: MockUpstream
) -> None:
    seen = len(mock.requests)
    raw = secret.encode()
    chat = httpx.post(
        gateway.base + "/v1/chat/completions",
        json={"model": "gpt-4o-mini", "messages": MESSAGES},
        headers={b"authorization": b"Bearer " + raw},
    )
    assert chat.status_code == 401 and chat.json()["error"]["code"] == "invalid_api_key", chat.text
    messages = httpx.post(
        gateway.base + "/v1/messages",
        json={"model": "claude-sonnet-4-6", "max_tokens": 1, "messages": MESSAGES},
        headers={b"x-api-key": raw},
    )
    assert messages.status_code == 401, messages.text
    assert messages.json()["error"]["type"] == "authentication_error"
    assert len(mock.requests) == seen
