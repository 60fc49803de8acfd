"""The data plane's exception tree, and how each error is shown to a client:
in the error shape of the provider whose SDK made the request, so that SDK
raises its usual exception (401 → AuthenticationError, 402/403 →
PermissionDeniedError-family, 429 → RateLimitError, …). ElevenLabs' and
Deepgram's SDKs raise one ApiError type carrying the status and their body
shapes, `{"detail": {"status", "message"}}` and `{"err_code", "err_msg",
"request_id"}`."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from enum import Enum
from typing import Any

from starlette.responses import Response


class Family(Enum):
    """Which provider's error shape a route speaks."""

    OPENAI = "openai"
    ANTHROPIC = "anthropic"
    GOOGLE = "google"
    ELEVENLABS = "elevenlabs"
    DEEPGRAM = "deepgram"


class GatewayError(Exception):
    status = 500
    openai_type = "server_error"
    anthropic_type = "api_error"
    google_status = "INTERNAL"
    deepgram_code = "INTERNAL_SERVER_ERROR"
    code: str | None = None

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class BadRequest(GatewayError):
    status = 400
    openai_type = "invalid_request_error"
    anthropic_type = "invalid_request_error"
    google_status = "INVALID_ARGUMENT"
    deepgram_code = "Bad Request"


class UnknownModel(BadRequest):
    code = "model_not_found"


class Unbounded(BadRequest):
    """The request refers to input the gateway cannot see, on a strict key."""

    code = "input_not_bounded"


class Unauthorized(GatewayError):
    status = 401
    openai_type = "invalid_request_error"
    anthropic_type = "authentication_error"
    google_status = "UNAUTHENTICATED"
    deepgram_code = "INVALID_AUTH"
    code = "invalid_api_key"


class OverCap(GatewayError):
    status = 402
    openai_type = "insufficient_quota"
    anthropic_type = "billing_error"
    google_status = "RESOURCE_EXHAUSTED"
    deepgram_code = "ASR_PAYMENT_REQUIRED"
    code = "spend_cap_exceeded"


class Forbidden(GatewayError):
    status = 403
    openai_type = "invalid_request_error"
    anthropic_type = "permission_error"
    google_status = "PERMISSION_DENIED"
    deepgram_code = "INSUFFICIENT_PERMISSIONS"
    code = "model_not_allowed"


class NotFound(GatewayError):
    status = 404
    openai_type = "invalid_request_error"
    anthropic_type = "not_found_error"
    google_status = "NOT_FOUND"
    deepgram_code = "NOT_FOUND"


class TooLarge(GatewayError):
    status = 413
    openai_type = "invalid_request_error"
    anthropic_type = "request_too_large"
    google_status = "INVALID_ARGUMENT"
    deepgram_code = "PAYLOAD_TOO_LARGE"


class UpstreamUnreachable(GatewayError):
    status = 502
    openai_type = "server_error"
    anthropic_type = "api_error"
    google_status = "UNAVAILABLE"
    deepgram_code = "BAD_GATEWAY"
    code = "upstream_unreachable"


class ControlPlaneUnavailable(GatewayError):
    status = 503
    openai_type = "server_error"
    anthropic_type = "overloaded_error"
    google_status = "UNAVAILABLE"
    deepgram_code = "SERVICE_UNAVAILABLE"
    code = "gateway_unavailable"


class UpstreamTimeout(GatewayError):
    status = 504
    openai_type = "server_error"
    anthropic_type = "timeout_error"
    google_status = "DEADLINE_EXCEEDED"
    deepgram_code = "GATEWAY_TIMEOUT"
    code = "upstream_timeout"


class MethodNotAllowed(GatewayError):
    status = 405
    openai_type = "invalid_request_error"
    anthropic_type = "invalid_request_error"
    google_status = "INVALID_ARGUMENT"
    deepgram_code = "Bad Request"
    code = "method_not_allowed"


FAMILY_KEY = "spendgate.family"  # set in the ASGI scope by the route that knows its provider


def family_of(scope: Mapping[str, Any]) -> Family:
    family = scope.get(FAMILY_KEY)
    return family if isinstance(family, Family) else Family.OPENAI


def error_body(exc: GatewayError, family: Family) -> dict[str, object]:
    if family is Family.ANTHROPIC:
        return {"type": "error", "error": {"type": exc.anthropic_type, "message": exc.message}}
    if family is Family.GOOGLE:
        # google-genai raises ClientError / ServerError from the HTTP status and reads these fields.
        return {"error": {"code": exc.status, "message": exc.message, "status": exc.google_status}}
    if family is Family.ELEVENLABS:  # the SDK raises ApiError carrying this body
        return {"detail": {"status": exc.code or exc.openai_type, "message": exc.message}}
    if family is Family.DEEPGRAM:
        return {"err_code": exc.deepgram_code, "err_msg": exc.message, "request_id": str(uuid.uuid4())}
    return {"error": {"message": exc.message, "type": exc.openai_type, "param": exc.param, "code": exc.code}}


def error_response(exc: GatewayError, family: Family) -> Response:
    # 402 is not retried by the SDKs; x-should-retry makes that explicit for 5xx we raise.
    headers = {"x-should-retry": "false"} if exc.status < 500 else {}
    return Response(
        json.dumps(error_body(exc, family)),
        status_code=exc.status,
        media_type="application/json",
        headers=headers,
    )
