"""The request side of the non-token APIs: reading audio and multipart bodies,
resolving the model (another field, the query, a default, a variant), and
the upper-bound estimates."""

from __future__ import annotations

import pytest

from dataplane import estimate
from dataplane.config import Settings
from dataplane.errors import BadRequest, UnknownModel
from dataplane.inbound import RequestView, parse_form, read_body
from dataplane.keycache import KeyState
from dataplane.pricing import Catalog, ModelPrice
from dataplane.providers import deepgram
from dataplane.proxy import prepare
from dataplane.routes import ROUTES, Route

BOUNDARY = "fe33dce3e08d69c3e66c19cff9a48c98"
FORM = (
    (
        f"--{BOUNDARY}\r\n"
        'Content-Disposition: form-data; name="model"\r\n\r\ngpt-4o-transcribe\r\n'
        f"--{BOUNDARY}\r\n"
        'Content-Disposition: form-data; name="stream"\r\n\r\ntrue\r\n'
        f"--{BOUNDARY}\r\n"
        'Content-Disposition: form-data; name="include[]"\r\n\r\nlogprobs\r\n'
        f"--{BOUNDARY}\r\n"
        'Content-Disposition: form-data; name="file"; filename="call.mp3"\r\nContent-Type: audio/mpeg\r\n\r\n'
    ).encode()
    + bytes(range(256)) * 4
    + f"\r\n--{BOUNDARY}--\r\n".encode()
)
FORM_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


def route(path: str) -> Route:
    return next(r for r in ROUTES if r.path == path)


def price(provider: str, model: str, **rates: int) -> ModelPrice:
    base = {"input_micros_per_mtok": 0, "output_micros_per_mtok": 0, "max_output_tokens": 0}
    fields = {**base, "cached_input_micros_per_mtok": None, "cache_write_micros_per_mtok": None, **rates}
    return ModelPrice(provider=provider, model=model, **fields)  # type: ignore[arg-type]


CATALOG = Catalog(
    [
        price("elevenlabs", "eleven_multilingual_v2", characters_micros_per_mchar=100_000_000),
        price("elevenlabs", "eleven_flash_v2_5", characters_micros_per_mchar=100_000_000),
        price("deepgram", "base", audio_seconds_micros_per_msec=80_000_000),
        price("deepgram", "nova-2", audio_seconds_micros_per_msec=71_666_667),
        price("deepgram", "nova-3:multilingual", audio_seconds_micros_per_msec=86_666_667),
        price("openai", "dall-e-3:1024x1024:standard", images_micros_per_mimage=40_000_000_000),
        price(
            "openai",
            "gpt-image-1",
            input_micros_per_mtok=5_000_000,
            output_micros_per_mtok=40_000_000,
            max_output_tokens=6250,
        ),
    ]
)


def key(*allowed: str) -> KeyState:
    return KeyState("k1", "acct", "user", False, False, frozenset(allowed), None)


KEY = key()


def test_multipart_fields_are_read_and_the_file_only_measured() -> None:
    fields, upload = parse_form(FORM, FORM_TYPE)
    assert fields == {"model": "gpt-4o-transcribe", "stream": True, "include": ["logprobs"]}
    assert upload == 1024
    view = read_body("multipart", FORM, FORM_TYPE, {}, {})
    assert (view.body["model"], view.upload_bytes, view.json_body) == ("gpt-4o-transcribe", 1024, False)


@pytest.mark.parametrize(
    ("raw", "content_type"),
    [
        (FORM, "application/json"),
        (FORM, "multipart/form-data"),
        (FORM[:-20], FORM_TYPE),
        (b"--x\r\nno blank line--x--", "multipart/form-data; boundary=x"),
    ],
)
def test_a_broken_form_is_a_400(raw: bytes, content_type: str) -> None:
    with pytest.raises(BadRequest):
        parse_form(raw, content_type)


def test_media_bodies_are_audio_or_json_with_a_url() -> None:
    audio = read_body("media", b"\x00" * 500, "audio/wav", {"model": "nova-2"}, {})
    assert (audio.body, audio.upload_bytes, audio.json_body) == ({}, 500, False)
    url = read_body("media", b'{"url": "https://x/a.wav"}', "application/json", {}, {})
    assert (url.body, url.upload_bytes) == ({"url": "https://x/a.wav"}, 0)
    with pytest.raises(BadRequest):
        read_body("media", b"", "audio/wav", {}, {})


def test_elevenlabs_model_comes_from_model_id_with_the_default() -> None:
    tts = route("/v1/text-to-speech/{voice_id}/stream")
    absent = prepare(b"{}", RequestView(2, {"text": "hi"}), tts, KEY, CATALOG)
    assert absent.price.model == "eleven_multilingual_v2" and absent.body == b"{}"  # nothing injected
    named = RequestView(2, {"text": "hi", "model_id": "elevenlabs/eleven_flash_v2_5"})
    rewritten = prepare(b"{}", named, tts, KEY, CATALOG)
    assert b'"model_id": "eleven_flash_v2_5"' in rewritten.body
    with pytest.raises(UnknownModel):
        prepare(b"{}", RequestView(2, {"text": "hi", "model_id": "eleven_v9"}), tts, KEY, CATALOG)


