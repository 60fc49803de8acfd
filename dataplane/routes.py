"""The route table: which paths the gateway meters, who serves them, where
each request names its model, and which sans-IO parser reads the answer.

Token APIs send a JSON body with `model` (or, like Gemini, the model in the
path) and are estimated from their text and output limit (estimate.py). The
non-token APIs differ in three ways, each a field with a default: the body
may be audio or a multipart form (`body_kind`), the model may be another
field or a query parameter with the provider's default (`model_field`,
`model_query`, `default_model`), and the catalog row may be a variant of
the model (`variants`, e.g. an image size). They bring their own upper-bound
`estimator` and a `context_parser`, which is built after the upstream
answered and sees the request and the response headers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from dataplane import estimate
from dataplane.config import OPENAI_COMPATIBLE, Settings
from dataplane.inbound import BodyKind, RequestView
from dataplane.providers import anthropic, deepgram, elevenlabs, google, openai, openai_audio, openai_images
from dataplane.providers.families import Family
from dataplane.providers.usage import ParseContext, UsageParser

ParserFactory = Callable[[bool, bool], UsageParser]  # (stream, strip_usage_chunk)
ContextParserFactory = Callable[[ParseContext], UsageParser]
Variants = Callable[[str, RequestView], tuple[str, ...]]


@dataclass(frozen=True)
class Route:
    path: str
    family: Family
    providers: tuple[str, ...]
    parser: ParserFactory | None = None
    inject_usage: bool = False  # OpenAI-family streams: ask for the usage chunk
    metered: bool = True
    # Where the model and the stream flag come from: the JSON body ("model",
    # "stream"), or — for APIs like Gemini's — the URL (`{model}` in the path,
    # and a fixed stream flag per route).
    model_in_path: bool = False
    stream: bool | None = None
    body_kind: BodyKind = "json"
    model_field: str = "model"
    model_query: str | None = None  # Deepgram: `?model=`
    default_model: str | None = None  # what the provider uses when the request names none
    variants: Variants | None = None  # catalog names to try for a model, most specific first
    estimator: estimate.Estimator | None = None  # default: the token estimate
    context_parser: ContextParserFactory | None = None  # wins over `parser`
    check: Callable[[RequestView, Settings], None] | None = None  # refuses what cannot be metered

    def model_and_stream(self, view: RequestView) -> tuple[object, bool]:
        if self.model_in_path:
            return view.path_params.get("model"), bool(self.stream)
        if self.model_query is not None:
            model: object = view.query.get(self.model_query) or self.default_model
        else:
            model = view.body.get(self.model_field, self.default_model)
        stream = view.body.get("stream") is True if self.stream is None else self.stream
        return model, stream

    def candidates(self, model: str, view: RequestView) -> tuple[str, ...]:
        return self.variants(model, view) if self.variants else (model,)

    def make_parser(
        self, context: Callable[[], ParseContext], stream: bool, strip_usage: bool
    ) -> UsageParser:
        """The route's usage parser. `context` is called only for a parser that reads one
        (the token APIs' parsers do not: most requests never make it)."""
        if self.context_parser is not None:
            return self.context_parser(context())
        assert self.parser is not None, f"route {self.path} has no parser"
        return self.parser(stream, strip_usage)


def _gemini(context: ParseContext) -> UsageParser:
    return google.GenerateParser(context.stream, google.grounding_per_query(context.model))


def _gemini_embed(_stream: bool, _strip: bool) -> UsageParser:
    return google.EmbedParser()


def google_routes(version: str) -> tuple[Route, ...]:
    """Gemini's methods under one API version (google-genai calls v1beta or v1).
    The model is in the path; whether the answer streams is the method's."""
    google_route = partial(Route, family=Family.GOOGLE, providers=("google",), model_in_path=True)
    base = f"/{version}/models/{{model}}:"
    return (
        google_route(base + "generateContent", context_parser=_gemini, stream=False),
        google_route(base + "streamGenerateContent", context_parser=_gemini, stream=True),
        google_route(base + "embedContent", parser=_gemini_embed),
        google_route(base + "batchEmbedContents", parser=_gemini_embed),
        google_route(base + "countTokens", context_parser=_gemini, metered=False),
    )


def elevenlabs_routes() -> tuple[Route, ...]:
    """Text-to-speech, whole or streamed, with or without timestamps: one way to bill them all."""
    route = partial(
        Route,
        family=Family.ELEVENLABS,
        providers=("elevenlabs",),
        model_field="model_id",
        default_model=elevenlabs.DEFAULT_MODEL,
        estimator=estimate.text_to_speech("text"),
        context_parser=elevenlabs.SpeechParser,
        stream=False,
    )
    base = "/v1/text-to-speech/{voice_id}"
    return tuple(
        route(base + suffix) for suffix in ("", "/stream", "/with-timestamps", "/stream/with-timestamps")
    )


def _deepgram_variants(model: str, view: RequestView) -> tuple[str, ...]:
    return deepgram.model_candidates(model, view.query)


def _image_variants(model: str, view: RequestView) -> tuple[str, ...]:
    return openai_images.model_candidates(model, view.body)


OPENAI_FAMILY = OPENAI_COMPATIBLE
ROUTES = (
    Route("/v1/chat/completions", Family.OPENAI, OPENAI_FAMILY, openai.ChatParser, inject_usage=True),
    Route("/v1/completions", Family.OPENAI, OPENAI_FAMILY, openai.ChatParser, inject_usage=True),
    Route("/v1/embeddings", Family.OPENAI, OPENAI_FAMILY, lambda _s, _x: openai.EmbeddingsParser()),
    Route(
        "/v1/responses",
        Family.OPENAI,
        OPENAI_FAMILY,
        lambda s, _x: openai.ResponsesParser(s),
        check=openai.refuse_background,
    ),
    Route("/v1/messages", Family.ANTHROPIC, ("anthropic",), lambda s, _x: anthropic.MessagesParser(s)),
    Route(
        "/v1/messages/count_tokens",
        Family.ANTHROPIC,
        ("anthropic",),
        lambda _s, _x: anthropic.MessagesParser(False),
        metered=False,
    ),
    *google_routes("v1beta"),
    *google_routes("v1"),
    # Non-token APIs: audio, images.
    Route(
        "/v1/audio/speech",
        Family.OPENAI,
        ("openai",),
        estimator=estimate.text_to_speech("input"),
        context_parser=openai_audio.SpeechParser,
    ),
    Route(
        "/v1/audio/transcriptions",
        Family.OPENAI,
        ("openai",),
        body_kind="multipart",
        estimator=estimate.speech_to_text,
        context_parser=openai_audio.TranscriptionParser,
    ),
    Route(
        "/v1/images/generations",
        Family.OPENAI,
        ("openai",),
        default_model=openai_images.DEFAULT_MODEL,
        variants=_image_variants,
        estimator=estimate.images,
        context_parser=openai_images.ImagesParser,
    ),
    *elevenlabs_routes(),
    Route(
        "/v1/listen",
        Family.DEEPGRAM,
        ("deepgram",),
        body_kind="media",
        model_query="model",
        default_model=deepgram.DEFAULT_MODEL,
        variants=_deepgram_variants,
        estimator=estimate.speech_to_text,
        context_parser=deepgram.ListenParser,
        check=deepgram.refuse_callback,
        stream=False,
    ),
)
