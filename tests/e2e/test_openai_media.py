"""The official openai SDK's audio and image calls through spendgate: speech
billed per character (tts-1) or by tokens (gpt-4o-mini-tts), transcriptions
by the usage they report (tokens or duration) or, failing that, an estimate
from the file size, images per image (DALL·E) or by tokens (GPT Image)."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from fakeupstream.media import AUDIO_BYTES_PER_SECOND, IMAGE_TOKENS, mock_audio
from fakeupstream.server import MockUpstream, reply_text
from fakeupstream.wire import tokens
from tests.e2e.conftest import UPSTREAM_OPENAI_KEY, Account, Running

SPOKEN = "Welcome back. Your order has shipped."
AUDIO = bytes(range(256)) * 250  # 64,000 bytes: 4 s of the mock's audio


def micros(per_million: int) -> int:
    return -(-per_million // 1_000_000)


def sdk_for(gateway: Running, key: dict[str, object]) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base + "/v1", api_key=str(key["secret"]), max_retries=0)


@pytest.fixture
def sdk(gateway: Running, user_key: dict[str, object]) -> Iterator[openai.OpenAI]:
    with sdk_for(gateway, user_key) as client:
        yield client


def test_tts_1_is_billed_per_character(
    sdk: openai.OpenAI, account: Account, user_key: dict[str, object], mock: MockUpstream
) -> None:
    speech = sdk.audio.speech.create(model="tts-1-hd", voice="alloy", input=SPOKEN)
    assert speech.content == mock_audio(SPOKEN)
    received = mock.requests[-1]
    assert received.header("authorization") == f"Bearer {UPSTREAM_OPENAI_KEY}"
    (event,) = account.events(str(user_key["id"]), 1)
    assert (event["model"], event["characters"], event["estimated"]) == ("tts-1-hd", len(SPOKEN), False)
    assert event["cost_micros"] == micros(len(SPOKEN) * 30_000_000)


def test_gpt_4o_mini_tts_is_exact_with_sse_and_estimated_without(
    sdk: openai.OpenAI, account: Account, user_key: dict[str, object]
) -> None:
    with sdk.audio.speech.with_streaming_response.create(
        model="gpt-4o-mini-tts", voice="alloy", input=SPOKEN, stream_format="sse"
    ) as streamed:
        assert b"speech.audio.done" in streamed.read()
    sdk.audio.speech.create(model="gpt-4o-mini-tts", voice="alloy", input=SPOKEN)
    events = sorted(account.events(str(user_key["id"]), 2), key=lambda e: bool(e["estimated"]))
    exact, estimated = events
    prompt = tokens(len(SPOKEN.encode()))
    assert (exact["input_tokens"], exact["audio_output_tokens"], exact["estimated"]) == (
        prompt,
        len(SPOKEN),
        False,
    )
    assert exact["cost_micros"] == micros(prompt * 600_000 + len(SPOKEN) * 12_000_000)
    # No usage in a binary answer: UTF-8 bytes in, 2 audio tokens a character out, flagged.
    assert (estimated["input_tokens"], estimated["audio_output_tokens"]) == (len(SPOKEN), 2 * len(SPOKEN))


def test_transcriptions_bill_tokens_duration_or_an_estimate(
    sdk: openai.OpenAI, account: Account, user_key: dict[str, object], mock: MockUpstream
) -> None:
    done = sdk.audio.transcriptions.create(
        model="gpt-4o-transcribe", file=("call.mp3", AUDIO), prompt="Orders"
    )
    assert done.text == reply_text(16)
    assert mock.requests[-1].body.count(AUDIO) == 1  # the multipart body went through untouched
    verbose = sdk.audio.transcriptions.create(
        model="whisper-1", file=("call.mp3", AUDIO), response_format="verbose_json"
    )
    assert verbose.duration == 4.0
    sdk.audio.transcriptions.create(model="whisper-1", file=("call.mp3", AUDIO))  # json: no usage
    events = {(e["model"], e["estimated"]): e for e in account.events(str(user_key["id"]), 3)}
    by_tokens = events[("gpt-4o-transcribe", False)]
    audio_tokens, prompt = -(-len(AUDIO) // 1600), tokens(len(b"Orders"))
    assert (by_tokens["audio_input_tokens"], by_tokens["input_tokens"], by_tokens["output_tokens"]) == (
        audio_tokens,
        prompt,
        16,
    )
    assert by_tokens["cost_micros"] == micros(audio_tokens * 6_000_000 + prompt * 2_500_000 + 16 * 10_000_000)
    by_duration = events[("whisper-1", False)]
    assert by_duration["audio_ms"] == len(AUDIO) * 1000 // AUDIO_BYTES_PER_SECOND == 4000
    assert by_duration["cost_micros"] == micros(4000 * 100_000_000 // 1000)
    guessed = events[("whisper-1", True)]  # 64 KB at the 32 kbit/s the estimate assumes
    assert guessed["audio_ms"] == 16_000


def test_streamed_transcription_is_metered_from_the_done_event(
    sdk: openai.OpenAI, account: Account, user_key: dict[str, object]
) -> None:
    stream = sdk.audio.transcriptions.create(
        model="gpt-4o-mini-transcribe", file=("call.mp3", AUDIO), stream=True
    )
    kinds = [event.type for event in stream]
    assert kinds[-1] == "transcript.text.done" and kinds.count("transcript.text.delta") == 16
    (event,) = account.events(str(user_key["id"]), 1)
    assert (event["audio_input_tokens"], event["output_tokens"], event["estimated"]) == (40, 16, False)


def test_dall_e_is_billed_per_image_by_size_and_quality(
    sdk: openai.OpenAI, account: Account, user_key: dict[str, object], mock: MockUpstream
) -> None:
    sdk.images.generate(model="dall-e-3", prompt="a lighthouse", size="1792x1024", quality="hd")
    assert mock.requests[-1].json()["model"] == "dall-e-3"  # the variant is the gateway's, not upstream's
    sdk.images.generate(prompt="a lighthouse", n=2, size="512x512")  # no model: dall-e-2
    events = {e["model"]: e for e in account.events(str(user_key["id"]), 2)}
    assert events["dall-e-3:1792x1024:hd"]["images"] == 1
    assert events["dall-e-3:1792x1024:hd"]["cost_micros"] == 120_000
    assert (events["dall-e-2:512x512"]["images"], events["dall-e-2:512x512"]["cost_micros"]) == (2, 36_000)


def test_gpt_image_is_billed_by_the_tokens_it_reports(
    sdk: openai.OpenAI, account: Account, user_key: dict[str, object]
) -> None:
    sdk.images.generate(model="gpt-image-1", prompt="a lighthouse", size="1536x1024", quality="low", n=2)
    stream = sdk.images.generate(
        model="gpt-image-1-mini", prompt="a lighthouse", stream=True, partial_images=1
    )
    assert [e.type for e in stream][-1] == "image_generation.completed"
    events = {e["model"]: e for e in account.events(str(user_key["id"]), 2)}
    prompt = tokens(len(b"a lighthouse"))
    big = events["gpt-image-1"]
    assert (big["input_tokens"], big["output_tokens"], big["images"]) == (prompt, 2 * 408, 0)
    assert big["cost_micros"] == micros(prompt * 5_000_000 + 2 * 408 * 40_000_000)
    mini = events["gpt-image-1-mini"]
    assert mini["output_tokens"] == IMAGE_TOKENS["1024x1024"]["medium"] and mini["estimated"] is False


def test_image_refusals_happen_before_upstream(
    gateway: Running, account: Account, user_key: dict[str, object], mock: MockUpstream
) -> None:
    seen = len(mock.requests)
    with sdk_for(gateway, user_key) as client, pytest.raises(openai.BadRequestError) as odd_size:
        client.images.generate(model="dall-e-3", prompt="x", size="256x256")
    assert "dall-e-3:256x256:standard" in odd_size.value.message
    limited = account.mint("dalle-only", allowed_models=["dall-e-3"])
    key = account.mint("capped-images", max_spend_usd="0.01")
    with sdk_for(gateway, limited) as client, pytest.raises(openai.PermissionDeniedError):
        client.images.generate(model="dall-e-2", prompt="x")
    with sdk_for(gateway, limited) as client:
        client.images.generate(model="dall-e-3", prompt="x")  # any size of an allowed model
    with sdk_for(gateway, key) as client:
        client.images.generate(model="dall-e-3", prompt="x")  # 4 cents: past the 1 cent cap
        account.events(str(key["id"]), 1)
        before = len(mock.requests)
        with pytest.raises(openai.APIStatusError) as info:
            client.images.generate(model="dall-e-3", prompt="x")
    assert info.value.status_code == 402 and len(mock.requests) == before
    assert len(mock.requests) == seen + 2
