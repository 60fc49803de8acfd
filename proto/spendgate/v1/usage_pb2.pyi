from spendgate.v1 import keys_pb2 as _keys_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RefusalReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REFUSAL_REASON_UNSPECIFIED: _ClassVar[RefusalReason]
    REFUSAL_REASON_KEY_CAP: _ClassVar[RefusalReason]
    REFUSAL_REASON_WALLET: _ClassVar[RefusalReason]
    REFUSAL_REASON_KEY_REVOKED: _ClassVar[RefusalReason]
    REFUSAL_REASON_KEY_EXPIRED: _ClassVar[RefusalReason]
    REFUSAL_REASON_RATE_LIMIT: _ClassVar[RefusalReason]

class RateLimitDimension(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RATE_LIMIT_DIMENSION_UNSPECIFIED: _ClassVar[RateLimitDimension]
    RATE_LIMIT_DIMENSION_REQUESTS: _ClassVar[RateLimitDimension]
    RATE_LIMIT_DIMENSION_TOKENS: _ClassVar[RateLimitDimension]
    RATE_LIMIT_DIMENSION_PARALLEL: _ClassVar[RateLimitDimension]

class EventStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_STATUS_UNSPECIFIED: _ClassVar[EventStatus]
    EVENT_STATUS_OK: _ClassVar[EventStatus]
    EVENT_STATUS_UPSTREAM_ERROR: _ClassVar[EventStatus]
    EVENT_STATUS_CLIENT_DISCONNECTED: _ClassVar[EventStatus]
    EVENT_STATUS_UPSTREAM_ABORTED: _ClassVar[EventStatus]

class SettleRefusal(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SETTLE_REFUSAL_UNSPECIFIED: _ClassVar[SettleRefusal]
    SETTLE_REFUSAL_UNKNOWN_KEY: _ClassVar[SettleRefusal]
    SETTLE_REFUSAL_UNKNOWN_MODEL: _ClassVar[SettleRefusal]
    SETTLE_REFUSAL_UNPRICED_UNIT: _ClassVar[SettleRefusal]
    SETTLE_REFUSAL_CONFLICT: _ClassVar[SettleRefusal]
    SETTLE_REFUSAL_INVALID: _ClassVar[SettleRefusal]
REFUSAL_REASON_UNSPECIFIED: RefusalReason
REFUSAL_REASON_KEY_CAP: RefusalReason
REFUSAL_REASON_WALLET: RefusalReason
REFUSAL_REASON_KEY_REVOKED: RefusalReason
REFUSAL_REASON_KEY_EXPIRED: RefusalReason
REFUSAL_REASON_RATE_LIMIT: RefusalReason
RATE_LIMIT_DIMENSION_UNSPECIFIED: RateLimitDimension
RATE_LIMIT_DIMENSION_REQUESTS: RateLimitDimension
RATE_LIMIT_DIMENSION_TOKENS: RateLimitDimension
RATE_LIMIT_DIMENSION_PARALLEL: RateLimitDimension
EVENT_STATUS_UNSPECIFIED: EventStatus
EVENT_STATUS_OK: EventStatus
EVENT_STATUS_UPSTREAM_ERROR: EventStatus
EVENT_STATUS_CLIENT_DISCONNECTED: EventStatus
EVENT_STATUS_UPSTREAM_ABORTED: EventStatus
SETTLE_REFUSAL_UNSPECIFIED: SettleRefusal
SETTLE_REFUSAL_UNKNOWN_KEY: SettleRefusal
SETTLE_REFUSAL_UNKNOWN_MODEL: SettleRefusal
SETTLE_REFUSAL_UNPRICED_UNIT: SettleRefusal
SETTLE_REFUSAL_CONFLICT: SettleRefusal
SETTLE_REFUSAL_INVALID: SettleRefusal

class Units(_message.Message):
    __slots__ = ("input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens", "reasoning_tokens", "audio_input_tokens", "audio_output_tokens", "characters", "audio_ms", "images", "cache_write_1h_tokens", "image_input_tokens", "web_searches", "file_searches")
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHED_INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHE_WRITE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    REASONING_TOKENS_FIELD_NUMBER: _ClassVar[int]
    AUDIO_INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    AUDIO_OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CHARACTERS_FIELD_NUMBER: _ClassVar[int]
    AUDIO_MS_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    CACHE_WRITE_1H_TOKENS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    WEB_SEARCHES_FIELD_NUMBER: _ClassVar[int]
    FILE_SEARCHES_FIELD_NUMBER: _ClassVar[int]
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    cache_write_tokens: int
    reasoning_tokens: int
    audio_input_tokens: int
    audio_output_tokens: int
    characters: int
    audio_ms: int
    images: int
    cache_write_1h_tokens: int
    image_input_tokens: int
    web_searches: int
    file_searches: int
    def __init__(self, input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., cached_input_tokens: _Optional[int] = ..., cache_write_tokens: _Optional[int] = ..., reasoning_tokens: _Optional[int] = ..., audio_input_tokens: _Optional[int] = ..., audio_output_tokens: _Optional[int] = ..., characters: _Optional[int] = ..., audio_ms: _Optional[int] = ..., images: _Optional[int] = ..., cache_write_1h_tokens: _Optional[int] = ..., image_input_tokens: _Optional[int] = ..., web_searches: _Optional[int] = ..., file_searches: _Optional[int] = ...) -> None: ...

class RateLimitStatus(_message.Message):
    __slots__ = ("limits", "requests_remaining", "requests_reset_ms", "tokens_remaining", "tokens_reset_ms", "in_flight", "refused", "retry_after_ms")
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_REMAINING_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_RESET_MS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_REMAINING_FIELD_NUMBER: _ClassVar[int]
    TOKENS_RESET_MS_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    limits: _keys_pb2.RateLimits
    requests_remaining: int
    requests_reset_ms: int
    tokens_remaining: int
    tokens_reset_ms: int
    in_flight: int
    refused: RateLimitDimension
    retry_after_ms: int
    def __init__(self, limits: _Optional[_Union[_keys_pb2.RateLimits, _Mapping]] = ..., requests_remaining: _Optional[int] = ..., requests_reset_ms: _Optional[int] = ..., tokens_remaining: _Optional[int] = ..., tokens_reset_ms: _Optional[int] = ..., in_flight: _Optional[int] = ..., refused: _Optional[_Union[RateLimitDimension, str]] = ..., retry_after_ms: _Optional[int] = ...) -> None: ...

class RateSlice(_message.Message):
    __slots__ = ("requests", "tokens", "slots")
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    requests: int
    tokens: int
    slots: int
    def __init__(self, requests: _Optional[int] = ..., tokens: _Optional[int] = ..., slots: _Optional[int] = ...) -> None: ...

class ReserveRequest(_message.Message):
    __slots__ = ("key_id", "request_id", "amount_micros", "ttl_ms", "return_grant_id", "return_micros", "tokens")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MICROS_FIELD_NUMBER: _ClassVar[int]
    TTL_MS_FIELD_NUMBER: _ClassVar[int]
    RETURN_GRANT_ID_FIELD_NUMBER: _ClassVar[int]
    RETURN_MICROS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    request_id: str
    amount_micros: int
    ttl_ms: int
    return_grant_id: str
    return_micros: int
    tokens: int
    def __init__(self, key_id: _Optional[str] = ..., request_id: _Optional[str] = ..., amount_micros: _Optional[int] = ..., ttl_ms: _Optional[int] = ..., return_grant_id: _Optional[str] = ..., return_micros: _Optional[int] = ..., tokens: _Optional[int] = ...) -> None: ...

class ReserveResponse(_message.Message):
    __slots__ = ("granted", "reason", "cap_micros", "spent_micros", "reserved_micros", "remaining_micros", "wallet_remaining_micros", "period_reset_ms", "expires_ms", "rate")
    GRANTED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CAP_MICROS_FIELD_NUMBER: _ClassVar[int]
    SPENT_MICROS_FIELD_NUMBER: _ClassVar[int]
    RESERVED_MICROS_FIELD_NUMBER: _ClassVar[int]
    REMAINING_MICROS_FIELD_NUMBER: _ClassVar[int]
    WALLET_REMAINING_MICROS_FIELD_NUMBER: _ClassVar[int]
    PERIOD_RESET_MS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_MS_FIELD_NUMBER: _ClassVar[int]
    RATE_FIELD_NUMBER: _ClassVar[int]
    granted: bool
    reason: RefusalReason
    cap_micros: int
    spent_micros: int
    reserved_micros: int
    remaining_micros: int
    wallet_remaining_micros: int
    period_reset_ms: int
    expires_ms: int
    rate: RateLimitStatus
    def __init__(self, granted: _Optional[bool] = ..., reason: _Optional[_Union[RefusalReason, str]] = ..., cap_micros: _Optional[int] = ..., spent_micros: _Optional[int] = ..., reserved_micros: _Optional[int] = ..., remaining_micros: _Optional[int] = ..., wallet_remaining_micros: _Optional[int] = ..., period_reset_ms: _Optional[int] = ..., expires_ms: _Optional[int] = ..., rate: _Optional[_Union[RateLimitStatus, _Mapping]] = ...) -> None: ...

class GrantRequest(_message.Message):
    __slots__ = ("key_id", "grant_id", "want_micros", "min_micros", "ttl_ms", "want_slice", "min_slice")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    GRANT_ID_FIELD_NUMBER: _ClassVar[int]
    WANT_MICROS_FIELD_NUMBER: _ClassVar[int]
    MIN_MICROS_FIELD_NUMBER: _ClassVar[int]
    TTL_MS_FIELD_NUMBER: _ClassVar[int]
    WANT_SLICE_FIELD_NUMBER: _ClassVar[int]
    MIN_SLICE_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    grant_id: str
    want_micros: int
    min_micros: int
    ttl_ms: int
    want_slice: RateSlice
    min_slice: RateSlice
    def __init__(self, key_id: _Optional[str] = ..., grant_id: _Optional[str] = ..., want_micros: _Optional[int] = ..., min_micros: _Optional[int] = ..., ttl_ms: _Optional[int] = ..., want_slice: _Optional[_Union[RateSlice, _Mapping]] = ..., min_slice: _Optional[_Union[RateSlice, _Mapping]] = ...) -> None: ...

class GrantResponse(_message.Message):
    __slots__ = ("granted", "amount_micros", "expires_ms", "slice", "rate")
    GRANTED_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MICROS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_MS_FIELD_NUMBER: _ClassVar[int]
    SLICE_FIELD_NUMBER: _ClassVar[int]
    RATE_FIELD_NUMBER: _ClassVar[int]
    granted: bool
    amount_micros: int
    expires_ms: int
    slice: RateSlice
    rate: RateLimitStatus
    def __init__(self, granted: _Optional[bool] = ..., amount_micros: _Optional[int] = ..., expires_ms: _Optional[int] = ..., slice: _Optional[_Union[RateSlice, _Mapping]] = ..., rate: _Optional[_Union[RateLimitStatus, _Mapping]] = ...) -> None: ...

class SettleRequest(_message.Message):
    __slots__ = ("request_id", "key_id", "provider", "model", "units", "started_ms", "latency_ms", "ttfb_ms", "status", "http_status", "estimated", "grant_id", "service_tier")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    UNITS_FIELD_NUMBER: _ClassVar[int]
    STARTED_MS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    TTFB_MS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    HTTP_STATUS_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_FIELD_NUMBER: _ClassVar[int]
    GRANT_ID_FIELD_NUMBER: _ClassVar[int]
    SERVICE_TIER_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    key_id: str
    provider: str
    model: str
    units: Units
    started_ms: int
    latency_ms: int
    ttfb_ms: int
    status: EventStatus
    http_status: int
    estimated: bool
    grant_id: str
    service_tier: str
    def __init__(self, request_id: _Optional[str] = ..., key_id: _Optional[str] = ..., provider: _Optional[str] = ..., model: _Optional[str] = ..., units: _Optional[_Union[Units, _Mapping]] = ..., started_ms: _Optional[int] = ..., latency_ms: _Optional[int] = ..., ttfb_ms: _Optional[int] = ..., status: _Optional[_Union[EventStatus, str]] = ..., http_status: _Optional[int] = ..., estimated: _Optional[bool] = ..., grant_id: _Optional[str] = ..., service_tier: _Optional[str] = ...) -> None: ...

class SettleBatchRequest(_message.Message):
    __slots__ = ("settlements", "releases")
    SETTLEMENTS_FIELD_NUMBER: _ClassVar[int]
    RELEASES_FIELD_NUMBER: _ClassVar[int]
    settlements: _containers.RepeatedCompositeFieldContainer[SettleRequest]
    releases: _containers.RepeatedCompositeFieldContainer[ReleaseRequest]
    def __init__(self, settlements: _Optional[_Iterable[_Union[SettleRequest, _Mapping]]] = ..., releases: _Optional[_Iterable[_Union[ReleaseRequest, _Mapping]]] = ...) -> None: ...

class SettleOutcome(_message.Message):
    __slots__ = ("request_id", "event", "duplicate", "error", "refusal", "key_remaining_micros")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    REFUSAL_FIELD_NUMBER: _ClassVar[int]
    KEY_REMAINING_MICROS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    event: UsageEvent
    duplicate: bool
    error: str
    refusal: SettleRefusal
    key_remaining_micros: int
    def __init__(self, request_id: _Optional[str] = ..., event: _Optional[_Union[UsageEvent, _Mapping]] = ..., duplicate: _Optional[bool] = ..., error: _Optional[str] = ..., refusal: _Optional[_Union[SettleRefusal, str]] = ..., key_remaining_micros: _Optional[int] = ...) -> None: ...

class SettleBatchResponse(_message.Message):
    __slots__ = ("settled", "released")
    SETTLED_FIELD_NUMBER: _ClassVar[int]
    RELEASED_FIELD_NUMBER: _ClassVar[int]
    settled: _containers.RepeatedCompositeFieldContainer[SettleOutcome]
    released: _containers.RepeatedCompositeFieldContainer[ReleaseResponse]
    def __init__(self, settled: _Optional[_Iterable[_Union[SettleOutcome, _Mapping]]] = ..., released: _Optional[_Iterable[_Union[ReleaseResponse, _Mapping]]] = ...) -> None: ...

class UsageEvent(_message.Message):
    __slots__ = ("request_id", "key_id", "ts_ms", "provider", "model", "units", "cost_micros", "fee_micros", "latency_ms", "ttfb_ms", "status", "http_status", "estimated", "service_tier", "price_rules")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    TS_MS_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    UNITS_FIELD_NUMBER: _ClassVar[int]
    COST_MICROS_FIELD_NUMBER: _ClassVar[int]
    FEE_MICROS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    TTFB_MS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    HTTP_STATUS_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_FIELD_NUMBER: _ClassVar[int]
    SERVICE_TIER_FIELD_NUMBER: _ClassVar[int]
    PRICE_RULES_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    key_id: str
    ts_ms: int
    provider: str
    model: str
    units: Units
    cost_micros: int
    fee_micros: int
    latency_ms: int
    ttfb_ms: int
    status: EventStatus
    http_status: int
    estimated: bool
    service_tier: str
    price_rules: str
    def __init__(self, request_id: _Optional[str] = ..., key_id: _Optional[str] = ..., ts_ms: _Optional[int] = ..., provider: _Optional[str] = ..., model: _Optional[str] = ..., units: _Optional[_Union[Units, _Mapping]] = ..., cost_micros: _Optional[int] = ..., fee_micros: _Optional[int] = ..., latency_ms: _Optional[int] = ..., ttfb_ms: _Optional[int] = ..., status: _Optional[_Union[EventStatus, str]] = ..., http_status: _Optional[int] = ..., estimated: _Optional[bool] = ..., service_tier: _Optional[str] = ..., price_rules: _Optional[str] = ...) -> None: ...

class SettleResponse(_message.Message):
    __slots__ = ("event", "duplicate")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    event: UsageEvent
    duplicate: bool
    def __init__(self, event: _Optional[_Union[UsageEvent, _Mapping]] = ..., duplicate: _Optional[bool] = ...) -> None: ...

class ReleaseRequest(_message.Message):
    __slots__ = ("request_id", "amount_micros", "return_slice")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MICROS_FIELD_NUMBER: _ClassVar[int]
    RETURN_SLICE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    amount_micros: int
    return_slice: RateSlice
    def __init__(self, request_id: _Optional[str] = ..., amount_micros: _Optional[int] = ..., return_slice: _Optional[_Union[RateSlice, _Mapping]] = ...) -> None: ...

class ReleaseResponse(_message.Message):
    __slots__ = ("released",)
    RELEASED_FIELD_NUMBER: _ClassVar[int]
    released: bool
    def __init__(self, released: _Optional[bool] = ...) -> None: ...

class GetUsageRequest(_message.Message):
    __slots__ = ("from_ms", "to_ms", "group_by")
    FROM_MS_FIELD_NUMBER: _ClassVar[int]
    TO_MS_FIELD_NUMBER: _ClassVar[int]
    GROUP_BY_FIELD_NUMBER: _ClassVar[int]
    from_ms: int
    to_ms: int
    group_by: str
    def __init__(self, from_ms: _Optional[int] = ..., to_ms: _Optional[int] = ..., group_by: _Optional[str] = ...) -> None: ...

class ModelUsage(_message.Message):
    __slots__ = ("provider", "model", "requests", "input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens", "cost_micros", "fee_micros", "avg_latency_ms", "characters", "audio_ms", "images")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHED_INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHE_WRITE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COST_MICROS_FIELD_NUMBER: _ClassVar[int]
    FEE_MICROS_FIELD_NUMBER: _ClassVar[int]
    AVG_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    CHARACTERS_FIELD_NUMBER: _ClassVar[int]
    AUDIO_MS_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    provider: str
    model: str
    requests: int
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    cache_write_tokens: int
    cost_micros: int
    fee_micros: int
    avg_latency_ms: int
    characters: int
    audio_ms: int
    images: int
    def __init__(self, provider: _Optional[str] = ..., model: _Optional[str] = ..., requests: _Optional[int] = ..., input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., cached_input_tokens: _Optional[int] = ..., cache_write_tokens: _Optional[int] = ..., cost_micros: _Optional[int] = ..., fee_micros: _Optional[int] = ..., avg_latency_ms: _Optional[int] = ..., characters: _Optional[int] = ..., audio_ms: _Optional[int] = ..., images: _Optional[int] = ...) -> None: ...

class KeyUsage(_message.Message):
    __slots__ = ("key_id", "name", "requests", "input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens", "cost_micros", "fee_micros", "by_model", "characters", "audio_ms", "images", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHED_INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHE_WRITE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COST_MICROS_FIELD_NUMBER: _ClassVar[int]
    FEE_MICROS_FIELD_NUMBER: _ClassVar[int]
    BY_MODEL_FIELD_NUMBER: _ClassVar[int]
    CHARACTERS_FIELD_NUMBER: _ClassVar[int]
    AUDIO_MS_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    name: str
    requests: int
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    cache_write_tokens: int
    cost_micros: int
    fee_micros: int
    by_model: _containers.RepeatedCompositeFieldContainer[ModelUsage]
    characters: int
    audio_ms: int
    images: int
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, key_id: _Optional[str] = ..., name: _Optional[str] = ..., requests: _Optional[int] = ..., input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., cached_input_tokens: _Optional[int] = ..., cache_write_tokens: _Optional[int] = ..., cost_micros: _Optional[int] = ..., fee_micros: _Optional[int] = ..., by_model: _Optional[_Iterable[_Union[ModelUsage, _Mapping]]] = ..., characters: _Optional[int] = ..., audio_ms: _Optional[int] = ..., images: _Optional[int] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class GroupUsage(_message.Message):
    __slots__ = ("value", "key_ids", "requests", "input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens", "cost_micros", "fee_micros", "characters", "audio_ms", "images")
    VALUE_FIELD_NUMBER: _ClassVar[int]
    KEY_IDS_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHED_INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHE_WRITE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COST_MICROS_FIELD_NUMBER: _ClassVar[int]
    FEE_MICROS_FIELD_NUMBER: _ClassVar[int]
    CHARACTERS_FIELD_NUMBER: _ClassVar[int]
    AUDIO_MS_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    value: str
    key_ids: _containers.RepeatedScalarFieldContainer[str]
    requests: int
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    cache_write_tokens: int
    cost_micros: int
    fee_micros: int
    characters: int
    audio_ms: int
    images: int
    def __init__(self, value: _Optional[str] = ..., key_ids: _Optional[_Iterable[str]] = ..., requests: _Optional[int] = ..., input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., cached_input_tokens: _Optional[int] = ..., cache_write_tokens: _Optional[int] = ..., cost_micros: _Optional[int] = ..., fee_micros: _Optional[int] = ..., characters: _Optional[int] = ..., audio_ms: _Optional[int] = ..., images: _Optional[int] = ...) -> None: ...

class GetUsageResponse(_message.Message):
    __slots__ = ("by_key", "group_by", "groups")
    BY_KEY_FIELD_NUMBER: _ClassVar[int]
    GROUP_BY_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    by_key: _containers.RepeatedCompositeFieldContainer[KeyUsage]
    group_by: str
    groups: _containers.RepeatedCompositeFieldContainer[GroupUsage]
    def __init__(self, by_key: _Optional[_Iterable[_Union[KeyUsage, _Mapping]]] = ..., group_by: _Optional[str] = ..., groups: _Optional[_Iterable[_Union[GroupUsage, _Mapping]]] = ...) -> None: ...

class ListUsageEventsRequest(_message.Message):
    __slots__ = ("key_id", "page_size", "page_token")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    page_size: int
    page_token: str
    def __init__(self, key_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListUsageEventsResponse(_message.Message):
    __slots__ = ("key", "events", "next_page_token")
    KEY_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    key: _keys_pb2.Key
    events: _containers.RepeatedCompositeFieldContainer[UsageEvent]
    next_page_token: str
    def __init__(self, key: _Optional[_Union[_keys_pb2.Key, _Mapping]] = ..., events: _Optional[_Iterable[_Union[UsageEvent, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class Price(_message.Message):
    __slots__ = ("provider", "model", "effective_from_ms", "input_micros_per_mtok", "output_micros_per_mtok", "cached_input_micros_per_mtok", "cache_write_micros_per_mtok", "max_output_tokens", "source", "audio_input_micros_per_mtok", "audio_output_micros_per_mtok", "characters_micros_per_mchar", "audio_seconds_micros_per_msec", "images_micros_per_mimage", "cache_write_1h_micros_per_mtok", "image_input_micros_per_mtok", "web_search_micros_per_mcall", "request_micros_per_mrequest", "rules", "file_search_micros_per_mcall", "origin")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_FROM_MS_FIELD_NUMBER: _ClassVar[int]
    INPUT_MICROS_PER_MTOK_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_MICROS_PER_MTOK_FIELD_NUMBER: _ClassVar[int]
    CACHED_INPUT_MICROS_PER_MTOK_FIELD_NUMBER: _ClassVar[int]
    CACHE_WRITE_MICROS_PER_MTOK_FIELD_NUMBER: _ClassVar[int]
    MAX_OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    AUDIO_INPUT_MICROS_PER_MTOK_FIELD_NUMBER: _ClassVar[int]
    AUDIO_OUTPUT_MICROS_PER_MTOK_FIELD_NUMBER: _ClassVar[int]
    CHARACTERS_MICROS_PER_MCHAR_FIELD_NUMBER: _ClassVar[int]
    AUDIO_SECONDS_MICROS_PER_MSEC_FIELD_NUMBER: _ClassVar[int]
    IMAGES_MICROS_PER_MIMAGE_FIELD_NUMBER: _ClassVar[int]
    CACHE_WRITE_1H_MICROS_PER_MTOK_FIELD_NUMBER: _ClassVar[int]
    IMAGE_INPUT_MICROS_PER_MTOK_FIELD_NUMBER: _ClassVar[int]
    WEB_SEARCH_MICROS_PER_MCALL_FIELD_NUMBER: _ClassVar[int]
    REQUEST_MICROS_PER_MREQUEST_FIELD_NUMBER: _ClassVar[int]
    RULES_FIELD_NUMBER: _ClassVar[int]
    FILE_SEARCH_MICROS_PER_MCALL_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    provider: str
    model: str
    effective_from_ms: int
    input_micros_per_mtok: int
    output_micros_per_mtok: int
    cached_input_micros_per_mtok: int
    cache_write_micros_per_mtok: int
    max_output_tokens: int
    source: str
    audio_input_micros_per_mtok: int
    audio_output_micros_per_mtok: int
    characters_micros_per_mchar: int
    audio_seconds_micros_per_msec: int
    images_micros_per_mimage: int
    cache_write_1h_micros_per_mtok: int
    image_input_micros_per_mtok: int
    web_search_micros_per_mcall: int
    request_micros_per_mrequest: int
    rules: _containers.RepeatedCompositeFieldContainer[PriceRule]
    file_search_micros_per_mcall: int
    origin: str
    def __init__(self, provider: _Optional[str] = ..., model: _Optional[str] = ..., effective_from_ms: _Optional[int] = ..., input_micros_per_mtok: _Optional[int] = ..., output_micros_per_mtok: _Optional[int] = ..., cached_input_micros_per_mtok: _Optional[int] = ..., cache_write_micros_per_mtok: _Optional[int] = ..., max_output_tokens: _Optional[int] = ..., source: _Optional[str] = ..., audio_input_micros_per_mtok: _Optional[int] = ..., audio_output_micros_per_mtok: _Optional[int] = ..., characters_micros_per_mchar: _Optional[int] = ..., audio_seconds_micros_per_msec: _Optional[int] = ..., images_micros_per_mimage: _Optional[int] = ..., cache_write_1h_micros_per_mtok: _Optional[int] = ..., image_input_micros_per_mtok: _Optional[int] = ..., web_search_micros_per_mcall: _Optional[int] = ..., request_micros_per_mrequest: _Optional[int] = ..., rules: _Optional[_Iterable[_Union[PriceRule, _Mapping]]] = ..., file_search_micros_per_mcall: _Optional[int] = ..., origin: _Optional[str] = ...) -> None: ...

class PriceRule(_message.Message):
    __slots__ = ("above_input_tokens", "window_start_minute", "window_end_minute", "service_tier", "rates")
    ABOVE_INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_START_MINUTE_FIELD_NUMBER: _ClassVar[int]
    WINDOW_END_MINUTE_FIELD_NUMBER: _ClassVar[int]
    SERVICE_TIER_FIELD_NUMBER: _ClassVar[int]
    RATES_FIELD_NUMBER: _ClassVar[int]
    above_input_tokens: int
    window_start_minute: int
    window_end_minute: int
    service_tier: str
    rates: PriceRates
    def __init__(self, above_input_tokens: _Optional[int] = ..., window_start_minute: _Optional[int] = ..., window_end_minute: _Optional[int] = ..., service_tier: _Optional[str] = ..., rates: _Optional[_Union[PriceRates, _Mapping]] = ...) -> None: ...

class PriceRates(_message.Message):
    __slots__ = ("input_micros_per_mtok", "output_micros_per_mtok", "cached_input_micros_per_mtok", "cache_write_micros_per_mtok", "audio_input_micros_per_mtok", "audio_output_micros_per_mtok", "characters_micros_per_mchar", "audio_seconds_micros_per_msec", "images_micros_per_mimage", "cache_write_1h_micros_per_mtok", "image_input_micros_per_mtok", "web_search_micros_per_mcall", "request_micros_per_mrequest", "file_search_micros_per_mcall")
    INPUT_MICROS_PER_MTOK_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_MICROS_PER_MTOK_FIELD_NUMBER: _ClassVar[int]
    CACHED_INPUT_MICROS_PER_MTOK_FIELD_NUMBER: _ClassVar[int]
    CACHE_WRITE_MICROS_PER_MTOK_FIELD_NUMBER: _ClassVar[int]
    AUDIO_INPUT_MICROS_PER_MTOK_FIELD_NUMBER: _ClassVar[int]
    AUDIO_OUTPUT_MICROS_PER_MTOK_FIELD_NUMBER: _ClassVar[int]
    CHARACTERS_MICROS_PER_MCHAR_FIELD_NUMBER: _ClassVar[int]
    AUDIO_SECONDS_MICROS_PER_MSEC_FIELD_NUMBER: _ClassVar[int]
    IMAGES_MICROS_PER_MIMAGE_FIELD_NUMBER: _ClassVar[int]
    CACHE_WRITE_1H_MICROS_PER_MTOK_FIELD_NUMBER: _ClassVar[int]
    IMAGE_INPUT_MICROS_PER_MTOK_FIELD_NUMBER: _ClassVar[int]
    WEB_SEARCH_MICROS_PER_MCALL_FIELD_NUMBER: _ClassVar[int]
    REQUEST_MICROS_PER_MREQUEST_FIELD_NUMBER: _ClassVar[int]
    FILE_SEARCH_MICROS_PER_MCALL_FIELD_NUMBER: _ClassVar[int]
    input_micros_per_mtok: int
    output_micros_per_mtok: int
    cached_input_micros_per_mtok: int
    cache_write_micros_per_mtok: int
    audio_input_micros_per_mtok: int
    audio_output_micros_per_mtok: int
    characters_micros_per_mchar: int
    audio_seconds_micros_per_msec: int
    images_micros_per_mimage: int
    cache_write_1h_micros_per_mtok: int
    image_input_micros_per_mtok: int
    web_search_micros_per_mcall: int
    request_micros_per_mrequest: int
    file_search_micros_per_mcall: int
    def __init__(self, input_micros_per_mtok: _Optional[int] = ..., output_micros_per_mtok: _Optional[int] = ..., cached_input_micros_per_mtok: _Optional[int] = ..., cache_write_micros_per_mtok: _Optional[int] = ..., audio_input_micros_per_mtok: _Optional[int] = ..., audio_output_micros_per_mtok: _Optional[int] = ..., characters_micros_per_mchar: _Optional[int] = ..., audio_seconds_micros_per_msec: _Optional[int] = ..., images_micros_per_mimage: _Optional[int] = ..., cache_write_1h_micros_per_mtok: _Optional[int] = ..., image_input_micros_per_mtok: _Optional[int] = ..., web_search_micros_per_mcall: _Optional[int] = ..., request_micros_per_mrequest: _Optional[int] = ..., file_search_micros_per_mcall: _Optional[int] = ...) -> None: ...

class ListPricesRequest(_message.Message):
    __slots__ = ("at_ms", "include_history")
    AT_MS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_HISTORY_FIELD_NUMBER: _ClassVar[int]
    at_ms: int
    include_history: bool
    def __init__(self, at_ms: _Optional[int] = ..., include_history: _Optional[bool] = ...) -> None: ...

class ListPricesResponse(_message.Message):
    __slots__ = ("prices", "fee_bps")
    PRICES_FIELD_NUMBER: _ClassVar[int]
    FEE_BPS_FIELD_NUMBER: _ClassVar[int]
    prices: _containers.RepeatedCompositeFieldContainer[Price]
    fee_bps: int
    def __init__(self, prices: _Optional[_Iterable[_Union[Price, _Mapping]]] = ..., fee_bps: _Optional[int] = ...) -> None: ...

class GetOwnKeyRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetOwnKeyResponse(_message.Message):
    __slots__ = ("key", "lifetime_cost_micros", "day_cost_micros", "week_cost_micros", "month_cost_micros")
    KEY_FIELD_NUMBER: _ClassVar[int]
    LIFETIME_COST_MICROS_FIELD_NUMBER: _ClassVar[int]
    DAY_COST_MICROS_FIELD_NUMBER: _ClassVar[int]
    WEEK_COST_MICROS_FIELD_NUMBER: _ClassVar[int]
    MONTH_COST_MICROS_FIELD_NUMBER: _ClassVar[int]
    key: _keys_pb2.Key
    lifetime_cost_micros: int
    day_cost_micros: int
    week_cost_micros: int
    month_cost_micros: int
    def __init__(self, key: _Optional[_Union[_keys_pb2.Key, _Mapping]] = ..., lifetime_cost_micros: _Optional[int] = ..., day_cost_micros: _Optional[int] = ..., week_cost_micros: _Optional[int] = ..., month_cost_micros: _Optional[int] = ...) -> None: ...
