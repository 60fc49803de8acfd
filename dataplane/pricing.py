"""The catalog as the data plane sees it: which models exist, who serves them,
and the prices used to estimate a request's upper-bound cost. Loaded from
ListPrices at start and refreshed in the background."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, fields

import grpc

from dataplane.errors import UnknownModel
from spendgate.v1 import usage_pb2, usage_pb2_grpc

log = logging.getLogger(__name__)

REFRESH_SECONDS = 30.0


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
            **optional,
        )


class Catalog:
    def __init__(self, prices: list[ModelPrice] | None = None) -> None:
        self._by_qualified: dict[str, ModelPrice] = {}
        self._by_name: dict[str, list[ModelPrice]] = {}
        self.replace(prices or [])

    def replace(self, prices: list[ModelPrice]) -> None:
        by_name: dict[str, list[ModelPrice]] = {}
        for p in prices:
            by_name.setdefault(p.model, []).append(p)
        self._by_qualified = {f"{p.provider}/{p.model}": p for p in prices}
        self._by_name = by_name

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
    stub: usage_pb2_grpc.UsageServiceStub, metadata: tuple[tuple[str, str], ...]
) -> list[ModelPrice]:
    response = await stub.ListPrices(usage_pb2.ListPricesRequest(), metadata=metadata, timeout=10)
    return [ModelPrice.from_pb(p) for p in response.prices]


async def refresh_forever(
    catalog: Catalog, stub: usage_pb2_grpc.UsageServiceStub, metadata: tuple[tuple[str, str], ...]
) -> None:
    while True:
        await asyncio.sleep(REFRESH_SECONDS)
        try:
            catalog.replace(await load(stub, metadata))
        except grpc.aio.AioRpcError as exc:
            log.warning("catalog refresh failed (%s); keeping the current one", exc.code().name)
