"""One adapter per provider family: what the gateway itself answers in that family's
shape. A route names its family (routes.py); the app's error handlers and the metered
stream look the adapter up here. The usage parsers and estimators are per route, since
a family serves several APIs (routes.py)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from starlette.responses import Response

from dataplane.errors import GatewayError
from dataplane.providers import anthropic, deepgram, elevenlabs, google, openai


class Family(Enum):
    """Which provider's shapes a route speaks."""

    OPENAI = "openai"  # and the OpenAI-compatible providers
    ANTHROPIC = "anthropic"
    GOOGLE = "google"
    ELEVENLABS = "elevenlabs"
    DEEPGRAM = "deepgram"


@dataclass(frozen=True)
class Adapter:
    error_body: Callable[[GatewayError], dict[str, object]]
    # What ends a stream the provider cut off, so the SDK raises its usual stream error.
    stream_abort: Callable[[], bytes]


ADAPTERS: Mapping[Family, Adapter] = {
    Family.OPENAI: Adapter(openai.error_body, openai.stream_abort),
    Family.ANTHROPIC: Adapter(anthropic.error_body, anthropic.stream_abort),
    Family.GOOGLE: Adapter(google.error_body, google.stream_abort),
    # Their APIs do not stream SSE: an abort ends the body, which the SDKs report.
    Family.ELEVENLABS: Adapter(elevenlabs.error_body, openai.stream_abort),
    Family.DEEPGRAM: Adapter(deepgram.error_body, openai.stream_abort),
}

FAMILY_KEY = "spendgate.family"  # set in the ASGI scope by the route that knows its provider


def family_of(scope: Mapping[str, Any]) -> Family:
    family = scope.get(FAMILY_KEY)
    return family if isinstance(family, Family) else Family.OPENAI


def error_response(exc: GatewayError, family: Family) -> Response:
    # 402 is not retried by the SDKs; x-should-retry makes that explicit for 5xx we raise.
    headers = {"x-should-retry": "false"} if exc.status < 500 else {}
    if exc.headers:
        headers = {**headers, **exc.headers}
    return Response(
        json.dumps(ADAPTERS[family].error_body(exc)),
        status_code=exc.status,
        media_type="application/json",
        headers=headers,
    )
