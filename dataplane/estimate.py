"""Upper-bound cost of a request before it is sent (DESIGN.md §3).

Input: every byte of the request body counts as one token, at the dearest
input rate. A BPE token is at
least one UTF-8 byte, so this bounds the real input from above (JSON framing
included) without a tokenizer. Output: the request's own limit
(max_tokens / max_completion_tokens / max_output_tokens, or Gemini's
generationConfig.maxOutputTokens, which counts thinking tokens too), else the
model's catalog maximum, times the number of answers asked for (`n`, legacy
completions' `best_of`, Gemini's candidateCount): each is generated and billed.
When a body names several limits or counts, the largest wins (a provider may
honour any one of them: DeepSeek reads `max_tokens` beside
`max_completion_tokens`), and the output limit never exceeds the catalog maximum.
Gemini reads proto field names as well as camelCase (`generation_config`,
`max_output_tokens`, `candidate_count`, `inline_data`, `mime_type`, ...): each
Gemini field read here is read in both spellings, and where both are sent, the
larger estimate wins.

Some input is not in the body's bytes, and is found by walking the body
(iteratively: how deep it nests is the client's choice):
- An image costs what its pixels cost, however few bytes encode them (a
  flat-colour WebP or PNG of any size is a few dozen bytes to a few KB), and an
  image by URL or file id has no bytes here at all. Each image part adds its
  provider's documented per-image maximum (the *_IMAGE_TOKENS below).
- A reference to input the provider holds or fetches (a file id or URL other
  than an image, a stored conversation or prompt, cached content, a PDF or a
  video, the results of a tool the provider runs) has no visible bound. Any
  number of them add `Limits.max_referenced_input_tokens` once, at the dearest
  input rate: the context window bounds them together. A strict key refuses
  such a request (400 `input_not_bounded`), since its cost is not known before
  the provider runs it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from dataplane.errors import Unbounded, UnknownModel
from dataplane.inbound import RequestView
from dataplane.pricing import ModelPrice

OUTPUT_LIMIT_FIELDS = ("max_completion_tokens", "max_tokens", "max_output_tokens")
# No request costs a million dollars; past that the estimate only has to exceed any cap, and a
# client's `n: 10**30` must not reach the ledger's 64-bit integers.
MAX_ESTIMATE_MICROS = 10**12

# Per-image maxima, in input tokens, from each provider's documented formula.
# OpenAI (platform.openai.com/docs/guides/images-vision, "Calculating costs"): high detail fits
# the image in 2048x2048, scales its short side down to 768 and bills base + tile × 512 px
# tiles, so at most 2 × 4 = 8 tiles (768x2048). gpt-4o and gpt-4.1: 85 + 170 × 8 = 1,445.
# gpt-4o-mini: 2,833 + 5,667 × 8 = 48,169, the most of any documented rule (the patch-based
# models cap at 1,536 patches × a multiplier below 2.5), so it bounds every other model of
# the OpenAI family and of the OpenAI-compatible providers.
OPENAI_IMAGE_TOKENS = 48_169
OPENAI_IMAGE_TOKENS_BY_MODEL = {"gpt-4o": 1_445, "gpt-4.1": 1_445}
# Anthropic (docs.claude.com, build-with-claude/vision): about width × height / 750, ~1,600 at the
# usual 1,568 px long-edge limit; Opus 4.7 reads up to 2,576 px (~3.75 MP in 28x28 px patches,
# ~4,800). 5,000 covers both.
ANTHROPIC_IMAGE_TOKENS = 5_000
# Gemini (ai.google.dev/gemini-api/docs/tokens; Vertex AI "image understanding"): 258 tokens per
# 768x768 tile of an image scaled to fit 3072x3072, so at most 16 tiles: 4,128. Gemini 3's
# media_resolution ultra_high is 2,240 per image, below it.
GOOGLE_IMAGE_TOKENS = 4_128

# Tool types whose results the caller sends back itself, in the next request's body.
CALLER_RUN_TOOLS = frozenset({"function", "custom", "local_shell", "computer_use_preview", "apply_patch"})
GEMINI_CALLER_RUN_TOOLS = frozenset(
    {"functionDeclarations", "function_declarations", "computerUse", "computer_use"}
)
# Anthropic's tools the API runs itself (its bash, computer and text editor tools run client-side).
ANTHROPIC_SERVER_TOOLS = ("web_search_", "web_fetch_", "code_execution_", "mcp_toolset")
IMAGE_PARTS = frozenset({"image_url", "input_image", "computer_screenshot", "image_generation_call"})


def gemini_configs(body: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    # The Gemini API reads both spellings (proto JSON); a client may even send both.
    if "generationConfig" not in body and "generation_config" not in body:
        return []  # (every other provider's request)
    configs = (body.get("generationConfig"), body.get("generation_config"))
    return [config for config in configs if isinstance(config, Mapping)]


def _largest(fields: list[object]) -> int | None:
    """The largest of the fields that are non-negative integers (none: None); JSON `true` is
    not 1 here. (Run on every request, so without the lists a `max` of a filter would build.)"""
    found = None
    for value in fields:
        if type(value) is int and value >= 0 and (found is None or value > found):
            found = value
    return found


def _requested_limit(body: Mapping[str, Any]) -> int | None:
    """The largest output limit the body names, in any spelling: providers differ in which one
    they honour (DeepSeek and other OpenAI-compatible ones read `max_tokens` even beside
    `max_completion_tokens`), so only the largest bounds them all."""
    fields = [body.get(name) for name in OUTPUT_LIMIT_FIELDS]
    for config in gemini_configs(body):
        fields += [config.get("maxOutputTokens"), config.get("max_output_tokens")]
    return _largest(fields)


def output_limit(body: Mapping[str, Any], price: ModelPrice) -> int:
    value = _requested_limit(body)
    if value is None:
        return price.max_output_tokens
    return min(value, price.max_output_tokens) if price.max_output_tokens else value


def choices(body: Mapping[str, Any]) -> int:
    """How many answers the output limit applies to: OpenAI's `n`, legacy completions'
    `best_of` (generated and billed, of which `n` are returned), Gemini's candidateCount."""
    fields = [body.get("n"), body.get("best_of")]
    for config in gemini_configs(body):
        fields += [config.get("candidateCount"), config.get("candidate_count")]
    return max(1, _largest(fields) or 0)


