"""spendgate.v1.AdminService (operator)."""

from __future__ import annotations

import grpc
from sqlalchemy import Engine

from controlplane import catalog
from controlplane.errors import InvalidArgument
from controlplane.keystore import KeyStore
from controlplane.records import Clock
from controlplane.services import convert
from spendgate.v1 import admin_pb2, admin_pb2_grpc


class AdminService(admin_pb2_grpc.AdminServiceServicer):
    def __init__(self, engine: Engine, keystore: KeyStore, clock: Clock) -> None:
        self._engine = engine
        self._keys = keystore
        self._clock = clock

    def CreateAccount(
        self, request: admin_pb2.CreateAccountRequest, context: grpc.ServicerContext
    ) -> admin_pb2.CreateAccountResponse:
        account, key, secret = self._keys.create_account(request.name, request.initial_credit_micros)
        return admin_pb2.CreateAccountResponse(
            account=convert.account_to_pb(account),
            master_key=convert.key_to_pb(key, self._clock()),
            master_key_secret=secret,
        )

    def CreditWallet(
        self, request: admin_pb2.CreditWalletRequest, context: grpc.ServicerContext
    ) -> admin_pb2.CreditWalletResponse:
        account = self._keys.credit(request.account_id, request.amount_micros)
        return admin_pb2.CreditWalletResponse(account=convert.account_to_pb(account))

    def UpsertPrice(
        self, request: admin_pb2.UpsertPriceRequest, context: grpc.ServicerContext
    ) -> admin_pb2.UpsertPriceResponse:
        if not request.HasField("price"):
            raise InvalidArgument("price", "is required")
        with self._engine.begin() as conn:
            stored = catalog.insert(conn, convert.price_from(request.price), self._clock())
        return admin_pb2.UpsertPriceResponse(price=convert.price_to_pb(stored))

    def ApplyCatalog(
        self, request: admin_pb2.ApplyCatalogRequest, context: grpc.ServicerContext
    ) -> admin_pb2.ApplyCatalogResponse:
        rows = [convert.price_from(p, f"prices[{i}]") for i, p in enumerate(request.prices)]
        return admin_pb2.ApplyCatalogResponse(added=catalog.sync(self._engine, rows, self._clock()))
