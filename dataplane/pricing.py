"""The catalog as the data plane sees it: which models exist, who serves them,
and the prices used to estimate a request's upper-bound cost. Loaded from
ListPrices at start and refreshed in the background."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, fields, replace

import grpc

from dataplane.errors import UnknownModel
from spendgate.contract import RATES, Rule, rule_from_pb
from spendgate.v1 import usage_pb2, usage_pb2_grpc

log = logging.getLogger(__name__)

REFRESH_SECONDS = 30.0
# A time-of-day price window that starts this soon counts for an estimate made now: the
# control plane prices by the request's start, read off another machine's clock.
WINDOW_HORIZON_MS = 60_000


@dataclass(frozen=True)
class ModelPrice:
    provider: str
    model: str
    input_micros_per_mtok: int
    output_micros_per_mtok: int
    cached_input_micros_per_mtok: int | None
    cache_write_micros_per_mtok: int | None
    max_output_tokens: int
    audio_input_micros_per_mtok: int | None = None
    audio_output_micros_per_mtok: int | None = None
    characters_micros_per_mchar: int | None = None
    audio_seconds_micros_per_msec: int | None = None
    images_micros_per_mimage: int | None = None
    cache_write_1h_micros_per_mtok: int | None = None
    image_input_micros_per_mtok: int | None = None
    web_search_micros_per_mcall: int | None = None
    request_micros_per_mrequest: int | None = None
    file_search_micros_per_mcall: int | None = None
    rules: tuple[Rule, ...] = ()

    @classmethod
    def from_pb(cls, p: usage_pb2.Price) -> ModelPrice:
        optional = {
            f.name: getattr(p, f.name) if p.HasField(f.name) else None
            for f in fields(cls)
            if f.type == "int | None"
        }
        return cls(
            provider=p.provider,
            model=p.model,
            input_micros_per_mtok=p.input_micros_per_mtok,
            output_micros_per_mtok=p.output_micros_per_mtok,
            max_output_tokens=p.max_output_tokens,
            rules=tuple(rule_from_pb(r) for r in p.rules),
            **optional,
        )

    def dearest(self, input_tokens_bound: int, now_ms: int, service_tier: str = "") -> ModelPrice:
        """Flat rates no lower than any that could price this request: each rate the
        highest of the row's and of every rule that may apply — a prompt-length tier
        the input could cross, a time-of-day window in force now or within
        WINDOW_HORIZON_MS, the service tier the request asks for."""
        applying = [r for r in self.rules if self._may_apply(r, input_tokens_bound, now_ms, service_tier)]
        if not applying:
            return self  # the estimators read only the flat rates
        rates = {name: getattr(self, name) for name in RATES}
        for rule in applying:
            for name, value in rule.rates.items():
                rates[name] = max(value, rates[name] or 0)
        return replace(self, rules=(), **rates)

    @staticmethod
    def _may_apply(rule: Rule, input_tokens_bound: int, now_ms: int, service_tier: str) -> bool:
        if rule.above_input_tokens is not None and input_tokens_bound <= rule.above_input_tokens:
            return False
        if rule.service_tier and rule.service_tier != service_tier:
            return False
        if rule.window is None:
            return True
        minute = 60_000
        moments = range(now_ms - now_ms % minute + minute, now_ms + WINDOW_HORIZON_MS + 1, minute)
        return rule.in_window(now_ms) or any(rule.in_window(t) for t in moments)


class Catalog:
    def __init__(
        self, prices: list[ModelPrice] | None = None, on_replace: Callable[[], None] | None = None
    ) -> None:
        self._on_replace = on_replace
        self._by_qualified: dict[str, ModelPrice] = {}
        self._by_name: dict[str, list[ModelPrice]] = {}
        self.loaded = asyncio.Event()  # set once the first catalog is in (a worker starting)
        if prices is not None:
            self.replace(prices)

    def replace(self, prices: list[ModelPrice]) -> None:
        by_name: dict[str, list[ModelPrice]] = {}
        for p in prices:
            by_name.setdefault(p.model, []).append(p)
        self._by_qualified = {f"{p.provider}/{p.model}": p for p in prices}
        self._by_name = by_name
        self.loaded.set()
        if self._on_replace is not None:
            self._on_replace()

    def resolve(self, requested: str, providers: tuple[str, ...]) -> ModelPrice:
        """The catalog entry for a request's model (plain name or provider/model),
        among the providers this route can reach."""
        entry = self._by_qualified.get(requested)
        if entry is None:
            candidates = [p for p in self._by_name.get(requested, []) if p.provider in providers]
            entry = candidates[0] if candidates else None
        if entry is None or entry.provider not in providers:
            raise UnknownModel(
                f"The model `{requested}` does not exist or is not in this gateway's catalog.", param="model"
            )
        return entry

    def models(self) -> list[ModelPrice]:
        return sorted(self._by_qualified.values(), key=lambda p: (p.provider, p.model))


async def load(
    stub: usage_pb2_grpc.UsageServiceAsyncStub, metadata: tuple[tuple[str, str], ...]
) -> list[ModelPrice]:
    response = await stub.ListPrices(usage_pb2.ListPricesRequest(), metadata=metadata, timeout=10)
    return [ModelPrice.from_pb(p) for p in response.prices]


async def refresh_forever(
    catalog: Catalog, stub: usage_pb2_grpc.UsageServiceAsyncStub, metadata: tuple[tuple[str, str], ...]
) -> None:
    while True:
        await asyncio.sleep(REFRESH_SECONDS)
        try:
            catalog.replace(await load(stub, metadata))
        except grpc.aio.AioRpcError as exc:
            log.warning("catalog refresh failed (%s); keeping the current one", exc.code().name)