@dataclass(frozen=True)
class Reference:
    """Input a request refers to without containing it, named for the client."""

    field: str
    why: str
    remedy: str = "Send the input inline,"

    def message(self) -> str:
        return (
            f"`{self.field}`: {self.why}; this key admits only requests whose whole cost is known "
            f"(strict). {self.remedy} or use a key without strict."
        )


def _stored(field: str, what: str) -> Reference:
    return Reference(field, f"the size of {what} cannot be bounded before the provider runs it")


def _file(field: str) -> Reference:
    return Reference(field, "the size of a file the provider reads cannot be bounded before it runs")


def _tool(field: str) -> Reference:
    return Reference(
        field,
        "a tool the provider runs feeds its results back to the model as input the request does not "
        "show, so their cost cannot be bounded before the provider runs it",
        remedy="Use function tools,",
    )


@dataclass(frozen=True)
class Unseen:
    """What a request's body asks the provider to read beyond its own bytes."""

    images: int = 0
    reference: Reference | None = None  # the first unbounded one; they are bounded together


def _provider_run_tool(tool: object, provider: str) -> str | None:
    if not isinstance(tool, Mapping):
        return None
    kind = tool.get("type")
    if isinstance(kind, str):
        if provider == "anthropic":
            return kind if kind.startswith(ANTHROPIC_SERVER_TOOLS) else None
        return None if kind in CALLER_RUN_TOOLS else kind
    if provider == "google":  # a Gemini tool is an object keyed by its kind
        return next((str(key) for key in tool if key not in GEMINI_CALLER_RUN_TOOLS), None)
    return None


def _top_level_reference(body: Mapping[str, Any], provider: str) -> Reference | None:
    for name in ("previous_response_id", "conversation"):
        if body.get(name):
            return _stored(name, "a stored conversation")
    prompt = body.get("prompt")  # Responses' reusable prompt, {"id": "pmpt_…"}; not legacy text
    if isinstance(prompt, Mapping) and prompt.get("id"):
        return _stored("prompt.id", "a stored prompt")
    for name in ("cachedContent", "cached_content"):
        if body.get(name):
            return _stored(name, "cached content")
    for name in ("web_search_options", "mcp_servers"):
        if body.get(name) is not None:
            return _tool(name)
    tools = body.get("tools")
    for tool in tools if isinstance(tools, list) else ():
        kind = _provider_run_tool(tool, provider)
        if kind is not None:
            return _tool(f"tools: {kind}")
    return None


def _mimes(data: Mapping[str, Any]) -> list[str]:
    """Both spellings: where a client sends both, the dearer reading of them wins."""
    return [mime.lower() for mime in (data.get("mimeType"), data.get("mime_type")) if isinstance(mime, str)]