def test_deepgram_model_comes_from_the_query_with_variants() -> None:
    listen = route("/v1/listen")

    def resolved(**query: str) -> str:
        view = RequestView(100, {}, query, {}, 100, False)
        return prepare(b"x" * 100, view, listen, KEY, CATALOG).price.model

    assert resolved() == "base"
    assert resolved(model="nova-2-phonecall") == "nova-2"
    assert resolved(model="nova-3", language="multi") == "nova-3:multilingual"
    with pytest.raises(UnknownModel, match="nova-9"):
        resolved(model="nova-9")


def test_image_variants_keep_the_upstream_model_name() -> None:
    images = route("/v1/images/generations")
    view = RequestView(10, {"model": "openai/dall-e-3", "prompt": "x"})
    prepared = prepare(b"{}", view, images, KEY, CATALOG)
    assert prepared.price.model == "dall-e-3:1024x1024:standard"
    assert b'"model": "dall-e-3"' in prepared.body
    allowed = key("dall-e-3")
    assert prepare(b"{}", RequestView(10, {"model": "dall-e-3"}), images, allowed, CATALOG).price
    with pytest.raises(UnknownModel, match="dall-e-3:512x512:standard"):
        prepare(b"{}", RequestView(10, {"model": "dall-e-3", "size": "512x512"}), images, KEY, CATALOG)


LIMITS = estimate.Limits(max_audio_seconds=3600)


def test_estimates_for_speech_and_images_are_exact() -> None:
    el = price("elevenlabs", "eleven_v3", characters_micros_per_mchar=100_000_000)
    assert estimate.text_to_speech("text")(RequestView(0, {"text": "é" * 1000}), el, LIMITS) == 100_000
    tts1 = price("openai", "tts-1", characters_micros_per_mchar=15_000_000)
    assert estimate.text_to_speech("input")(RequestView(0, {"input": "x" * 100}), tts1, LIMITS) == 1500
    mini = price(
        "openai", "gpt-4o-mini-tts", input_micros_per_mtok=600_000, audio_output_micros_per_mtok=12_000_000
    )
    assert estimate.text_to_speech("input")(RequestView(0, {"input": "x" * 100}), mini, LIMITS) == -(
        -(100 * 600_000 + 400 * 12_000_000) // 1_000_000
    )
    dalle = CATALOG.resolve("dall-e-3:1024x1024:standard", ("openai",))
    assert estimate.images(RequestView(0, {"n": 3}), dalle, LIMITS) == 120_000
    gpt = CATALOG.resolve("gpt-image-1", ("openai",))
    assert estimate.images(RequestView(0, {"prompt": "abcd", "n": 2, "partial_images": 1}), gpt, LIMITS) == (
        -(-(4 * 5_000_000 + 4 * 6250 * 40_000_000) // 1_000_000)
    )


def test_audio_in_is_bounded_by_the_file_or_the_operator_maximum() -> None:
    nova = CATALOG.resolve("nova-2", ("deepgram",))
    upload = RequestView(32_000, {}, upload_bytes=32_000)
    assert estimate.speech_to_text(upload, nova, LIMITS) == -(-64 * 71_666_667 // 1_000_000)
    url = RequestView(30, {"url": "https://x"})
    assert estimate.speech_to_text(url, nova, estimate.Limits(max_audio_seconds=60)) == -(
        -60 * 71_666_667 // 1_000_000
    )
    unpriced = price("deepgram", "enhanced")
    with pytest.raises(UnknownModel, match="audio seconds"):
        estimate.speech_to_text(upload, unpriced, LIMITS)
    tokens_and_time = price(
        "openai",
        "gpt-4o-transcribe",
        input_micros_per_mtok=2_500_000,
        output_micros_per_mtok=10_000_000,
        audio_input_micros_per_mtok=6_000_000,
        audio_seconds_micros_per_msec=100_000_000,
        max_output_tokens=2000,
    )
    by_tokens = 64 * 50 * 6_000_000 + len(b"gpt-4o-transcribe") * 2_500_000 + 2000 * 10_000_000
    view = RequestView(32_000, {"model": "gpt-4o-transcribe"}, upload_bytes=32_000)
    assert estimate.speech_to_text(view, tokens_and_time, LIMITS) == max(-(-by_tokens // 1_000_000), 64 * 100)


def test_deepgram_callbacks_are_refused_unless_the_operator_allows_them() -> None:
    view = RequestView(4, {}, query={"model": "nova-3", "callback": "https://example.com/hook"})
    with pytest.raises(BadRequest) as info:
        deepgram.refuse_callback(view, Settings.from_env({}))
    assert info.value.param == "callback"
    deepgram.refuse_callback(view, Settings.from_env({"SPENDGATE_DEEPGRAM_CALLBACKS": "on"}))
    deepgram.refuse_callback(RequestView(4, {}, query={"model": "nova-3"}), Settings.from_env({}))
