"""What a provider response says it consumed, and the sans-IO parser protocol.

Counters are `int | None`: None means "not reported", which is not 0. Input
kinds are disjoint, already normalised per provider: `input_tokens` is what is
billed at the full input rate (OpenAI's prompt_tokens minus cached and
cache-write tokens; Anthropic's input_tokens as is), `cached_input_tokens` the
cache reads, `cache_write_tokens` the cache writes. `reasoning_tokens` is part
of `output_tokens` and kept for reporting only. Audio tokens are disjoint from
the text counts; `characters`, `audio_ms` and `images` are the non-token units
(text-to-speech, speech-to-text, image generation); `web_searches` and
`file_searches` the server-side tool calls a provider bills per call."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol


class Usage(NamedTuple):
    """(A tuple rather than a frozen dataclass: one is made per response, in a fifth of the
    time; `_replace` makes a changed copy.)"""

    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_input_tokens: int | None = None
    cache_write_tokens: int | None = None
    reasoning_tokens: int | None = None
    audio_input_tokens: int | None = None
    audio_output_tokens: int | None = None
    characters: int | None = None
    audio_ms: int | None = None
    images: int | None = None
    cache_write_1h_tokens: int | None = None  # Anthropic's one-hour cache writes, not in cache_write_tokens
    image_input_tokens: int | None = None  # not in input_tokens
    web_searches: int | None = None  # server-side search tool calls the provider bills
    file_searches: int | None = None
    service_tier: str = ""  # the tier the provider says it ran the request on
    # True when the counts were estimated (e.g. from delivered text) rather than reported.
    estimated: bool = False
    # True when the response reached its terminal event / was a complete JSON body.
    complete: bool = False
    # UTF-8 bytes of output text delivered (content, reasoning, tool arguments), for
    # estimating an aborted stream's output when the provider never reported it. A streamed
    # chat answer counts it only then: with an output count it is 0 (openai.ChatParser).
    delivered_text_bytes: int = 0


class UsageParser(Protocol):
    """One instance per response. Fed raw response body bytes in order; no I/O.

    `feed` returns the bytes to pass on to the client (usually exactly what it
    was given; a parser may hold back part of an SSE event until it is whole,
    or drop an event the gateway injected); a body that is not an SSE stream
    is passed on byte for byte, since the client is told its upstream length.
    `flush` returns whatever is still held when the body ends. `close` returns the usage seen. None of them
    raises on malformed input."""

    def feed(self, data: bytes) -> bytes: ...

    def flush(self) -> bytes: ...

    def close(self) -> Usage: ...


@dataclass(frozen=True)
class ParseContext:
    """What a parser for a non-token API may need besides the response body:
    the request (its JSON, or a form's text fields), its query, the response
    headers (lowercased names), and which non-token units the model's catalog
    row prices (`characters`, `audio_seconds`, `images`): a parser reports the
    units its model is priced by, never a unit the catalog would refuse."""

    request: Mapping[str, Any] = field(default_factory=dict)
    query: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    stream: bool = False
    upload_bytes: int = 0  # size of the uploaded audio (raw body or multipart file part)
    priced_units: frozenset[str] = frozenset()
    model: str = ""  # the catalog's name for the model
