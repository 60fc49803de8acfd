"""The fake upstream's non-token APIs over real HTTP: each provider's auth and
error shape, the deterministic amounts tests compute costs from, and the
delivery knobs."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import httpx
import pytest

from fakeupstream.media import (
    AUDIO_BYTES_PER_CHAR,
    AUDIO_BYTES_PER_SECOND,
    STREAM_CHUNK_BYTES,
    elevenlabs_cost,
    mock_audio,
    url_seconds,
)
from fakeupstream.server import MockUpstream, reply_text, running_mock

TEXT = "The quick brown fox jumps over the lazy dog."


@pytest.fixture(scope="module")
def mock() -> Iterator[MockUpstream]:
    with running_mock() as server:
        yield server


@pytest.fixture
def http(mock: MockUpstream) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=mock.url, timeout=10) as client:
        yield client


XI = {"xi-api-key": "sk_test"}
TOKEN = {"authorization": "Token dg-test"}


def test_elevenlabs_audio_headers_and_chunks(http: httpx.Client) -> None:
    whole = http.post("/v1/text-to-speech/v1ce", json={"text": TEXT}, headers=XI)
    assert whole.status_code == 200 and whole.content == mock_audio(TEXT)
    assert len(whole.content) == AUDIO_BYTES_PER_CHAR * len(TEXT)
    assert whole.headers["character-cost"] == str(len(TEXT)) and whole.headers["request-id"]
    body = {"text": TEXT, "model_id": "eleven_flash_v2_5"}
    with http.stream("POST", "/v1/text-to-speech/v1ce/stream", json=body, headers=XI) as streamed:
        assert streamed.headers["transfer-encoding"] == "chunked"
        assert streamed.headers["character-cost"] == str(elevenlabs_cost("eleven_flash_v2_5", TEXT)) == "22"
        assert streamed.read() == mock_audio(TEXT)
    stamped = http.post("/v1/text-to-speech/v1ce/with-timestamps", json={"text": TEXT}, headers=XI).json()
    assert base64.b64decode(stamped["audio_base64"]) == mock_audio(TEXT)
    lines = http.post("/v1/text-to-speech/v1ce/stream/with-timestamps", json={"text": TEXT}, headers=XI)
    chunks = [json.loads(line) for line in lines.text.splitlines()]
    assert len(chunks) == -(-len(mock_audio(TEXT)) // STREAM_CHUNK_BYTES)


def test_elevenlabs_errors(http: httpx.Client) -> None:
    missing = http.post("/v1/text-to-speech/v1ce", json={"text": TEXT})
    assert missing.status_code == 401 and missing.json()["detail"]["status"] == "invalid_api_key"
    bearer = http.post("/v1/text-to-speech/v1ce", json={"text": TEXT}, headers={"authorization": "Bearer x"})
    assert bearer.status_code == 401
    knob = http.post("/v1/text-to-speech/v1ce", json={"text": TEXT}, headers={**XI, "x-mock-status": "429"})
    assert knob.status_code == 429 and set(knob.json()["detail"]) == {"status", "message"}
    invalid = http.post("/v1/text-to-speech/v1ce", json={"voice": "x"}, headers=XI)
    assert invalid.status_code == 422 and invalid.json()["detail"][0]["loc"] == ["body", "text"]


def test_elevenlabs_stream_abort_closes_after_n_chunks(http: httpx.Client) -> None:
    headers = {**XI, "x-mock-abort-after": "2"}
    with (
        pytest.raises(httpx.RemoteProtocolError),
        http.stream("POST", "/v1/text-to-speech/v/stream", json={"text": TEXT * 10}, headers=headers) as r,
    ):
        r.read()


def test_deepgram_duration_comes_from_the_body(http: httpx.Client, mock: MockUpstream) -> None:
    audio = b"\x01" * 24_000
    reply = http.post("/v1/listen?model=nova-3&smart_format=true", content=audio, headers=TOKEN)
    metadata = reply.json()["metadata"]
    assert metadata["duration"] == len(audio) / AUDIO_BYTES_PER_SECOND == 1.5
    assert metadata["channels"] == 1 and metadata["models"] and metadata["model_info"]
    assert reply.json()["results"]["channels"][0]["alternatives"][0]["transcript"] == reply_text(16)
    assert mock.requests[-1].body == audio
    url = "https://example.com/a.wav"
    fetched = http.post("/v1/listen?multichannel=true", json={"url": url}, headers=TOKEN).json()
    assert (fetched["metadata"]["duration"], fetched["metadata"]["channels"]) == (url_seconds(url), 2)
    accepted = http.post("/v1/listen?callback=https://x/hook", content=audio, headers=TOKEN).json()
    assert list(accepted) == ["request_id"]


def test_deepgram_errors(http: httpx.Client) -> None:
    missing = http.post("/v1/listen", content=b"\x01" * 10)
    assert missing.status_code == 401 and missing.json()["err_code"] == "INVALID_AUTH"
    assert set(missing.json()) == {"err_code", "err_msg", "request_id"}
    knob = http.post("/v1/listen", content=b"\x01", headers={**TOKEN, "x-mock-status": "402"})
    assert knob.status_code == 402 and knob.json()["err_msg"].startswith("Mock error 402")
    empty = http.post("/v1/listen", json={}, headers=TOKEN)
    assert empty.status_code == 400


def test_openai_media_needs_bearer_and_answers_in_openai_shape(http: httpx.Client) -> None:
    speech = {"model": "tts-1", "voice": "alloy", "input": TEXT}
    assert http.post("/v1/audio/speech", json=speech).status_code == 401
    ok = http.post("/v1/audio/speech", json=speech, headers={"authorization": "Bearer sk"})
    assert ok.content == mock_audio(TEXT)
    bad = http.post(
        "/v1/audio/speech", json={**speech, "stream_format": "sse"}, headers={"authorization": "Bearer sk"}
    )
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "stream_format"
    images = http.post(
        "/v1/images/generations",
        json={"model": "dall-e-3", "prompt": "x"},
        headers={"authorization": "Bearer sk"},
    ).json()
    assert "usage" not in images and len(images["data"]) == 1
