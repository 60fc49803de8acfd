"""MeteredStream's ending, in process: what the meter is told when the client leaves,
and what is still read from the upstream after it has."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from dataplane.forward import UpstreamResponse
from dataplane.metering import MeteredStream
from dataplane.providers.families import Family
from dataplane.providers.openai import ChatParser
from dataplane.providers.usage import Usage
from dataplane.settlement import Outcome
from tests.dataplane.test_budget import run

USAGE = b'data: {"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}\n\n'
TEXT = b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'
DONE = b"data: [DONE]\n\n"
JSON_BODY = (
    b'{"id":"c","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant",'
    b'"content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":2}}'
)


class Told:
    started_ms = 0
    ttfb_ms = 0

    def __init__(self) -> None:
        self.calls: list[tuple[Usage | None, Outcome]] = []

    def done(self, usage: Usage | None, outcome: Outcome) -> None:
        self.calls.append((usage, outcome))

    async def cost_headers(self) -> list[tuple[bytes, bytes]]:
        return []


def ending(
    before: list[bytes],
    after: list[bytes] = [],  # noqa: B006 (never mutated)
    *,
    ends: bool = False,
    sse: bool = True,
    drain_seconds: float = 0.2,
) -> tuple[Usage | None, Outcome, list[bytes], bool]:
    """The upstream sends `before`; the client reads them and leaves; the upstream then
    sends `after` and ends its body (`ends`) or keeps its connection open. Returns what
    the meter was told, what the client was sent, and whether the upstream was closed."""
    told = Told()
    sent: list[bytes] = []
    closed: list[bool] = []
    left = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        for event in before:
            yield event
        await left.wait()
        await asyncio.sleep(0.01)
        for event in after:
            yield event
        if not ends:
            await asyncio.Event().wait()  # the upstream's end of body has not arrived (yet)

    async def close() -> None:
        closed.append(True)

    async def scenario() -> None:
        kind = "text/event-stream" if sse else "application/json"
        upstream = UpstreamResponse(200, [("content-type", kind)], body(), close)
        stream = MeteredStream(upstream, ChatParser(stream=sse), told, Family.OPENAI, drain_seconds)

        async def send(message: dict[str, object]) -> None:
            if message["type"] == "http.response.body":
                sent.append(message["body"])  # type: ignore[arg-type]
                if len(sent) >= len(before):
                    left.set()

        async def receive() -> dict[str, object]:
            await left.wait()
            return {"type": "http.disconnect"}

        if not before:
            left.set()  # the client is gone before the reply
        await asyncio.wait_for(stream({"type": "http"}, receive, send), 5)  # type: ignore[arg-type]

    run(scenario)
    ((usage, outcome),) = told.calls
    return usage, outcome, sent, closed == [True]


def test_a_client_that_leaves_after_the_whole_answer_is_not_a_hang_up() -> None:
    usage, outcome, _, closed = ending([TEXT, USAGE, DONE])
    assert outcome is Outcome.OK and usage is not None and usage.output_tokens == 2 and closed


def test_a_stream_its_client_left_is_drained_for_the_providers_counts() -> None:
    usage, outcome, sent, closed = ending([TEXT], [TEXT, TEXT, USAGE, DONE], ends=True)
    assert outcome is Outcome.CLIENT_DISCONNECTED and closed
    assert usage is not None and usage.complete and (usage.input_tokens, usage.output_tokens) == (5, 2)
    assert sent == [TEXT]  # nothing is sent to a client that has gone


def test_a_drain_that_outlasts_its_bound_is_cut_and_billed_from_what_came() -> None:
    usage, outcome, sent, closed = ending([TEXT], [TEXT, TEXT], drain_seconds=0.2)
    assert outcome is Outcome.CLIENT_DISCONNECTED and closed and sent == [TEXT]
    assert usage is not None and not usage.complete and usage.output_tokens is None
    assert usage.delivered_text_bytes == 6  # "hi" three times: the drained text counts too


def test_a_json_answer_is_read_to_its_end_though_the_client_left_before_it() -> None:
    usage, outcome, _, closed = ending([], [JSON_BODY], ends=True, sse=False, drain_seconds=0)
    assert usage is not None and usage.complete and (usage.input_tokens, usage.output_tokens) == (5, 2)
    assert outcome is Outcome.OK and closed


def test_a_cancellation_that_is_not_the_drains_end_goes_on_and_the_stream_is_still_metered() -> None:
    """The worker stopping (its task cancelled) while a left client's stream drains: the
    cancellation is not taken for the drain's end, the meter is told, the upstream closed."""
    told, closed = Told(), []

    async def body() -> AsyncIterator[bytes]:
        yield TEXT
        await asyncio.Event().wait()  # the provider goes on generating

    async def close() -> None:
        closed.append(True)

    async def scenario() -> None:
        upstream = UpstreamResponse(200, [("content-type", "text/event-stream")], body(), close)
        stream = MeteredStream(upstream, ChatParser(stream=True), told, Family.OPENAI, 30.0)

        async def send(message: dict[str, object]) -> None:
            pass

        async def receive() -> dict[str, object]:
            return {"type": "http.disconnect"}  # gone at once: the drain has 30 s to run

        task = asyncio.create_task(stream({"type": "http"}, receive, send))  # type: ignore[arg-type]
        await asyncio.sleep(0.05)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        else:
            raise AssertionError("the cancellation was swallowed")
        assert stream._drain is not None and stream._drain.cancelled()  # its timer does not outlive it

    run(scenario)
    ((usage, outcome),) = told.calls
    assert outcome is Outcome.CLIENT_DISCONNECTED and closed == [True]
    assert usage is not None and usage.delivered_text_bytes == 2
