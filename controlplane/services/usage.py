"""spendgate.v1.UsageService."""

from __future__ import annotations

import grpc
from sqlalchemy import Engine

from controlplane import auth, catalog, lifecycle, periods
from controlplane.errors import InvalidArgument, NotFound
from controlplane.keystore import KeyStore
from controlplane.ledger import Ledger, Settled, Settlement, SettleRefusal
from controlplane.periods import CapPeriod
from controlplane.records import Clock
from controlplane.reports import Reports, Totals, group_by_tag
from controlplane.services import convert
from spendgate.v1 import usage_pb2, usage_pb2_grpc


class UsageService(usage_pb2_grpc.UsageServiceServicer):
    def __init__(
        self, engine: Engine, keystore: KeyStore, ledger: Ledger, reports: Reports, clock: Clock
    ) -> None:
        self._engine = engine
        self._keys = keystore
        self._ledger = ledger
        self._reports = reports
        self._clock = clock

    def Reserve(
        self, request: usage_pb2.ReserveRequest, context: grpc.ServicerContext
    ) -> usage_pb2.ReserveResponse:
        outcome = self._ledger.reserve(
            request.key_id,
            request.request_id,
            request.amount_micros,
            request.ttl_ms,
            request.return_grant_id,
            request.return_micros,
            request.tokens,
        )
        response = usage_pb2.ReserveResponse(
            granted=outcome.granted,
            reason=convert.REFUSALS[outcome.refusal]
            if outcome.refusal
            else usage_pb2.REFUSAL_REASON_UNSPECIFIED,
            spent_micros=outcome.key.spent_micros,
            reserved_micros=outcome.key.reserved_micros,
            wallet_remaining_micros=outcome.wallet_remaining_micros,
            period_reset_ms=outcome.period_reset_ms,
            expires_ms=outcome.expires_ms,
        )
        if outcome.key.cap_micros is not None:
            response.cap_micros = outcome.key.cap_micros
        if outcome.key.remaining_micros is not None:
            response.remaining_micros = outcome.key.remaining_micros
        if outcome.rate is not None:
            response.rate.CopyFrom(convert.rate_to_pb(outcome.rate))
        return response

    def Grant(
        self, request: usage_pb2.GrantRequest, context: grpc.ServicerContext
    ) -> usage_pb2.GrantResponse:
        outcome = self._ledger.grant(
            request.key_id,
            request.grant_id,
            request.want_micros,
            request.min_micros,
            request.ttl_ms,
            convert.ask_from(request.want_slice),
            convert.ask_from(request.min_slice),
        )
        response = usage_pb2.GrantResponse(
            granted=outcome.granted,
            amount_micros=outcome.amount_micros,
            expires_ms=outcome.expires_ms,
            slice=convert.slice_to_pb(outcome.slice),
        )
        if outcome.rate is not None:
            response.rate.CopyFrom(convert.rate_to_pb(outcome.rate))
        return response

    def Settle(
        self, request: usage_pb2.SettleRequest, context: grpc.ServicerContext
    ) -> usage_pb2.SettleResponse:
        event, duplicate = self._ledger.settle(_settlement(request))
        return usage_pb2.SettleResponse(event=convert.event_to_pb(event), duplicate=duplicate)

    def SettleBatch(
        self, request: usage_pb2.SettleBatchRequest, context: grpc.ServicerContext
    ) -> usage_pb2.SettleBatchResponse:
        settlements: list[Settlement | InvalidArgument] = []
        for item in request.settlements:
            try:
                settlements.append(_settlement(item))
            except InvalidArgument as exc:
                settlements.append(exc)
        outcomes = iter(self._ledger.settle_many([s for s in settlements if isinstance(s, Settlement)]))
        response = usage_pb2.SettleBatchResponse()
        for item, s in zip(request.settlements, settlements, strict=True):
            if isinstance(s, InvalidArgument):
                outcome = Settled(item.request_id, error=s, refusal=SettleRefusal.INVALID)
            else:
                outcome = next(outcomes)
            settled = response.settled.add(
                request_id=outcome.request_id,
                duplicate=outcome.duplicate,
                error=_describe(outcome.error),
                refusal=convert.SETTLE_REFUSALS[outcome.refusal] if outcome.refusal else 0,
                key_remaining_micros=outcome.key_remaining_micros,
            )
            if outcome.event is not None:
                settled.event.CopyFrom(convert.event_to_pb(outcome.event))
        for release in request.releases:
            response.released.add(released=self._release(release))
        return response

    def Release(
        self, request: usage_pb2.ReleaseRequest, context: grpc.ServicerContext
    ) -> usage_pb2.ReleaseResponse:
        return usage_pb2.ReleaseResponse(released=self._release(request))

    def _release(self, request: usage_pb2.ReleaseRequest) -> bool:
        amount = request.amount_micros if request.HasField("amount_micros") else None
        returned = convert.ask_from(request.return_slice) if request.HasField("return_slice") else None
        return self._ledger.release(request.request_id, amount, returned)

    def GetUsage(
        self, request: usage_pb2.GetUsageRequest, context: grpc.ServicerContext
    ) -> usage_pb2.GetUsageResponse:
        tag = lifecycle.group_by_metadata(request.group_by)
        rollups = self._reports.usage(auth.current_account(), request.from_ms, request.to_ms)
        groups = [] if tag is None else group_by_tag(rollups, tag)
        return usage_pb2.GetUsageResponse(
            group_by=request.group_by,
            groups=[
                usage_pb2.GroupUsage(value=g.value, key_ids=g.key_ids, **_totals(g.totals)) for g in groups
            ],
            by_key=[
                usage_pb2.KeyUsage(
                    key_id=r.key_id,
                    name=r.name,
                    metadata=dict(r.metadata),
                    **_totals(r.totals),
                    by_model=[
                        usage_pb2.ModelUsage(
                            provider=m.provider,
                            model=m.model,
                            avg_latency_ms=m.totals.avg_latency_ms,
                            **_totals(m.totals),
                        )
                        for m in r.by_model
                    ],
                )
                for r in rollups
            ],
        )

    def ListUsageEvents(
        self, request: usage_pb2.ListUsageEventsRequest, context: grpc.ServicerContext
    ) -> usage_pb2.ListUsageEventsResponse:
        key = self._keys.get_key(auth.current_account(), request.key_id)
        page = self._reports.events(key.id, request.page_size, request.page_token)
        return usage_pb2.ListUsageEventsResponse(
            key=convert.key_to_pb(key, self._clock()),
            events=[convert.event_to_pb(e) for e in page.items],
            next_page_token=page.next_token,
        )

    def GetOwnKey(
        self, request: usage_pb2.GetOwnKeyRequest, context: grpc.ServicerContext
    ) -> usage_pb2.GetOwnKeyResponse:
        principal = auth.current()  # an account key (Role.KEY)
        key = self._keys.get_key(principal.account_id, principal.key_id)
        now = self._clock()
        day, month = periods.bounds(CapPeriod.DAILY, now)[0], periods.bounds(CapPeriod.MONTHLY, now)[0]
        lifetime, today, week, this_month = self._reports.costs_since(
            key.id, (0, day, periods.week_start(now), month)
        )
        return usage_pb2.GetOwnKeyResponse(
            key=convert.key_to_pb(key, now),
            lifetime_cost_micros=lifetime,
            day_cost_micros=today,
            week_cost_micros=week,
            month_cost_micros=this_month,
        )

    def ListPrices(
        self, request: usage_pb2.ListPricesRequest, context: grpc.ServicerContext
    ) -> usage_pb2.ListPricesResponse:
        if request.at_ms < 0:
            raise InvalidArgument("at_ms", "must not be negative")
        with self._engine.connect() as conn:
            rows = catalog.listing(conn, request.at_ms or self._clock(), request.include_history)
        return usage_pb2.ListPricesResponse(
            prices=[convert.price_to_pb(p) for p in rows], fee_bps=self._ledger.fee_bps
        )


def _totals(t: Totals) -> dict[str, int]:
    return {
        "requests": t.requests,
        "input_tokens": t.input_tokens,
        "output_tokens": t.output_tokens,
        "cached_input_tokens": t.cached_input_tokens,
        "cache_write_tokens": t.cache_write_tokens,
        "cost_micros": t.cost_micros,
        "fee_micros": t.fee_micros,
        "characters": t.characters,
        "audio_ms": t.audio_ms,
        "images": t.images,
    }


def _settlement(request: usage_pb2.SettleRequest) -> Settlement:
    if not request.provider:
        raise InvalidArgument("provider", "must not be empty")
    if not request.model:
        raise InvalidArgument("model", "must not be empty")
    return Settlement(
        request_id=request.request_id,
        key_id=request.key_id,
        provider=request.provider,
        model=request.model,
        units=convert.units_from(request.units),
        started_ms=request.started_ms,
        latency_ms=request.latency_ms,
        ttfb_ms=request.ttfb_ms,
        status=convert.status_from(request.status),
        http_status=request.http_status,
        estimated=request.estimated,
        grant_id=request.grant_id,
        service_tier=request.service_tier[:40],
    )


def _describe(error: InvalidArgument | NotFound | None) -> str:
    return "" if error is None else str(error)
