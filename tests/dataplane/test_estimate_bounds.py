"""The token estimate is an upper bound for the request shapes whose cost is not the body's
bytes: several answers, images, and input the provider holds or fetches (estimate.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from controlplane.money import Rule
from dataplane import estimate
from dataplane.errors import BadRequest, Unbounded
from dataplane.inbound import RequestView
from dataplane.pricing import ModelPrice

MINI = ModelPrice("openai", "gpt-4o-mini", 150_000, 600_000, 75_000, None, 16_384)
GPT4O = ModelPrice("openai", "gpt-4o", 2_500_000, 10_000_000, 1_250_000, None, 16_384)
SONNET = ModelPrice("anthropic", "claude-sonnet-4-6", 3_000_000, 15_000_000, 300_000, 3_750_000, 64_000)
FLASH = ModelPrice(
    "google",
    "gemini-2.5-flash",
    300_000,
    2_500_000,
    30_000,
    None,
    65_536,
    audio_input_micros_per_mtok=1_000_000,
)
LIMITS = estimate.Limits(max_referenced_input_tokens=1_000_000)
STRICT = estimate.Limits(max_referenced_input_tokens=1_000_000, strict=True)

URL = "https://example.com/cat.png"
CHAT_IMAGE = {"type": "image_url", "image_url": {"url": URL}}


def chat(*parts: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {
        "model": "m",
        "messages": [{"role": "user", "content": ["hi", *parts]}],
        "max_tokens": 100,
        **fields,
    }


def view(body: dict[str, Any]) -> RequestView:
    return RequestView(len(json.dumps(body).encode()), body)


def bound(
    body: dict[str, Any],
    price: ModelPrice,
    *,
    images: int = 0,
    image: int = 0,
    output: int = 100,
    referenced: int = 0,
) -> int:
    """bytes × dearest input rate + images × per-image tokens × that rate + referenced tokens
    × the dearest rate (audio included) + output × output rate, rounded up."""
    rate = max(price.input_micros_per_mtok, price.cache_write_micros_per_mtok or 0)
    ref_rate = max(rate, price.audio_input_micros_per_mtok or 0)
    total = (
        view(body).raw_len * rate
        + images * image * rate
        + referenced * ref_rate
        + output * price.output_micros_per_mtok
    )
    return -(-total // 1_000_000)


GEMINI_IMAGE = {
    "fileData": {"mimeType": "image/png", "fileUri": "https://generativelanguage.googleapis.com/f/1"}
}
GEMINI_VIDEO = {"file_data": {"mime_type": "video/mp4", "file_uri": "https://youtu.be/x"}}


def gemini(*parts: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"contents": [{"role": "user", "parts": [{"text": "hi"}, *parts]}], **fields}


# (case, body, price, expected bound). Every case is under-estimated by the body-bytes estimate.
CASES: list[tuple[str, dict[str, Any], ModelPrice, int]] = []
REFERENCES: set[str] = set()  # the cases a strict key refuses


def case(name: str, body: dict[str, Any], price: ModelPrice, **expected: int) -> None:
    CASES.append((name, body, price, bound(body, price, **expected)))
    if expected.get("referenced"):
        REFERENCES.add(name)


# Several answers: each is generated and billed.
case("chat n=8", chat(n=8), MINI, output=800)
case(
    "completions best_of over n",
    {"model": "m", "prompt": "p", "max_tokens": 100, "n": 2, "best_of": 5},
    MINI,
    output=500,
)
case(
    "completions n over best_of",
    {"model": "m", "prompt": "p", "max_tokens": 100, "n": 3, "best_of": 1},
    MINI,
    output=300,
)
case(
    "gemini snake_case candidate_count and max_output_tokens",
    gemini(generation_config={"candidate_count": 4, "max_output_tokens": 100}),
    FLASH,
    output=400,
)
case(
    "gemini camelCase config, snake_case count inside",
    gemini(generationConfig={"candidate_count": 2, "maxOutputTokens": 100}),
    FLASH,
    output=200,
)
case(
    "gemini both spellings: the larger count and limit",
    gemini(
        generationConfig={"candidateCount": 2, "maxOutputTokens": 50},
        generation_config={"candidate_count": 3, "max_output_tokens": 100},
    ),
    FLASH,
    output=300,
)
case(
    "gemini both spellings, camelCase larger",
    gemini(
        generationConfig={"candidateCount": 3, "maxOutputTokens": 100},
        generation_config={"candidate_count": 2, "max_output_tokens": 50},
    ),
    FLASH,
    output=300,
)
case(
    "gemini both spellings in one config, snake_case larger",
    gemini(
        generationConfig={
            "maxOutputTokens": 50,
            "max_output_tokens": 100,
            "candidateCount": 1,
            "candidate_count": 2,
        }
    ),
    FLASH,
    output=200,
)
case(
    "gemini both spellings in one config, camelCase larger",
    gemini(
        generation_config={
            "max_output_tokens": 50,
            "maxOutputTokens": 100,
            "candidate_count": 1,
            "candidateCount": 2,
        }
    ),
    FLASH,
    output=200,
)
# Images: by URL, by file id, and inline (a flat-colour image of any size is a few bytes).
case("chat image by URL", chat(CHAT_IMAGE), MINI, images=1, image=48_169)
case(
    "chat image inline",
    chat({"type": "image_url", "image_url": {"url": "data:image/webp;base64,UklG"}}),
    MINI,
    images=1,
    image=48_169,
)
case("gpt-4o's documented tile rule", chat(CHAT_IMAGE, CHAT_IMAGE), GPT4O, images=2, image=1_445)
case(
    "responses input_image by URL and by file id",
    {
        "model": "m",
        "max_output_tokens": 100,
        "input": [
            {
                "role": "user",
                "content": [
                    {"type": "input_image", "image_url": URL},
                    {"type": "input_image", "file_id": "file-1"},
                ],
            }
        ],
    },
    MINI,
    images=2,
    image=48_169,
)
case(
    "anthropic image by url and by file, at the cache-write rate",
    {
        "model": "m",
        "max_tokens": 100,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image", "source": {"type": "url", "url": URL}},
                    {"type": "image", "source": {"type": "file", "file_id": "file_1"}},
                ],
            }
        ],
    },
    SONNET,
    images=2,
    image=5_000,
)
case(
    "anthropic image inside a tool result",
    {
        "model": "m",
        "max_tokens": 100,
        "messages": [
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t",
                        "content": [{"type": "image", "source": {"type": "url", "url": URL}}],
                    }
                ],
            }
        ],
    },
    SONNET,
    images=1,
    image=5_000,
)
case(
    "gemini fileData image",
    gemini(GEMINI_IMAGE, generationConfig={"maxOutputTokens": 100}),
    FLASH,
    images=1,
    image=4_128,
)
case(
    "gemini inline_data image, snake_case mime_type",
    gemini(
        {"inline_data": {"mime_type": "image/webp", "data": "UklG"}},
        generationConfig={"maxOutputTokens": 100},
    ),
    FLASH,
    images=1,
    image=4_128,
)
case(
    "gemini file_data image, snake_case mime_type",
    gemini(
        {
            "file_data": {
                "mime_type": "image/png",
                "file_uri": "https://generativelanguage.googleapis.com/f/1",
            }
        },
        generationConfig={"maxOutputTokens": 100},
    ),
    FLASH,
    images=1,
    image=4_128,
)
# References with no visible bound: the referenced-input bound, once, at the dearest input rate.
case(
    "responses previous_response_id",
    {"model": "m", "max_output_tokens": 100, "input": "and then?", "previous_response_id": "resp_1"},
    MINI,
    referenced=1_000_000,
)
case(
    "responses conversation",
    {"model": "m", "max_output_tokens": 100, "input": "hi", "conversation": "conv_1"},
    MINI,
    referenced=1_000_000,
)
case(
    "responses stored prompt",
    {"model": "m", "max_output_tokens": 100, "prompt": {"id": "pmpt_1"}},
    MINI,
    referenced=1_000_000,
)
case(
    "responses input_file by URL",
    {
        "model": "m",
        "max_output_tokens": 100,
        "input": [
            {"role": "user", "content": [{"type": "input_file", "file_url": "https://example.com/a.pdf"}]}
        ],
    },
    MINI,
    referenced=1_000_000,
)
case(
    "responses item_reference",
    {"model": "m", "max_output_tokens": 100, "input": [{"type": "item_reference", "id": "msg_1"}]},
    MINI,
    referenced=1_000_000,
)
case(
    "responses built-in tool",
    {
        "model": "m",
        "max_output_tokens": 100,
        "input": "news?",
        "tools": [{"type": "function", "name": "f"}, {"type": "web_search"}],
    },
    MINI,
    referenced=1_000_000,
)
case(
    "chat file part by id", chat({"type": "file", "file": {"file_id": "file-1"}}), MINI, referenced=1_000_000
)
case("chat web_search_options", chat(web_search_options={}), MINI, referenced=1_000_000)
case(
    "anthropic document by url",
    {
        "model": "m",
        "max_tokens": 100,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}}
                ],
            }
        ],
    },
    SONNET,
    referenced=1_000_000,
)
case(
    "anthropic server tool",
    {
        "model": "m",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "news?"}],
        "tools": [{"type": "web_search_20250305", "name": "web_search"}],
    },
    SONNET,
    referenced=1_000_000,
)
case(
    "gemini cachedContent",
    gemini(cachedContent="cachedContents/1", generationConfig={"maxOutputTokens": 100}),
    FLASH,
    referenced=1_000_000,
)
case(
    "gemini cached_content",
    gemini(cached_content="cachedContents/1", generationConfig={"maxOutputTokens": 100}),
    FLASH,
    referenced=1_000_000,
)
case(
    "gemini video by URI, at the audio rate",
    gemini(GEMINI_VIDEO, generationConfig={"maxOutputTokens": 100}),
    FLASH,
    referenced=1_000_000,
)
case(
    "gemini inline pdf",
    gemini(
        {"inlineData": {"mimeType": "application/pdf", "data": "JVBE"}},
        generationConfig={"maxOutputTokens": 100},
    ),
    FLASH,
    referenced=1_000_000,
)
case(
    "gemini inline_data pdf, snake_case mime_type",
    gemini(
        {"inline_data": {"mime_type": "application/pdf", "data": "JVBE"}},
        generationConfig={"maxOutputTokens": 100},
    ),
    FLASH,
    referenced=1_000_000,
)
case(
    "gemini inline video under mime_type beside an image mimeType",
    gemini(
        {"inlineData": {"mimeType": "image/png", "mime_type": "video/mp4", "data": "AAAA"}},
        generationConfig={"maxOutputTokens": 100},
    ),
    FLASH,
    referenced=1_000_000,
)
case(
    "gemini file_data video beside a fileData image",
    gemini(
        {
            "fileData": {"mimeType": "image/png", "fileUri": "https://generativelanguage.googleapis.com/f/1"},
            "file_data": {"mime_type": "video/mp4", "file_uri": "https://youtu.be/x"},
        },
        generationConfig={"maxOutputTokens": 100},
    ),
    FLASH,
    referenced=1_000_000,
)
case(
    "gemini snake_case google_search tool",
    gemini(tools=[{"google_search": {}}], generation_config={"max_output_tokens": 100}),
    FLASH,
    referenced=1_000_000,
)
case(
    "gemini google search tool",
    gemini(tools=[{"googleSearch": {}}], generationConfig={"maxOutputTokens": 100}),
    FLASH,
    referenced=1_000_000,
)
case(
    "references are bounded together, images one by one",
    {
        "model": "m",
        "max_output_tokens": 100,
        "previous_response_id": "resp_1",
        "input": [
            {
                "role": "user",
                "content": [
                    {"type": "input_file", "file_id": "file-1"},
                    {"type": "input_file", "file_id": "file-2"},
                    {"type": "input_image", "image_url": URL},
                    {"type": "input_image", "image_url": URL},
                ],
            }
        ],
    },
    MINI,
    images=2,
    image=48_169,
    referenced=1_000_000,
)
case("n and an image together", chat(CHAT_IMAGE, n=2), MINI, images=1, image=48_169, output=200)


@pytest.mark.parametrize(("name", "body", "price", "expected"), CASES, ids=[c[0] for c in CASES])
def test_estimate_bounds_what_the_body_bytes_miss(
    name: str, body: dict[str, Any], price: ModelPrice, expected: int
) -> None:
    assert estimate.tokens(view(body), price, LIMITS) == expected


@pytest.mark.parametrize(("name", "body", "price", "expected"), CASES, ids=[c[0] for c in CASES])
def test_strict_keys_refuse_only_what_cannot_be_bounded(
    name: str, body: dict[str, Any], price: ModelPrice, expected: int
) -> None:
    if name not in REFERENCES:  # more answers and images are bounded: counted, not refused
        assert estimate.tokens(view(body), price, STRICT) == expected
        return
    with pytest.raises(Unbounded) as info:
        estimate.tokens(view(body), price, STRICT)
    assert isinstance(info.value, BadRequest)
    assert (info.value.status, info.value.code) == (400, "input_not_bounded")
    assert (
        info.value.param
        and f"`{info.value.param}`" in info.value.message
        and "(strict)" in info.value.message
    )


def test_strict_refusal_names_the_field_and_the_way_out() -> None:
    body = {"model": "m", "input": "and then?", "previous_response_id": "resp_1"}
    with pytest.raises(Unbounded) as info:
        estimate.tokens(view(body), MINI, STRICT)
    assert info.value.param == "previous_response_id"
    assert info.value.message == (
        "`previous_response_id`: the size of a stored conversation cannot be bounded before the provider "
        "runs it; this key admits only requests whose whole cost is known (strict). Send the input inline, "
        "or use a key without strict."
    )
    tools = {"model": "m", "input": "news?", "tools": [{"type": "file_search", "vector_store_ids": ["vs"]}]}
    with pytest.raises(Unbounded, match="Use function tools"):
        estimate.tokens(view(tools), MINI, STRICT)


def test_what_the_body_does_contain_adds_nothing() -> None:
    for body, price in [
        (chat(n=1), MINI),
        (chat(n=True), MINI),  # JSON true is not a count
        (chat(n="8"), MINI),
        (
            {
                "model": "m",
                "input": "hi",
                "previous_response_id": None,
                "tools": [{"type": "function", "name": "f"}],
            },
            MINI,
        ),
        (
            {
                "model": "m",
                "max_tokens": 100,
                "messages": [{"role": "user", "content": "ls"}],
                "tools": [{"type": "bash_20250124", "name": "bash"}, {"name": "f", "input_schema": {}}],
            },
            SONNET,
        ),
        (
            {
                "model": "m",
                "max_tokens": 100,
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "document",
                                "source": {"type": "text", "media_type": "text/plain", "data": "txt"},
                            }
                        ],
                    }
                ],
            },
            SONNET,
        ),
        (
            gemini(
                {"inlineData": {"mimeType": "audio/ogg", "data": "T2dn"}},
                tools=[{"functionDeclarations": [{"name": "f"}]}],
                generationConfig={"candidateCount": True},
            ),
            FLASH,
        ),
        (  # the caller runs these tools in either spelling
            gemini(
                {"inline_data": {"mime_type": "audio/ogg", "data": "T2dn"}},
                tools=[
                    {"function_declarations": [{"name": "f"}]},
                    {"computer_use": {"environment": "ENVIRONMENT_BROWSER"}},
                    {"computerUse": {"environment": "ENVIRONMENT_BROWSER"}},
                ],
                generation_config={"candidate_count": True},
            ),
            FLASH,
        ),
    ]:
        assert estimate.tokens(view(body), price, STRICT) == estimate.upper_bound_micros(
            view(body).raw_len, body, price
        )
    assert estimate.choices({"n": True, "best_of": False, "generationConfig": {"candidateCount": 1.5}}) == 1


# (body, the output limit it bounds) for gpt-4o-mini, whose catalog maximum is 16,384.
LIMIT_SPELLINGS = [
    ({"max_tokens": 1_000, "max_completion_tokens": 10}, 1_000),
    ({"max_completion_tokens": 10, "max_tokens": 1_000}, 1_000),
    ({"max_tokens": 10, "max_completion_tokens": 1_000}, 1_000),
    ({"max_completion_tokens": 1_000, "max_tokens": 10}, 1_000),
    ({"max_output_tokens": 1_000, "max_tokens": 10, "max_completion_tokens": 20}, 1_000),
    ({"max_completion_tokens": 10, "max_tokens": 10**9}, 16_384),  # still capped by the catalog
    ({"max_completion_tokens": 10, "max_tokens": "1000"}, 10),  # not a count: ignored
    ({"max_tokens": 10, "generationConfig": {"maxOutputTokens": 1_000}}, 1_000),
]


@pytest.mark.parametrize(("body", "limit"), LIMIT_SPELLINGS, ids=[str(body) for body, _ in LIMIT_SPELLINGS])
def test_several_output_limits_bound_by_the_largest(body: dict[str, Any], limit: int) -> None:
    """DeepSeek and other OpenAI-compatible providers honour `max_tokens` even beside
    `max_completion_tokens`: whichever a provider reads, the estimate must bound it."""
    assert estimate.output_limit(body, MINI) == limit
    request = chat(**body)
    assert estimate.tokens(view(request), MINI, STRICT) == bound(request, MINI, output=limit)


def test_deep_nesting_is_walked_without_recursion() -> None:
    node: dict[str, Any] = dict(CHAT_IMAGE)
    for _ in range(100_000):
        node = {"content": [node]}
    node["previous_response_id"] = "resp_1"
    found = estimate.unseen_inputs(node, "openai")
    assert found.images == 1 and found.reference is not None
    assert found.reference.field == "previous_response_id"


def test_absurd_choices_keep_the_estimate_in_range() -> None:
    assert estimate.tokens(view(chat(n=10**30)), MINI, LIMITS) == estimate.MAX_ESTIMATE_MICROS


# --- price rules: the estimate reserves at the dearest rate that may apply -----------------------

PRO = ModelPrice(
    "google",
    "gemini-2.5-pro",
    1_250_000,
    10_000_000,
    125_000,
    None,
    65_536,
    rules=(
        Rule(
            {"input_micros_per_mtok": 2_500_000, "output_micros_per_mtok": 15_000_000},
            above_input_tokens=200_000,
        ),
    ),
)
PEAK = Rule({"input_micros_per_mtok": 1_320_000, "output_micros_per_mtok": 3_960_000}, window=(60, 240))
V4 = ModelPrice("deepseek", "deepseek-v4-pro", 660_000, 1_980_000, 22_000, None, 384_000, rules=(PEAK,))
DAY = 1_796_083_200_000  # a midnight, UTC


def test_a_body_that_could_cross_a_prompt_tier_is_reserved_at_the_tier_rate() -> None:
    small, large = view(chat(max_tokens=10)), view(chat(max_tokens=10, pad="x" * 250_000))
    assert estimate.input_tokens_bound(small, PRO, LIMITS) <= 200_000
    assert (
        PRO.dearest(estimate.input_tokens_bound(small, PRO, LIMITS), DAY).input_micros_per_mtok == 1_250_000
    )
    tiered = PRO.dearest(estimate.input_tokens_bound(large, PRO, LIMITS), DAY)
    assert (tiered.input_micros_per_mtok, tiered.output_micros_per_mtok) == (2_500_000, 15_000_000)
    # A small body whose image the provider fetches could be anything: the referenced-input bound applies.
    referenced = view({"contents": [{"parts": [{"fileData": {"fileUri": URL}}]}]})
    assert (
        PRO.dearest(estimate.input_tokens_bound(referenced, PRO, LIMITS), DAY).input_micros_per_mtok
        == 2_500_000
    )


@pytest.mark.parametrize(
    ("minute", "dear"),
    [(30, False), (59, True), (60, True), (120, True), (239, True), (240, False), (600, False)],
)
def test_a_time_of_day_window_in_force_or_starting_within_a_minute_is_reserved_at_its_rate(
    minute: int, dear: bool
) -> None:
    """Priced by the request's start as the control plane reads it: a window about to open counts."""
    at = DAY + minute * 60_000
    assert (V4.dearest(0, at).input_micros_per_mtok == 1_320_000) is dear


def test_a_service_tier_rule_counts_only_when_the_request_asks_for_that_tier() -> None:
    priority = Rule({"input_micros_per_mtok": 250_000}, service_tier="priority")
    mini = ModelPrice("openai", "gpt-4o-mini", 150_000, 600_000, 75_000, None, 16_384, rules=(priority,))
    assert mini.dearest(10, DAY).input_micros_per_mtok == 150_000
    assert mini.dearest(10, DAY, "priority").input_micros_per_mtok == 250_000
