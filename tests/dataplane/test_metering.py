"""MeteredStream's ending, in process: what the meter is told when the client leaves."""

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


class Told:
    started_ms = 0
    ttfb_ms = 0

    def __init__(self) -> None:
        self.calls: list[tuple[Usage | None, Outcome]] = []

    def done(self, usage: Usage | None, outcome: Outcome) -> None:
        self.calls.append((usage, outcome))


def ending(events: list[bytes]) -> tuple[Usage | None, Outcome]:
    """The upstream sends `events`, then keeps its connection open; the client leaves
    as soon as it has read them (as an SDK does after `[DONE]`)."""
    told = Told()

    async def body() -> AsyncIterator[bytes]:
        for event in events:
            yield event
        await asyncio.Event().wait()  # the upstream's end of body has not arrived yet
        yield b""  # pragma: no cover

    async def closed() -> None:
        pass

    async def scenario() -> None:
        upstream = UpstreamResponse(200, [("content-type", "text/event-stream")], body(), closed)
        stream = MeteredStream(upstream, ChatParser(stream=True), told, Family.OPENAI)
        sent: list[bytes] = []
        left = asyncio.Event()

        async def send(message: dict[str, object]) -> None:
            sent.append(message.get("body", b""))  # type: ignore[arg-type]
            if len(sent) > len(events):
                left.set()

        async def receive() -> dict[str, object]:
            await left.wait()
            return {"type": "http.disconnect"}

        await asyncio.wait_for(stream({"type": "http"}, receive, send), 5)  # type: ignore[arg-type]

    run(scenario)
    (call,) = told.calls
    return call


def test_a_client_that_leaves_after_the_whole_answer_is_not_a_hang_up() -> None:
    usage, outcome = ending([TEXT, USAGE, b"data: [DONE]\n\n"])
    assert outcome is Outcome.OK and usage is not None and usage.output_tokens == 2


def test_a_client_that_leaves_mid_answer_is() -> None:
    usage, outcome = ending([TEXT])
    assert outcome is Outcome.CLIENT_DISCONNECTED and usage is not None and usage.complete is False