def _gemini_data(node: Mapping[str, Any]) -> Reference | bool:
    """A Gemini part's file or inline data, in either spelling (or both: the dearer wins)."""
    image = False
    for name in ("fileData", "file_data"):  # by URI: only an image has a bound
        data = node.get(name)
        if isinstance(data, Mapping):
            mimes = _mimes(data)
            other = [mime for mime in mimes if not mime.startswith("image/")]
            if other or not mimes:
                return _file(f"{name} ({other[0] if other else 'no mime type'})")
            image = True
    for name in ("inlineData", "inline_data"):  # inline: PDF pages and video frames are unbounded
        data = node.get(name)
        if isinstance(data, Mapping):
            mimes = _mimes(data)
            unbounded = [mime for mime in mimes if mime == "application/pdf" or mime.startswith("video/")]
            if unbounded:
                return _file(f"{name} ({unbounded[0]})")
            image = image or any(mime.startswith("image/") for mime in mimes)
    return image


_GEMINI_DATA = ("fileData", "file_data", "inlineData", "inline_data")


def _part(node: dict[str, Any]) -> Reference | bool:
    """True for an image, a Reference for unbounded input, False for neither.
    (Run on every object in the body, so the usual one, a text part or a message, is let go
    after a lookup or two.)"""
    kind = node.get("type")
    if kind.__class__ is str:
        if kind in IMAGE_PARTS or (kind == "image" and isinstance(node.get("source"), dict)):
            return True  # OpenAI chat and Responses, Anthropic: by URL, file id or inline
        if kind == "input_file" or (kind == "file" and isinstance(node.get("file"), dict)):
            return _file(str(kind))  # OpenAI: a PDF or document, by id, URL or inline
        if kind == "item_reference":
            return _stored("item_reference", "a stored conversation item")
        source = node.get("source")
        if kind == "document" and isinstance(source, dict) and source.get("type") not in ("text", "content"):
            return _file("document")  # Anthropic: a PDF's pages by URL, file id or base64
    for name in _GEMINI_DATA:
        if name in node:
            return _gemini_data(node)
    return False


def unseen_inputs(body: dict[str, Any], provider: str) -> Unseen:
    """The images a body carries and the first input it refers to but does not carry.
    The body is JSON, so its containers are dicts and lists."""
    images, reference = 0, _top_level_reference(body, provider)
    stack: list[object] = [body]
    push = stack.append
    while stack:  # depth-first without recursion: the depth is the client's choice
        node = stack.pop()
        if node.__class__ is dict:
            found = _part(node)
            if found is True:
                images += 1
            elif isinstance(found, Reference) and reference is None:
                reference = found
            for value in node.values():
                if value.__class__ is dict or value.__class__ is list:
                    push(value)
        elif node.__class__ is list:
            for value in node:
                if value.__class__ is dict or value.__class__ is list:
                    push(value)
    return Unseen(images, reference)


def image_tokens(price: ModelPrice) -> int:
    if price.provider == "anthropic":
        return ANTHROPIC_IMAGE_TOKENS
    if price.provider == "google":
        return GOOGLE_IMAGE_TOKENS
    return OPENAI_IMAGE_TOKENS_BY_MODEL.get(price.model, OPENAI_IMAGE_TOKENS)


def _input_rate(price: ModelPrice) -> int:
    # Any input token may turn out to be a cache write or an image, the dearest input kinds.
    return max(
        price.input_micros_per_mtok,
        price.cache_write_micros_per_mtok or 0,
        price.cache_write_1h_micros_per_mtok or 0,
        price.image_input_micros_per_mtok or 0,
    )


def tokens(view: RequestView, price: ModelPrice, limits: Limits) -> int:
    """The token APIs' estimate (chat, completions, responses, messages, Gemini)."""
    unseen = unseen_inputs(view.body, price.provider)
    if unseen.reference is not None and limits.strict:
        raise Unbounded(unseen.reference.message(), param=unseen.reference.field)
    rate = _input_rate(price)
    total = _per_million(view.raw_len, view.body, price) + unseen.images * image_tokens(price) * rate
    if unseen.reference is not None:  # a referenced file may be audio, dearer than text
        total += limits.max_referenced_input_tokens * max(rate, price.audio_input_micros_per_mtok or 0)
    return min(_ceil(total), MAX_ESTIMATE_MICROS)


def input_tokens_bound(view: RequestView, price: ModelPrice, limits: Limits) -> int:
    """At most this many input tokens: what decides whether a prompt-length price tier may apply."""
    if not any(rule.above_input_tokens is not None for rule in price.rules):
        return view.raw_len  # (no tier to decide: spare the walk)
    unseen = unseen_inputs(view.body, price.provider)
    bound = view.raw_len + unseen.images * image_tokens(price)
    return bound + (limits.max_referenced_input_tokens if unseen.reference is not None else 0)


def output_tokens_bound(body: Mapping[str, Any], price: ModelPrice) -> int:
    """The output the request may be billed for: its limit times the answers it asks for."""
    return output_limit(body, price) * choices(body)


