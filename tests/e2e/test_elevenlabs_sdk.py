"""The official elevenlabs SDK, unchanged but for its base URL, through spendgate:
text-to-speech whole, streamed and with timestamps, billed by ElevenLabs'
`character-cost`; caps, refusals and the provider key as an SDK user sees them."""

from __future__ import annotations

import base64
import contextlib
import math
from collections.abc import Iterator

import httpx
import pytest
from elevenlabs import ElevenLabs
from elevenlabs.core.api_error import ApiError
from elevenlabs.core.request_options import RequestOptions

from fakeupstream.media import STREAM_CHUNK_BYTES, mock_audio
from fakeupstream.server import MockUpstream
from tests.e2e.conftest import UPSTREAM_ELEVENLABS_KEY, Account, Running

PER_MCREDIT = 100_000_000  # every model: $0.10 per 1K credits (catalog_data/elevenlabs.toml)
TEXT = "Hello from the gateway, spoken aloud."
VOICE = "21m00Tcm4TlvDq8ikWAM"


def cost(credits: int) -> int:
    return -(-credits * PER_MCREDIT // 1_000_000)


@contextlib.contextmanager
def client(gateway: Running, key: dict[str, object] | str) -> Iterator[ElevenLabs]:
    """The SDK as a user builds it, on an HTTP client the test closes."""
    secret = key if isinstance(key, str) else str(key["secret"])
    with httpx.Client(timeout=60) as http:
        yield ElevenLabs(api_key=secret, base_url=gateway.base, httpx_client=http)


@pytest.fixture
def sdk(gateway: Running, user_key: dict[str, object]) -> Iterator[ElevenLabs]:
    with client(gateway, user_key) as c:
        yield c


def assert_upstream_got_the_provider_key(mock: MockUpstream, key: dict[str, object]) -> None:
    received = mock.requests[-1]
    assert received.header("xi-api-key") == UPSTREAM_ELEVENLABS_KEY
    secret = str(key["secret"])
    assert secret not in received.query and all(secret not in v for _, v in received.headers)


def test_convert_is_billed_by_character_cost(
    sdk: ElevenLabs, account: Account, user_key: dict[str, object], mock: MockUpstream
) -> None:
    audio = b"".join(sdk.text_to_speech.convert(VOICE, text=TEXT, output_format="mp3_44100_128"))
    assert audio == mock_audio(TEXT)  # passed through untouched
    received = mock.requests[-1]
    assert (received.path, received.query) == (f"/v1/text-to-speech/{VOICE}", "output_format=mp3_44100_128")
    assert "model_id" not in received.json()  # ElevenLabs' default applies, and is what is billed
    assert_upstream_got_the_provider_key(mock, user_key)
    (event,) = account.events(str(user_key["id"]), 1)
    assert (event["provider"], event["model"], event["status"]) == (
        "elevenlabs",
        "eleven_multilingual_v2",
        "ok",
    )
    assert (event["characters"], event["estimated"], event["input_tokens"]) == (len(TEXT), False, 0)
    assert event["cost_micros"] == cost(len(TEXT))


def test_flash_stream_is_chunked_and_costs_half_a_credit_per_character(
    sdk: ElevenLabs, account: Account, user_key: dict[str, object]
) -> None:
    chunks = list(sdk.text_to_speech.stream(VOICE, text=TEXT * 20, model_id="eleven_flash_v2_5"))
    assert b"".join(chunks) == mock_audio(TEXT * 20) and len(mock_audio(TEXT * 20)) > STREAM_CHUNK_BYTES
    (event,) = account.events(str(user_key["id"]), 1)
    credits = math.ceil(len(TEXT * 20) / 2)
    assert (event["model"], event["characters"], event["cost_micros"]) == (
        "eleven_flash_v2_5",
        credits,
        cost(credits),
    )


def test_with_timestamps_variants_are_metered(
    sdk: ElevenLabs, account: Account, user_key: dict[str, object]
) -> None:
    whole = sdk.text_to_speech.convert_with_timestamps(VOICE, text=TEXT, model_id="eleven_v3")
    assert base64.b64decode(whole.audio_base_64) == mock_audio(TEXT)
    streamed = list(sdk.text_to_speech.stream_with_timestamps(VOICE, text=TEXT, model_id="eleven_turbo_v2_5"))
    assert b"".join(base64.b64decode(c.audio_base_64) for c in streamed) == mock_audio(TEXT)
    events = sorted(account.events(str(user_key["id"]), 2), key=lambda e: str(e["model"]))
    assert [(e["model"], e["characters"]) for e in events] == [
        ("eleven_turbo_v2_5", math.ceil(len(TEXT) / 2)),
        ("eleven_v3", len(TEXT)),
    ]


def test_over_cap_is_402_before_any_byte_goes_upstream(
    gateway: Running, account: Account, mock: MockUpstream
) -> None:
    key = account.mint("capped-tts", max_spend_usd="0.001")  # 1000 micros: 10 credits' worth
    with client(gateway, key) as sdk:
        b"".join(sdk.text_to_speech.convert(VOICE, text=TEXT))  # admitted while remaining > 0
        account.events(str(key["id"]), 1)
        seen = len(mock.requests)
        with pytest.raises(ApiError) as info:
            b"".join(sdk.text_to_speech.convert(VOICE, text=TEXT))
    assert info.value.status_code == 402
    assert info.value.body["detail"]["status"] == "spend_cap_exceeded"
    assert "Spend cap reached" in info.value.body["detail"]["message"]
    assert len(mock.requests) == seen  # nothing was forwarded


def test_refusals_come_back_in_elevenlabs_shape(
    gateway: Running, account: Account, user_key: dict[str, object], mock: MockUpstream
) -> None:
    seen = len(mock.requests)
    with client(gateway, user_key) as sdk, pytest.raises(ApiError) as unknown:
        b"".join(sdk.text_to_speech.convert(VOICE, text=TEXT, model_id="eleven_v9"))
    assert unknown.value.status_code == 400 and "eleven_v9" in unknown.value.body["detail"]["message"]
    with client(gateway, "sg_live_" + "x" * 43) as sdk, pytest.raises(ApiError) as bad_key:
        b"".join(sdk.text_to_speech.convert(VOICE, text="x"))
    assert bad_key.value.status_code == 401
    limited = account.mint("flash-only", allowed_models=["eleven_flash_v2_5"])
    with client(gateway, limited) as sdk, pytest.raises(ApiError) as forbidden:
        b"".join(sdk.text_to_speech.convert(VOICE, text=TEXT))
    assert forbidden.value.status_code == 403
    assert len(mock.requests) == seen


def test_upstream_error_passes_through_and_costs_nothing(
    sdk: ElevenLabs, account: Account, user_key: dict[str, object]
) -> None:
    options = RequestOptions(max_retries=0, additional_headers={"x-mock-status": "500"})
    with pytest.raises(ApiError) as info:
        b"".join(sdk.text_to_speech.convert(VOICE, text=TEXT, request_options=options))
    assert info.value.status_code == 500 and info.value.body["detail"]["status"] == "mock_error"
    (event,) = account.events(str(user_key["id"]), 1)
    assert (event["cost_micros"], event["status"]) == (0, "upstream_error")


def test_stream_cut_by_upstream_is_still_billed(
    sdk: ElevenLabs, account: Account, user_key: dict[str, object]
) -> None:
    options = RequestOptions(max_retries=0, additional_headers={"x-mock-abort-after": "1"})
    with pytest.raises(Exception):  # noqa: B017 - the connection drops: httpx's error, raw
        b"".join(sdk.text_to_speech.stream(VOICE, text=TEXT * 40, request_options=options))
    (event,) = account.events(str(user_key["id"]), 1)
    # ElevenLabs charged for the whole text when it answered: character-cost came with the headers.
    assert (event["status"], event["characters"], event["estimated"]) == (
        "upstream_aborted",
        len(TEXT * 40),
        False,
    )
