from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WebhookDeliveryStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WEBHOOK_DELIVERY_STATUS_UNSPECIFIED: _ClassVar[WebhookDeliveryStatus]
    WEBHOOK_DELIVERY_STATUS_PENDING: _ClassVar[WebhookDeliveryStatus]
    WEBHOOK_DELIVERY_STATUS_DELIVERED: _ClassVar[WebhookDeliveryStatus]
    WEBHOOK_DELIVERY_STATUS_DEAD: _ClassVar[WebhookDeliveryStatus]
WEBHOOK_DELIVERY_STATUS_UNSPECIFIED: WebhookDeliveryStatus
WEBHOOK_DELIVERY_STATUS_PENDING: WebhookDeliveryStatus
WEBHOOK_DELIVERY_STATUS_DELIVERED: WebhookDeliveryStatus
WEBHOOK_DELIVERY_STATUS_DEAD: WebhookDeliveryStatus

class WebhookEndpoint(_message.Message):
    __slots__ = ("url", "event_types", "secret_prefix", "created_ms", "updated_ms", "wallet_low_micros")
    URL_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPES_FIELD_NUMBER: _ClassVar[int]
    SECRET_PREFIX_FIELD_NUMBER: _ClassVar[int]
    CREATED_MS_FIELD_NUMBER: _ClassVar[int]
    UPDATED_MS_FIELD_NUMBER: _ClassVar[int]
    WALLET_LOW_MICROS_FIELD_NUMBER: _ClassVar[int]
    url: str
    event_types: _containers.RepeatedScalarFieldContainer[str]
    secret_prefix: str
    created_ms: int
    updated_ms: int
    wallet_low_micros: int
    def __init__(self, url: _Optional[str] = ..., event_types: _Optional[_Iterable[str]] = ..., secret_prefix: _Optional[str] = ..., created_ms: _Optional[int] = ..., updated_ms: _Optional[int] = ..., wallet_low_micros: _Optional[int] = ...) -> None: ...

class SetWebhookEndpointRequest(_message.Message):
    __slots__ = ("url", "event_types", "rotate_secret")
    URL_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPES_FIELD_NUMBER: _ClassVar[int]
    ROTATE_SECRET_FIELD_NUMBER: _ClassVar[int]
    url: str
    event_types: _containers.RepeatedScalarFieldContainer[str]
    rotate_secret: bool
    def __init__(self, url: _Optional[str] = ..., event_types: _Optional[_Iterable[str]] = ..., rotate_secret: _Optional[bool] = ...) -> None: ...

class SetWebhookEndpointResponse(_message.Message):
    __slots__ = ("endpoint", "secret")
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    endpoint: WebhookEndpoint
    secret: str
    def __init__(self, endpoint: _Optional[_Union[WebhookEndpoint, _Mapping]] = ..., secret: _Optional[str] = ...) -> None: ...

class GetWebhookEndpointRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetWebhookEndpointResponse(_message.Message):
    __slots__ = ("endpoint",)
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    endpoint: WebhookEndpoint
    def __init__(self, endpoint: _Optional[_Union[WebhookEndpoint, _Mapping]] = ...) -> None: ...

class DeleteWebhookEndpointRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DeleteWebhookEndpointResponse(_message.Message):
    __slots__ = ("dropped_deliveries",)
    DROPPED_DELIVERIES_FIELD_NUMBER: _ClassVar[int]
    dropped_deliveries: int
    def __init__(self, dropped_deliveries: _Optional[int] = ...) -> None: ...

class SetKeyThresholdsRequest(_message.Message):
    __slots__ = ("key_id", "percents")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    PERCENTS_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    percents: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, key_id: _Optional[str] = ..., percents: _Optional[_Iterable[int]] = ...) -> None: ...

class SetKeyThresholdsResponse(_message.Message):
    __slots__ = ("key_id", "percents")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    PERCENTS_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    percents: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, key_id: _Optional[str] = ..., percents: _Optional[_Iterable[int]] = ...) -> None: ...

class GetKeyThresholdsRequest(_message.Message):
    __slots__ = ("key_id",)
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    def __init__(self, key_id: _Optional[str] = ...) -> None: ...

class GetKeyThresholdsResponse(_message.Message):
    __slots__ = ("key_id", "percents")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    PERCENTS_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    percents: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, key_id: _Optional[str] = ..., percents: _Optional[_Iterable[int]] = ...) -> None: ...

class SetWalletThresholdRequest(_message.Message):
    __slots__ = ("low_micros",)
    LOW_MICROS_FIELD_NUMBER: _ClassVar[int]
    low_micros: int
    def __init__(self, low_micros: _Optional[int] = ...) -> None: ...

class SetWalletThresholdResponse(_message.Message):
    __slots__ = ("low_micros",)
    LOW_MICROS_FIELD_NUMBER: _ClassVar[int]
    low_micros: int
    def __init__(self, low_micros: _Optional[int] = ...) -> None: ...

class WebhookDelivery(_message.Message):
    __slots__ = ("event_id", "event_type", "status", "attempts", "next_attempt_ms", "last_error", "last_status_code", "created_ms", "delivered_ms", "body")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_ATTEMPT_MS_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    LAST_STATUS_CODE_FIELD_NUMBER: _ClassVar[int]
    CREATED_MS_FIELD_NUMBER: _ClassVar[int]
    DELIVERED_MS_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    event_type: str
    status: WebhookDeliveryStatus
    attempts: int
    next_attempt_ms: int
    last_error: str
    last_status_code: int
    created_ms: int
    delivered_ms: int
    body: str
    def __init__(self, event_id: _Optional[str] = ..., event_type: _Optional[str] = ..., status: _Optional[_Union[WebhookDeliveryStatus, str]] = ..., attempts: _Optional[int] = ..., next_attempt_ms: _Optional[int] = ..., last_error: _Optional[str] = ..., last_status_code: _Optional[int] = ..., created_ms: _Optional[int] = ..., delivered_ms: _Optional[int] = ..., body: _Optional[str] = ...) -> None: ...

class ListWebhookDeliveriesRequest(_message.Message):
    __slots__ = ("status", "page_size", "page_token")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    status: WebhookDeliveryStatus
    page_size: int
    page_token: str
    def __init__(self, status: _Optional[_Union[WebhookDeliveryStatus, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListWebhookDeliveriesResponse(_message.Message):
    __slots__ = ("deliveries", "next_page_token")
    DELIVERIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    deliveries: _containers.RepeatedCompositeFieldContainer[WebhookDelivery]
    next_page_token: str
    def __init__(self, deliveries: _Optional[_Iterable[_Union[WebhookDelivery, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class RetryWebhookDeliveryRequest(_message.Message):
    __slots__ = ("event_id",)
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    def __init__(self, event_id: _Optional[str] = ...) -> None: ...

class RetryWebhookDeliveryResponse(_message.Message):
    __slots__ = ("delivery",)
    DELIVERY_FIELD_NUMBER: _ClassVar[int]
    delivery: WebhookDelivery
    def __init__(self, delivery: _Optional[_Union[WebhookDelivery, _Mapping]] = ...) -> None: ...
