"""Who is calling, and may they call this method.

Callers send `authorization: Bearer <secret>`: the operator's admin token,
a data plane's service token, or an account's key. The interceptor resolves
the principal once per call, checks it against METHOD_ROLES, makes it
available to the servicer through `current()`, and turns domain errors into
gRPC statuses — the one place either happens."""

from __future__ import annotations

import contextvars
import enum
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc

from controlplane import secrets
from controlplane.errors import PermissionDenied, SpendgateError, Unauthenticated
from controlplane.keystore import KeyStore
from controlplane.records import Scope

log = logging.getLogger(__name__)


class Role(enum.Enum):
    ADMIN = "admin"
    SERVICE = "service"
    MASTER = "master"
    STANDARD = "standard"
    ANY = "any"  # a requirement only: any valid credential
    KEY = "key"  # a requirement only: any account key, master or standard


_KEYS = "/spendgate.v1.KeyService/"
_USAGE = "/spendgate.v1.UsageService/"
_ADMIN = "/spendgate.v1.AdminService/"
_WEBHOOKS = "/spendgate.v1.WebhookService/"

METHOD_ROLES: dict[str, Role] = {
    **{
        _KEYS + m: Role.MASTER
        for m in ("CreateKey", "GetKey", "ListKeys", "UpdateKey", "RotateKey", "RevokeKey")
    },
    **{_KEYS + m: Role.SERVICE for m in ("LookupKey", "WatchKeys")},
    **{_USAGE + m: Role.SERVICE for m in ("Reserve", "Grant", "Settle", "SettleBatch", "Release")},
    **{_USAGE + m: Role.MASTER for m in ("GetUsage", "ListUsageEvents")},
    _USAGE + "ListPrices": Role.ANY,
    _USAGE + "GetOwnKey": Role.KEY,  # for itself
    **{_ADMIN + m: Role.ADMIN for m in ("CreateAccount", "CreditWallet", "UpsertPrice", "ApplyCatalog")},
    **{
        _WEBHOOKS + m: Role.MASTER
        for m in (
            "SetWebhookEndpoint",
            "GetWebhookEndpoint",
            "DeleteWebhookEndpoint",
            "SetKeyThresholds",
            "GetKeyThresholds",
            "SetWalletThreshold",
            "ListWebhookDeliveries",
            "RetryWebhookDelivery",
        )
    },
}


# An expired key may still read its own state (when it expired, what it spent): nothing else.
READABLE_WHEN_EXPIRED = frozenset({_USAGE + "GetOwnKey"})


@dataclass(frozen=True)
class Principal:
    role: Role
    account_id: str = ""
    key_id: str = ""


_current: contextvars.ContextVar[Principal] = contextvars.ContextVar("principal")


def current() -> Principal:
    return _current.get()


def current_account() -> str:
    return _current.get().account_id


@dataclass(frozen=True)
class Tokens:
    admin: str
    service: str


class Authenticator:
    def __init__(self, tokens: Tokens, keystore: KeyStore) -> None:
        self._tokens = tokens
        self._keystore = keystore

    def principal(self, metadata: tuple[tuple[str, Any], ...] | None, method: str = "") -> Principal:
        header = next((v for k, v in metadata or () if k == "authorization"), None)
        if not isinstance(header, str) or not header.lower().startswith("bearer "):
            raise Unauthenticated("missing credentials: send 'authorization: Bearer <token or key>'")
        presented = header[7:].strip()
        if secrets.same_token(presented, self._tokens.admin):
            return Principal(Role.ADMIN)
        if secrets.same_token(presented, self._tokens.service):
            return Principal(Role.SERVICE)
        found = self._keystore.find(secrets.digest(presented))
        if found is None or found.key.revoked:
            raise Unauthenticated("invalid credentials")
        key, now = found.key, self._keystore.now()
        refusal = found.refusal(now)
        rotated_out = found.secret_expires_ms is not None and now >= found.secret_expires_ms
        if refusal is not None and (rotated_out or method not in READABLE_WHEN_EXPIRED):
            raise Unauthenticated(refusal)
        role = Role.MASTER if key.scope is Scope.MASTER else Role.STANDARD
        return Principal(role, account_id=key.account_id, key_id=key.id)

    @staticmethod
    def allows(principal: Principal, needed: Role) -> bool:
        if needed is Role.KEY:
            return principal.role in (Role.MASTER, Role.STANDARD)
        if needed is Role.ANY or principal.role is Role.ADMIN:
            # The operator may do anything a data plane may, and read prices.
            return needed is not Role.MASTER
        return principal.role is needed


class AuthInterceptor(grpc.ServerInterceptor):
    def __init__(self, authenticator: Authenticator) -> None:
        self._auth = authenticator

    def intercept_service(self, continuation: Callable[[Any], Any], details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(details)
        needed = METHOD_ROLES.get(details.method)
        if handler is None or not details.method.startswith("/spendgate."):
            return handler  # reflection, health: open
        if needed is None:  # an RPC of ours the table does not name: closed, never open
            return _refuse(handler, PermissionDenied(f"{details.method} is not in the role table"))
        try:
            principal = self._auth.principal(details.invocation_metadata, details.method)
            if not self._auth.allows(principal, needed):
                raise PermissionDenied(f"this credential may not call {details.method.rsplit('/', 1)[-1]}")
        except SpendgateError as exc:
            return _refuse(handler, exc)
        return _wrap(handler, principal)


def _abort(context: grpc.ServicerContext, exc: SpendgateError) -> None:
    context.abort(exc.code, str(exc))


def _refuse(handler: grpc.RpcMethodHandler[Any, Any], exc: SpendgateError) -> grpc.RpcMethodHandler[Any, Any]:
    def unary(_request: Any, context: grpc.ServicerContext) -> Any:
        _abort(context, exc)

    def stream(_request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        _abort(context, exc)
        yield  # pragma: no cover - abort raises

    return _replace(handler, unary, stream)


def _wrap(handler: grpc.RpcMethodHandler[Any, Any], principal: Principal) -> grpc.RpcMethodHandler[Any, Any]:
    def unary(request: Any, context: grpc.ServicerContext) -> Any:
        token = _current.set(principal)
        try:
            assert handler.unary_unary is not None
            return handler.unary_unary(request, context)
        except SpendgateError as exc:
            _abort(context, exc)
        finally:
            _current.reset(token)

    def stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        token = _current.set(principal)
        try:
            assert handler.unary_stream is not None
            yield from handler.unary_stream(request, context)
        except SpendgateError as exc:
            _abort(context, exc)
        finally:
            _current.reset(token)

    return _replace(handler, unary, stream)


def _replace(
    handler: grpc.RpcMethodHandler[Any, Any], unary: Any, stream: Any
) -> grpc.RpcMethodHandler[Any, Any]:
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            stream,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    return grpc.unary_unary_rpc_method_handler(
        unary,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
