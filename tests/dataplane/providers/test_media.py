"""The non-token parsers — ElevenLabs and OpenAI speech, Deepgram and OpenAI
transcription, OpenAI images — fed recorded bodies split at every byte
boundary, cut off at every byte, oversized, and garbage. Bodies always pass
through byte for byte; usage is the same however the bytes arrive."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial

import pytest

from dataplane.providers import deepgram, elevenlabs, openai_audio, openai_images
from dataplane.providers.sse import MAX_EVENT_BYTES
from dataplane.providers.usage import ParseContext, Usage, UsageParser
from tests.dataplane.providers.test_openai import check_every_split, run

Make = Callable[[ParseContext], UsageParser]


def cut_offs(make: Make, context: ParseContext, data: bytes) -> list[Usage]:
    """Usage after each prefix of `data` (the upstream died there); never raises."""
    results = []
    for i in range(len(data)):
        forwarded, usage = run(partial(make, context), [data[:i]])
        assert forwarded == data[:i]
        results.append(usage)
    return results


# --- ElevenLabs ---------------------------------------------------------------------------

AUDIO = bytes(range(256)) * 3
TEXT = "Ça va? Très bien 👋"


def tts(headers: dict[str, str]) -> ParseContext:
    return ParseContext(request={"text": TEXT, "model_id": "eleven_flash_v2_5"}, headers=headers)


def test_elevenlabs_bills_the_character_cost_header() -> None:
    context = tts({"character-cost": "10", "content-type": "audio/mpeg"})
    check_every_split(
        partial(elevenlabs.SpeechParser, context), AUDIO, AUDIO, Usage(characters=10, complete=True)
    )
    assert {u.characters for u in cut_offs(elevenlabs.SpeechParser, context, AUDIO)} == {10}


@pytest.mark.parametrize("header", [None, "", "12.5", "-3", "١٢", "1e3", " "])
def test_elevenlabs_without_a_usable_header_bills_the_text_and_says_so(header: str | None) -> None:
    context = tts({} if header is None else {"character-cost": header})
    expected = Usage(characters=len(TEXT), estimated=True, complete=True)
    check_every_split(partial(elevenlabs.SpeechParser, context), AUDIO, AUDIO, expected)
    assert elevenlabs.text_characters(None) == 0 and elevenlabs.text_characters(TEXT) == len(TEXT) == 18


# --- Deepgram -----------------------------------------------------------------------------

METADATA = (
    b'{"transaction_key":"deprecated","request_id":"5c1e6f5a-2b3c-4d5e-8f90-a1b2c3d4e5f6",'
    b'"sha256":"154e291ecfa8be6ab8343560bcc109008fa7853eb5372533e8efdefc9b504c33",'
    b'"created":"2026-11-28T10:00:00.000Z","duration":25.933313,"channels":2,'
    b'"models":["1abfe86b-e047-4eed-858a-35e5625b41ee"],'
    b'"model_info":{"1abfe86b-e047-4eed-858a-35e5625b41ee":{"name":"general-nova-3","version":'
    b'"2025-04-17.21547","arch":"nova-3"}}}'
)
LISTEN = (
    b'{"metadata":' + METADATA + b',"results":{"channels":[{"alternatives":[{"transcript":'
    b'"Yeah, as much as it\'s worth celebrating {the} \\"first\\" [spacewalk]","confidence":0.998,'
    b'"words":[{"word":"yeah","start":0.08,"end":0.32,"confidence":0.9975}]}]}]}}'
)
LISTENED = Usage(audio_ms=25934, complete=True)


def listen(**query: str) -> ParseContext:
    return ParseContext(query=query)


def test_deepgram_bills_duration_rounded_up_to_the_millisecond() -> None:
    check_every_split(partial(deepgram.ListenParser, listen()), LISTEN, LISTEN, LISTENED)


def test_deepgram_multichannel_bills_every_channel_and_callbacks_bill_nothing() -> None:
    both = Usage(audio_ms=2 * 25934, complete=True)
    check_every_split(partial(deepgram.ListenParser, listen(multichannel="true")), LISTEN, LISTEN, both)
    accepted = b'{"request_id":"5c1e6f5a-2b3c-4d5e-8f90-a1b2c3d4e5f6"}'
    check_every_split(
        partial(deepgram.ListenParser, listen(callback="https://x")), accepted, accepted, Usage(complete=True)
    )


def test_deepgram_cut_off_bills_once_the_metadata_is_whole() -> None:
    end_of_metadata = len(b'{"metadata":') + len(METADATA)
    for i, usage in enumerate(cut_offs(deepgram.ListenParser, listen(), LISTEN)):
        expected = Usage(audio_ms=25934) if i >= end_of_metadata else Usage()
        assert usage == expected, i


def test_deepgram_reads_the_head_of_a_body_too_big_to_keep(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deepgram, "MAX_BODY_BYTES", 600)
    huge = LISTEN[:-3] + b',"padding":"' + b"x" * 5000 + b'"}]}}'
    _, usage = run(
        partial(deepgram.ListenParser, listen()), [huge[i : i + 7] for i in range(0, len(huge), 7)]
    )
    assert usage == Usage(audio_ms=25934)


@pytest.mark.parametrize(
    "duration",
    [b'"25.9"', b"-1.5", b"true", b"null", b"1e400", b"[]", b'{"s":1}'],
)
def test_deepgram_ignores_a_duration_that_is_not_a_number_of_seconds(duration: bytes) -> None:
    body = LISTEN.replace(b"25.933313", duration)
    assert run(partial(deepgram.ListenParser, listen()), [body])[1] == Usage()


def test_deepgram_integer_and_exact_durations() -> None:
    for literal, ms in [(b"12", 12000), (b"0.0005", 1), (b"0.001", 1), (b"7.7715625", 7772), (b"0", 0)]:
        body = LISTEN.replace(b"25.933313", literal)
        assert run(partial(deepgram.ListenParser, listen()), [body])[1].audio_ms == ms, literal


def test_deepgram_model_candidates() -> None:
    assert deepgram.model_candidates("nova-3", {}) == ("nova-3",)
    assert deepgram.model_candidates("nova-2-phonecall", {}) == ("nova-2-phonecall", "nova-2")
    assert deepgram.model_candidates("base-general", {}) == ("base-general", "base")
    assert deepgram.model_candidates("nova-3", {"language": "multi"}) == ("nova-3:multilingual", "nova-3")


# --- OpenAI speech --------------------------------------------------------------------------

SPOKEN = "Hello, world — ünïcode."
SPEECH_SSE = (
    b'data: {"type":"speech.audio.delta","audio":"SUQzBAAAAAAAI1RTU0UAAAAPAAADTGF2ZjYxLjcuMTAwAAAAAAAA"}\n\n'
    b'data: {"type":"speech.audio.delta","audio":"//uQxAAAAAAAAAAAAAAAAAAAAAAASW5mbwAAAA8AAAAD"}\n\n'
    b'data: {"type":"speech.audio.done","usage":{"input_tokens":9,"output_tokens":141,"total_tokens":150}}\n\n'
)
SSE_HEADERS = {"content-type": "text/event-stream; charset=utf-8"}


def speech(priced: frozenset[str] = frozenset(), /, **headers: str) -> ParseContext:
    return ParseContext(
        request={"input": SPOKEN, "instructions": "Calm."}, headers=headers, priced_units=priced
    )


SPEECH_GUESS = Usage(
    input_tokens=len(SPOKEN.encode()) + len(b"Calm."), output_tokens=0, audio_output_tokens=2 * len(SPOKEN)
)


def test_speech_sse_usage_is_exact_and_a_cut_stream_falls_back_to_the_estimate() -> None:
    context = speech(**SSE_HEADERS)
    exact = Usage(input_tokens=9, output_tokens=0, audio_output_tokens=141, complete=True)
    check_every_split(partial(openai_audio.SpeechParser, context), SPEECH_SSE, SPEECH_SSE, exact)
    whole_from = SPEECH_SSE.rindex(b"}}") + 2  # the done event's JSON is whole from here on
    guess = SPEECH_GUESS._replace(estimated=True)
    for i, usage in enumerate(cut_offs(openai_audio.SpeechParser, context, SPEECH_SSE)):
        assert usage == (exact if i >= whole_from else guess if i == 0 else guess._replace(complete=True)), i


def test_speech_binary_is_estimated_or_billed_per_character() -> None:
    binary = speech(**{"content-type": "audio/mpeg"})
    guess = SPEECH_GUESS._replace(estimated=True, complete=True)
    check_every_split(partial(openai_audio.SpeechParser, binary), AUDIO, AUDIO, guess)
    per_char = speech(frozenset({"characters"}), **{"content-type": "audio/mpeg"})
    check_every_split(
        partial(openai_audio.SpeechParser, per_char),
        AUDIO,
        AUDIO,
        Usage(characters=len(SPOKEN), complete=True),
    )


# --- OpenAI transcriptions --------------------------------------------------------------------

JSON_HEADERS = {"content-type": "application/json"}
TOKENS = (
    b'{"text":"Imagine the wildest idea that you\'ve ever had.","usage":{"type":"tokens","input_tokens":14,'
    b'"input_token_details":{"text_tokens":2,"audio_tokens":12},"output_tokens":45,"total_tokens":59}}'
)
DURATION = b'{"text":"Imagine the wildest idea.","usage":{"type":"duration","seconds":9}}'
VERBOSE = (
    b'{"task":"transcribe","language":"english","duration":8.470000267028809,"text":"The beach was a '
    b'popular spot.","segments":[{"id":0,"seek":0,"start":0.0,"end":3.319999933242798,"text":" The beach"}]}'
)
TRANSCRIPT_SSE = (
    b'data: {"type":"transcript.text.delta","delta":"I","logprobs":null}\n\n'
    b'data: {"type":"transcript.text.delta","delta":" see skies of blue.","logprobs":null}\n\n'
    b'data: {"type":"transcript.text.done","text":"I see skies of blue.","usage":{"type":"tokens",'
    b'"input_tokens":14,"input_token_details":{"text_tokens":0,"audio_tokens":14},"output_tokens":6,'
    b'"total_tokens":20}}\n\n'
)


def heard(**headers: str) -> ParseContext:
    return ParseContext(request={"model": "x"}, headers=headers, upload_bytes=20_000)


GUESSED = Usage(audio_ms=5000, estimated=True, complete=True)  # 20,000 bytes at 4,000 a second


@pytest.mark.parametrize(
    ("body", "headers", "usage"),
    [
        (
            TOKENS,
            JSON_HEADERS,
            Usage(input_tokens=2, output_tokens=45, audio_input_tokens=12, complete=True),
        ),
        (DURATION, JSON_HEADERS, Usage(audio_ms=9000, complete=True)),
        (VERBOSE, JSON_HEADERS, Usage(audio_ms=8471, complete=True)),
        (b'{"text":"No usage here."}', JSON_HEADERS, GUESSED),
        (b"Plain text transcript.\n", {"content-type": "text/plain"}, GUESSED),
        (
            TRANSCRIPT_SSE,
            SSE_HEADERS,
            Usage(input_tokens=0, output_tokens=6, audio_input_tokens=14, complete=True),
        ),
    ],
)
def test_transcription_usage_in_every_form(body: bytes, headers: dict[str, str], usage: Usage) -> None:
    check_every_split(partial(openai_audio.TranscriptionParser, heard(**headers)), body, body, usage)


def test_transcription_cut_off_is_estimated_from_the_file() -> None:
    for body, headers in [(TOKENS, JSON_HEADERS), (TRANSCRIPT_SSE, SSE_HEADERS)]:
        results = cut_offs(openai_audio.TranscriptionParser, heard(**headers), body)
        assert results[0] == Usage(audio_ms=5000, estimated=True)
        assert all(u.estimated or u.audio_input_tokens for u in results)


# --- OpenAI images --------------------------------------------------------------------------

DALL_E = (
    b'{"created":1713833628,"data":[{"revised_prompt":"A lighthouse at dusk","url":"https://oaidalleapiprod'
    b'scus.blob.core.windows.net/private/img-1.png"},{"revised_prompt":"A lighthouse","url":"https://x/2.png"}]}'
)
GPT_IMAGE = (
    b'{"created":1713833628,"background":"opaque","data":[{"b64_json":"iVBORw0KGgo="}],"output_format":"png",'
    b'"quality":"high","size":"1024x1024","usage":{"input_tokens":50,"input_tokens_details":{"image_tokens":0,'
    b'"text_tokens":50},"output_tokens":4160,"total_tokens":4210}}'
)


def drawn(priced: frozenset[str] = frozenset(), /, **headers: str) -> ParseContext:
    return ParseContext(request={"prompt": "a lighthouse", "n": 2}, headers=headers, priced_units=priced)


def test_dall_e_counts_images_and_a_cut_answer_bills_those_asked_for() -> None:
    context = drawn(frozenset({"images"}), **JSON_HEADERS)
    check_every_split(
        partial(openai_images.ImagesParser, context), DALL_E, DALL_E, Usage(images=2, complete=True)
    )
    assert set(cut_offs(openai_images.ImagesParser, context, DALL_E)) == {Usage(images=2, estimated=True)}


def test_gpt_image_bills_the_tokens_it_reports() -> None:
    context = drawn(**JSON_HEADERS)
    full = Usage(input_tokens=50, output_tokens=4160, complete=True)
    check_every_split(partial(openai_images.ImagesParser, context), GPT_IMAGE, GPT_IMAGE, full)
    assert cut_offs(openai_images.ImagesParser, context, GPT_IMAGE)[-1] == Usage()


def test_gpt_image_stream_reads_usage_from_a_completed_event_too_big_to_parse() -> None:
    picture = "A" * (MAX_EVENT_BYTES + 10)
    completed = {
        "type": "image_generation.completed",
        "b64_json": picture,
        "usage": {"input_tokens": 7, "output_tokens": 1056, "total_tokens": 1063},
    }
    partial_image = {"type": "image_generation.partial_image", "b64_json": picture, "partial_image_index": 0}
    body = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in (partial_image, completed))
    context = drawn(**SSE_HEADERS)
    pieces = [body[i : i + 65536] for i in range(0, len(body), 65536)]
    forwarded, usage = run(partial(openai_images.ImagesParser, context), pieces)
    assert forwarded == body and usage == Usage(input_tokens=7, output_tokens=1056, complete=True)


def test_image_model_candidates() -> None:
    body = {"size": "1792x1024", "quality": "hd"}
    assert openai_images.model_candidates("dall-e-3", body) == (
        "dall-e-3:1792x1024:hd",
        "dall-e-3:1792x1024",
        "dall-e-3",
    )
    assert openai_images.model_candidates("dall-e-3", {})[0] == "dall-e-3:1024x1024:standard"
    assert openai_images.model_candidates("dall-e-2", {})[:1] == ("dall-e-2:1024x1024",)
    assert openai_images.model_candidates("gpt-image-1", {}) == ("gpt-image-1",)


@pytest.mark.parametrize(
    "make",
    [
        partial(elevenlabs.SpeechParser, tts({})),
        partial(deepgram.ListenParser, listen()),
        partial(openai_audio.SpeechParser, speech(**SSE_HEADERS)),
        partial(openai_audio.TranscriptionParser, heard(**SSE_HEADERS)),
        partial(openai_audio.TranscriptionParser, heard(**JSON_HEADERS)),
        partial(openai_images.ImagesParser, drawn(**SSE_HEADERS)),
        partial(openai_images.ImagesParser, drawn(frozenset({"images"}), **JSON_HEADERS)),
    ],
)
def test_garbage_passes_through_and_never_raises(make: Callable[[], UsageParser]) -> None:
    garbage = b'data: {"usage": [1, 2]}\n\n\xff\xfe{"metadata": {"duration": "x"}}\r\n{{{"usage":{"type":7}}'
    for i in range(len(garbage) + 1):
        forwarded, usage = run(make, [garbage[:i], garbage[i:]])
        assert forwarded == garbage and isinstance(usage, Usage)
