"""OpenAI's `/v1/images/generations`.

Images are billed the way OpenAI bills each model family:

* DALL·E answers carry no usage and are priced per image by size and
  quality. The catalog has one row per variant, named
  `model:size:quality` (`dall-e-3:1024x1024:standard`) or `model:size`
  (`dall-e-2:512x512`), priced with `images_micros_per_mimage`; the request's
  `size` and `quality` (or the model's defaults) pick the row, and the bill
  is the number of images in `data`.
* GPT Image models report `usage` and OpenAI bills those tokens: text input
  at the input rate, image output at the output rate (its per-image table is
  that output-token count times the rate). Their catalog row is the plain
  model name with token prices, so `quality: "auto"` or any size needs no
  guess. Streamed (`stream: true`), the usage is on
  `image_generation.completed`; partial images are inside those counts.

So a row prices images or tokens, never both, and the parser reports the unit
its row prices (`ParseContext.priced_units`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dataplane.providers.jsonbody import TAIL_BYTES, JsonBody, as_objs, count, loads, tail_object
from dataplane.providers.openai_audio import is_sse
from dataplane.providers.sse import SSESplitter
from dataplane.providers.usage import ParseContext, Usage

__all__ = ["DEFAULT_MODEL", "ImagesParser", "model_candidates", "requested_images"]

DEFAULT_MODEL = "dall-e-2"  # what the API uses without `model`
_DEFAULTS = {"dall-e-2": ("1024x1024", None), "dall-e-3": ("1024x1024", "standard")}


def requested_images(request: Mapping[str, Any]) -> int:
    n = request.get("n")
    return n if type(n) is int and n > 0 else 1


def model_candidates(model: str, request: Mapping[str, Any]) -> tuple[str, ...]:
    """`model:size:quality`, then `model:size`, then `model`: the first the catalog has wins."""
    base = model.rpartition("/")[2]
    size, quality = _DEFAULTS.get(base, (None, None))
    size = request.get("size") if isinstance(request.get("size"), str) else size
    quality = request.get("quality") if isinstance(request.get("quality"), str) else quality
    names = []
    if size and quality:
        names.append(f"{model}:{size}:{quality}")
    if size:
        names.append(f"{model}:{size}")
    return (*names, model)


class ImagesParser:
    def __init__(self, context: ParseContext) -> None:
        self._context = context
        self._sse = is_sse(context)
        self._splitter = SSESplitter()
        self._body = JsonBody()
        self._overflow = bytearray()
        self._usage: dict[str, Any] | None = None
        self._completed = 0

    def feed(self, data: bytes) -> bytes:
        if not self._sse:
            self._body.feed(data)
            return data
        for event in self._splitter.feed(data):
            if event.overflow:  # an event carrying a whole image: read its tail
                self._overflow += event.raw
                if len(self._overflow) > 2 * TAIL_BYTES:
                    del self._overflow[:-TAIL_BYTES]
                continue
            self._end_overflow()
            self._on(loads(event.data) if event.data else None)
        return data

    def flush(self) -> bytes:
        event = self._splitter.flush_event() if self._sse else None
        if event is not None and not event.overflow:
            self._on(loads(event.data) if event.data else None)
        self._end_overflow()
        return b""

    def _on(self, chunk: object) -> None:
        if isinstance(chunk, dict) and chunk.get("type") == "image_generation.completed":
            self._completed += 1
            if isinstance(chunk.get("usage"), dict):
                self._usage = chunk["usage"]

    def _end_overflow(self) -> None:
        if not self._overflow:
            return
        usage = tail_object(bytes(self._overflow), "usage", 1)  # only the completed event has one
        self._overflow.clear()
        if usage is not None:
            self._usage = usage

    def close(self) -> Usage:
        self.flush()
        body = None if self._sse else self._body.value()
        if body is not None:
            self._usage = body.get("usage") if isinstance(body.get("usage"), dict) else None
        elif not self._sse:
            self._usage = self._body.tail_object("usage")
        if "images" in self._context.priced_units:
            if body is not None:
                return Usage(images=len(as_objs(body.get("data"))), complete=True)
            if self._completed:
                return Usage(images=self._completed, complete=True)
            return Usage(images=requested_images(self._context.request), estimated=True)
        usage = self._usage or {}
        output = count(usage.get("output_tokens"))
        result = Usage(input_tokens=count(usage.get("input_tokens")), output_tokens=output)
        return result._replace(complete=output is not None)
