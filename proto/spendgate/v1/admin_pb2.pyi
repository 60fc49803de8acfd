from spendgate.v1 import keys_pb2 as _keys_pb2
from spendgate.v1 import usage_pb2 as _usage_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Account(_message.Message):
    __slots__ = ("id", "name", "created_ms", "credit_micros", "spent_micros", "reserved_micros", "remaining_micros")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    CREATED_MS_FIELD_NUMBER: _ClassVar[int]
    CREDIT_MICROS_FIELD_NUMBER: _ClassVar[int]
    SPENT_MICROS_FIELD_NUMBER: _ClassVar[int]
    RESERVED_MICROS_FIELD_NUMBER: _ClassVar[int]
    REMAINING_MICROS_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    created_ms: int
    credit_micros: int
    spent_micros: int
    reserved_micros: int
    remaining_micros: int
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., created_ms: _Optional[int] = ..., credit_micros: _Optional[int] = ..., spent_micros: _Optional[int] = ..., reserved_micros: _Optional[int] = ..., remaining_micros: _Optional[int] = ...) -> None: ...

class CreateAccountRequest(_message.Message):
    __slots__ = ("name", "initial_credit_micros")
    NAME_FIELD_NUMBER: _ClassVar[int]
    INITIAL_CREDIT_MICROS_FIELD_NUMBER: _ClassVar[int]
    name: str
    initial_credit_micros: int
    def __init__(self, name: _Optional[str] = ..., initial_credit_micros: _Optional[int] = ...) -> None: ...

class CreateAccountResponse(_message.Message):
    __slots__ = ("account", "master_key", "master_key_secret")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    MASTER_KEY_FIELD_NUMBER: _ClassVar[int]
    MASTER_KEY_SECRET_FIELD_NUMBER: _ClassVar[int]
    account: Account
    master_key: _keys_pb2.Key
    master_key_secret: str
    def __init__(self, account: _Optional[_Union[Account, _Mapping]] = ..., master_key: _Optional[_Union[_keys_pb2.Key, _Mapping]] = ..., master_key_secret: _Optional[str] = ...) -> None: ...

class CreditWalletRequest(_message.Message):
    __slots__ = ("account_id", "amount_micros")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MICROS_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    amount_micros: int
    def __init__(self, account_id: _Optional[str] = ..., amount_micros: _Optional[int] = ...) -> None: ...

class CreditWalletResponse(_message.Message):
    __slots__ = ("account",)
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    account: Account
    def __init__(self, account: _Optional[_Union[Account, _Mapping]] = ...) -> None: ...

class UpsertPriceRequest(_message.Message):
    __slots__ = ("price",)
    PRICE_FIELD_NUMBER: _ClassVar[int]
    price: _usage_pb2.Price
    def __init__(self, price: _Optional[_Union[_usage_pb2.Price, _Mapping]] = ...) -> None: ...

class UpsertPriceResponse(_message.Message):
    __slots__ = ("price",)
    PRICE_FIELD_NUMBER: _ClassVar[int]
    price: _usage_pb2.Price
    def __init__(self, price: _Optional[_Union[_usage_pb2.Price, _Mapping]] = ...) -> None: ...

class ApplyCatalogRequest(_message.Message):
    __slots__ = ("prices",)
    PRICES_FIELD_NUMBER: _ClassVar[int]
    prices: _containers.RepeatedCompositeFieldContainer[_usage_pb2.Price]
    def __init__(self, prices: _Optional[_Iterable[_Union[_usage_pb2.Price, _Mapping]]] = ...) -> None: ...

class ApplyCatalogResponse(_message.Message):
    __slots__ = ("added",)
    ADDED_FIELD_NUMBER: _ClassVar[int]
    added: int
    def __init__(self, added: _Optional[int] = ...) -> None: ...
