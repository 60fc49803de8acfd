from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class KeyScope(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    KEY_SCOPE_UNSPECIFIED: _ClassVar[KeyScope]
    KEY_SCOPE_STANDARD: _ClassVar[KeyScope]
    KEY_SCOPE_MASTER: _ClassVar[KeyScope]

class CapPeriod(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CAP_PERIOD_UNSPECIFIED: _ClassVar[CapPeriod]
    CAP_PERIOD_LIFETIME: _ClassVar[CapPeriod]
    CAP_PERIOD_DAILY: _ClassVar[CapPeriod]
    CAP_PERIOD_MONTHLY: _ClassVar[CapPeriod]

class KeyChangeKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    KEY_CHANGE_KIND_UNSPECIFIED: _ClassVar[KeyChangeKind]
    KEY_CHANGE_KIND_CREATED: _ClassVar[KeyChangeKind]
    KEY_CHANGE_KIND_UPDATED: _ClassVar[KeyChangeKind]
    KEY_CHANGE_KIND_REVOKED: _ClassVar[KeyChangeKind]
    KEY_CHANGE_KIND_SYNC: _ClassVar[KeyChangeKind]
    KEY_CHANGE_KIND_ROTATED: _ClassVar[KeyChangeKind]
KEY_SCOPE_UNSPECIFIED: KeyScope
KEY_SCOPE_STANDARD: KeyScope
KEY_SCOPE_MASTER: KeyScope
CAP_PERIOD_UNSPECIFIED: CapPeriod
CAP_PERIOD_LIFETIME: CapPeriod
CAP_PERIOD_DAILY: CapPeriod
CAP_PERIOD_MONTHLY: CapPeriod
KEY_CHANGE_KIND_UNSPECIFIED: KeyChangeKind
KEY_CHANGE_KIND_CREATED: KeyChangeKind
KEY_CHANGE_KIND_UPDATED: KeyChangeKind
KEY_CHANGE_KIND_REVOKED: KeyChangeKind
KEY_CHANGE_KIND_SYNC: KeyChangeKind
KEY_CHANGE_KIND_ROTATED: KeyChangeKind

class Key(_message.Message):
    __slots__ = ("id", "account_id", "name", "scope", "cap_micros", "cap_period", "strict", "allowed_models", "metadata", "revoked", "created_ms", "revoked_ms", "spent_micros", "reserved_micros", "remaining_micros", "period_start_ms", "period_reset_ms", "secret_prefix", "expires_ms", "expired", "rotated_ms", "previous_secret_expires_ms", "rate_limits")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    CAP_MICROS_FIELD_NUMBER: _ClassVar[int]
    CAP_PERIOD_FIELD_NUMBER: _ClassVar[int]
    STRICT_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_MODELS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    CREATED_MS_FIELD_NUMBER: _ClassVar[int]
    REVOKED_MS_FIELD_NUMBER: _ClassVar[int]
    SPENT_MICROS_FIELD_NUMBER: _ClassVar[int]
    RESERVED_MICROS_FIELD_NUMBER: _ClassVar[int]
    REMAINING_MICROS_FIELD_NUMBER: _ClassVar[int]
    PERIOD_START_MS_FIELD_NUMBER: _ClassVar[int]
    PERIOD_RESET_MS_FIELD_NUMBER: _ClassVar[int]
    SECRET_PREFIX_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_MS_FIELD_NUMBER: _ClassVar[int]
    EXPIRED_FIELD_NUMBER: _ClassVar[int]
    ROTATED_MS_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_SECRET_EXPIRES_MS_FIELD_NUMBER: _ClassVar[int]
    RATE_LIMITS_FIELD_NUMBER: _ClassVar[int]
    id: str
    account_id: str
    name: str
    scope: KeyScope
    cap_micros: int
    cap_period: CapPeriod
    strict: bool
    allowed_models: _containers.RepeatedScalarFieldContainer[str]
    metadata: _containers.ScalarMap[str, str]
    revoked: bool
    created_ms: int
    revoked_ms: int
    spent_micros: int
    reserved_micros: int
    remaining_micros: int
    period_start_ms: int
    period_reset_ms: int
    secret_prefix: str
    expires_ms: int
    expired: bool
    rotated_ms: int
    previous_secret_expires_ms: int
    rate_limits: RateLimits
    def __init__(self, id: _Optional[str] = ..., account_id: _Optional[str] = ..., name: _Optional[str] = ..., scope: _Optional[_Union[KeyScope, str]] = ..., cap_micros: _Optional[int] = ..., cap_period: _Optional[_Union[CapPeriod, str]] = ..., strict: _Optional[bool] = ..., allowed_models: _Optional[_Iterable[str]] = ..., metadata: _Optional[_Mapping[str, str]] = ..., revoked: _Optional[bool] = ..., created_ms: _Optional[int] = ..., revoked_ms: _Optional[int] = ..., spent_micros: _Optional[int] = ..., reserved_micros: _Optional[int] = ..., remaining_micros: _Optional[int] = ..., period_start_ms: _Optional[int] = ..., period_reset_ms: _Optional[int] = ..., secret_prefix: _Optional[str] = ..., expires_ms: _Optional[int] = ..., expired: _Optional[bool] = ..., rotated_ms: _Optional[int] = ..., previous_secret_expires_ms: _Optional[int] = ..., rate_limits: _Optional[_Union[RateLimits, _Mapping]] = ...) -> None: ...

class RateLimits(_message.Message):
    __slots__ = ("rpm_limit", "tpm_limit", "max_parallel_requests")
    RPM_LIMIT_FIELD_NUMBER: _ClassVar[int]
    TPM_LIMIT_FIELD_NUMBER: _ClassVar[int]
    MAX_PARALLEL_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    rpm_limit: int
    tpm_limit: int
    max_parallel_requests: int
    def __init__(self, rpm_limit: _Optional[int] = ..., tpm_limit: _Optional[int] = ..., max_parallel_requests: _Optional[int] = ...) -> None: ...

class Metadata(_message.Message):
    __slots__ = ("entries",)
    class EntriesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.ScalarMap[str, str]
    def __init__(self, entries: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ModelList(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, models: _Optional[_Iterable[str]] = ...) -> None: ...

class CreateKeyRequest(_message.Message):
    __slots__ = ("name", "scope", "cap_micros", "cap_period", "strict", "allowed_models", "metadata", "expires_ms", "rate_limits")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    CAP_MICROS_FIELD_NUMBER: _ClassVar[int]
    CAP_PERIOD_FIELD_NUMBER: _ClassVar[int]
    STRICT_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_MODELS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_MS_FIELD_NUMBER: _ClassVar[int]
    RATE_LIMITS_FIELD_NUMBER: _ClassVar[int]
    name: str
    scope: KeyScope
    cap_micros: int
    cap_period: CapPeriod
    strict: bool
    allowed_models: _containers.RepeatedScalarFieldContainer[str]
    metadata: _containers.ScalarMap[str, str]
    expires_ms: int
    rate_limits: RateLimits
    def __init__(self, name: _Optional[str] = ..., scope: _Optional[_Union[KeyScope, str]] = ..., cap_micros: _Optional[int] = ..., cap_period: _Optional[_Union[CapPeriod, str]] = ..., strict: _Optional[bool] = ..., allowed_models: _Optional[_Iterable[str]] = ..., metadata: _Optional[_Mapping[str, str]] = ..., expires_ms: _Optional[int] = ..., rate_limits: _Optional[_Union[RateLimits, _Mapping]] = ...) -> None: ...

class CreateKeyResponse(_message.Message):
    __slots__ = ("key", "secret")
    KEY_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    key: Key
    secret: str
    def __init__(self, key: _Optional[_Union[Key, _Mapping]] = ..., secret: _Optional[str] = ...) -> None: ...

class GetKeyRequest(_message.Message):
    __slots__ = ("key_id",)
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    def __init__(self, key_id: _Optional[str] = ...) -> None: ...

class GetKeyResponse(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: Key
    def __init__(self, key: _Optional[_Union[Key, _Mapping]] = ...) -> None: ...

class ListKeysRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "include_revoked")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_REVOKED_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    include_revoked: bool
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., include_revoked: _Optional[bool] = ...) -> None: ...

class ListKeysResponse(_message.Message):
    __slots__ = ("keys", "next_page_token")
    KEYS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedCompositeFieldContainer[Key]
    next_page_token: str
    def __init__(self, keys: _Optional[_Iterable[_Union[Key, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateKeyRequest(_message.Message):
    __slots__ = ("key_id", "name", "cap_micros", "remove_cap", "cap_period", "strict", "allowed_models", "expires_ms", "remove_expiry", "metadata", "rate_limits")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    CAP_MICROS_FIELD_NUMBER: _ClassVar[int]
    REMOVE_CAP_FIELD_NUMBER: _ClassVar[int]
    CAP_PERIOD_FIELD_NUMBER: _ClassVar[int]
    STRICT_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_MODELS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_MS_FIELD_NUMBER: _ClassVar[int]
    REMOVE_EXPIRY_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    RATE_LIMITS_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    name: str
    cap_micros: int
    remove_cap: bool
    cap_period: CapPeriod
    strict: bool
    allowed_models: ModelList
    expires_ms: int
    remove_expiry: bool
    metadata: Metadata
    rate_limits: RateLimits
    def __init__(self, key_id: _Optional[str] = ..., name: _Optional[str] = ..., cap_micros: _Optional[int] = ..., remove_cap: _Optional[bool] = ..., cap_period: _Optional[_Union[CapPeriod, str]] = ..., strict: _Optional[bool] = ..., allowed_models: _Optional[_Union[ModelList, _Mapping]] = ..., expires_ms: _Optional[int] = ..., remove_expiry: _Optional[bool] = ..., metadata: _Optional[_Union[Metadata, _Mapping]] = ..., rate_limits: _Optional[_Union[RateLimits, _Mapping]] = ...) -> None: ...

class UpdateKeyResponse(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: Key
    def __init__(self, key: _Optional[_Union[Key, _Mapping]] = ...) -> None: ...

class RotateKeyRequest(_message.Message):
    __slots__ = ("key_id", "grace_ms")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    GRACE_MS_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    grace_ms: int
    def __init__(self, key_id: _Optional[str] = ..., grace_ms: _Optional[int] = ...) -> None: ...

class RotateKeyResponse(_message.Message):
    __slots__ = ("key", "secret")
    KEY_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    key: Key
    secret: str
    def __init__(self, key: _Optional[_Union[Key, _Mapping]] = ..., secret: _Optional[str] = ...) -> None: ...

class RevokeKeyRequest(_message.Message):
    __slots__ = ("key_id",)
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    def __init__(self, key_id: _Optional[str] = ...) -> None: ...

class RevokeKeyResponse(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: Key
    def __init__(self, key: _Optional[_Union[Key, _Mapping]] = ...) -> None: ...

class LookupKeyRequest(_message.Message):
    __slots__ = ("secret_sha256",)
    SECRET_SHA256_FIELD_NUMBER: _ClassVar[int]
    secret_sha256: bytes
    def __init__(self, secret_sha256: _Optional[bytes] = ...) -> None: ...

class LookupKeyResponse(_message.Message):
    __slots__ = ("key", "secret_expires_ms")
    KEY_FIELD_NUMBER: _ClassVar[int]
    SECRET_EXPIRES_MS_FIELD_NUMBER: _ClassVar[int]
    key: Key
    secret_expires_ms: int
    def __init__(self, key: _Optional[_Union[Key, _Mapping]] = ..., secret_expires_ms: _Optional[int] = ...) -> None: ...

class WatchKeysRequest(_message.Message):
    __slots__ = ("after_seq",)
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    after_seq: int
    def __init__(self, after_seq: _Optional[int] = ...) -> None: ...

class WatchKeysResponse(_message.Message):
    __slots__ = ("seq", "kind", "key", "secret_sha256", "previous_secret_sha256", "previous_secret_expires_ms")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    SECRET_SHA256_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_SECRET_SHA256_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_SECRET_EXPIRES_MS_FIELD_NUMBER: _ClassVar[int]
    seq: int
    kind: KeyChangeKind
    key: Key
    secret_sha256: bytes
    previous_secret_sha256: bytes
    previous_secret_expires_ms: int
    def __init__(self, seq: _Optional[int] = ..., kind: _Optional[_Union[KeyChangeKind, str]] = ..., key: _Optional[_Union[Key, _Mapping]] = ..., secret_sha256: _Optional[bytes] = ..., previous_secret_sha256: _Optional[bytes] = ..., previous_secret_expires_ms: _Optional[int] = ...) -> None: ...