def _per_million(body_bytes: int, body: Mapping[str, Any], price: ModelPrice) -> int:
    output = output_tokens_bound(body, price)
    return body_bytes * _input_rate(price) + output * price.output_micros_per_mtok


def upper_bound_micros(body_bytes: int, body: Mapping[str, Any], price: ModelPrice) -> int:
    """The body's bytes and the output limit, without what the body refers to."""
    return _ceil(_per_million(body_bytes, body, price))


# --- non-token APIs --------------------------------------------------------------------------
#
# Speech and images: the request names what is billed (characters of the text, n images), so
# the estimate is exact. Audio in: the duration is unknown until the provider answers. An
# uploaded file bounds it: no speech codec the providers accept encodes a second in fewer than
# MIN_AUDIO_BYTES_PER_SECOND bytes (4 kbit/s; AMR-NB's lowest mode is 4.75, Opus's 6). Audio
# the provider fetches itself (Deepgram's `{"url": …}`) is bounded by the operator's
# `max_audio_seconds` (SPENDGATE_MAX_AUDIO_SECONDS, default one hour), a per-request maximum:
# a longer recording is still billed in full at settlement, beyond its reservation.

MIN_AUDIO_BYTES_PER_SECOND = 500
# Generous audio tokens per second of input (OpenAI's transcription models use ~17).
AUDIO_TOKENS_PER_SECOND = 50
# Speech rarely runs slower than 5 characters a second: ~4 audio tokens per character at 21/s.
SPEECH_TOKENS_PER_CHAR_BOUND = 4


class Limits(NamedTuple):
    """The operator's bounds and the key's strictness (a tuple: one is made per request)."""

    max_audio_seconds: int = 3600
    max_referenced_input_tokens: int = 1_048_576
    strict: bool = False  # the key admits only what fits whole: refuse what cannot be bounded


Estimator = Callable[[RequestView, ModelPrice, Limits], int]


def _ceil(per_million: int) -> int:
    return -(-per_million // 1_000_000)


def _required(price: ModelPrice, rate: int | None, unit: str) -> int:
    if rate is None:  # Settle would refuse the unit: refuse the request now, before any cost
        raise UnknownModel(f"The model `{price.model}` has no catalog price for {unit}.", param="model")
    return rate


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _audio_seconds(view: RequestView, limits: Limits) -> int:
    if view.upload_bytes:
        return -(-view.upload_bytes // MIN_AUDIO_BYTES_PER_SECOND)
    return limits.max_audio_seconds


def text_to_speech(field: str) -> Estimator:
    """ElevenLabs (`text`) and OpenAI speech (`input`)."""

    def estimate(view: RequestView, price: ModelPrice, limits: Limits) -> int:
        text = _text(view.body.get(field))
        if price.characters_micros_per_mchar is not None or price.provider == "elevenlabs":
            return _ceil(len(text) * _required(price, price.characters_micros_per_mchar, "characters"))
        audio_rate = price.audio_output_micros_per_mtok or price.output_micros_per_mtok
        prompt = len(text.encode()) + len(_text(view.body.get("instructions")).encode())
        return _ceil(
            prompt * price.input_micros_per_mtok + len(text) * SPEECH_TOKENS_PER_CHAR_BOUND * audio_rate
        )

    return estimate


def speech_to_text(view: RequestView, price: ModelPrice, limits: Limits) -> int:
    """Deepgram listen and OpenAI transcriptions: by audio time, or by audio tokens."""
    seconds = _audio_seconds(view, limits)
    # Required even of token-billed models: an answer without usage is billed by estimated time.
    by_time = _ceil(seconds * _required(price, price.audio_seconds_micros_per_msec, "audio seconds"))
    by_tokens = 0
    if price.audio_input_micros_per_mtok is not None:
        prompt = sum(len(v.encode()) for v in view.body.values() if isinstance(v, str))
        by_tokens = _ceil(
            seconds * AUDIO_TOKENS_PER_SECOND * price.audio_input_micros_per_mtok
            + prompt * price.input_micros_per_mtok
            + price.max_output_tokens * price.output_micros_per_mtok
        )
    return max(by_time, by_tokens)


def images(view: RequestView, price: ModelPrice, limits: Limits) -> int:
    n = view.body.get("n")
    count = n if type(n) is int and n > 0 else 1
    if price.images_micros_per_mimage is not None:
        return _ceil(count * price.images_micros_per_mimage)
    partial = view.body.get("partial_images")
    per_request = count * (1 + (partial if type(partial) is int and partial > 0 else 0))
    prompt = len(_text(view.body.get("prompt")).encode())
    return _ceil(
        prompt * price.input_micros_per_mtok
        + per_request * price.max_output_tokens * price.output_micros_per_mtok
    )
