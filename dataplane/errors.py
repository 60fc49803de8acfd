"""The data plane's exception tree. Each error carries its HTTP status and the
type or code each provider family names it by; the body a client gets is built by
its provider's adapter (providers/families.py), so the client's SDK raises its
usual exception (401 → AuthenticationError, 402/403 → PermissionDeniedError-family,
429 → RateLimitError, …)."""

from __future__ import annotations

from collections.abc import Mapping


class GatewayError(Exception):
    status = 500
    openai_type = "server_error"
    anthropic_type = "api_error"
    google_status = "INTERNAL"
    deepgram_code = "INTERNAL_SERVER_ERROR"
    code: str | None = None
    headers: Mapping[str, str] = {}  # sent with the error (a 429's retry-after)

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


class RateLimited(GatewayError):
    """A rate limit of the key (ratelimit.py): the SDKs' RateLimitError, which they retry
    after `retry-after`. OpenAI's type names the limit ("requests", "tokens")."""

    status = 429
    anthropic_type = "rate_limit_error"
    google_status = "RESOURCE_EXHAUSTED"
    deepgram_code = "TOO_MANY_REQUESTS"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, limit: str, headers: Mapping[str, str]) -> None:
        super().__init__(message)
        self.openai_type = limit
        self.headers = headers


class Forbidden(GatewayError):
    status = 403
    openai_type = "invalid_request_error"
    anthropic_type = "permission_error"
    google_status = "PERMISSION_DENIED"
    deepgram_code = "INSUFFICIENT_PERMISSIONS"
    code = "model_not_allowed"


class MasterKeyRequired(Forbidden):
    """A standard (end-user) key on the key or usage API."""

    code = "master_key_required"


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
