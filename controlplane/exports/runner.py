"""The export loop: per sink, read the events past its cursor (up to a safe
high-water mark), deliver them, and only then move the cursor. One thread per
sink, so a sink that is down delays no other."""

from __future__ import annotations

import collections
import enum
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from controlplane.exports.cursors import Cursors
from controlplane.exports.sink import DeliveryFailed, Sink
from controlplane.records import Clock, system_clock

log = logging.getLogger(__name__)

Monotonic = Callable[[], float]


class Watermark:
    """The highest seq it is safe to export: the largest committed seq seen at least
    `lag` seconds ago (see the package's docstring). With no lag, the largest now."""

    def __init__(self, lag_seconds: float, monotonic: Monotonic = time.monotonic) -> None:
        self.lag = lag_seconds
        self._monotonic = monotonic
        self._seen: collections.deque[tuple[float, int]] = collections.deque()
        self._safe = 0

    def observe(self, max_seq: int) -> int:
        now = self._monotonic()
        if self.lag <= 0:
            self._safe = max(self._safe, max_seq)
            return self._safe
        self._seen.append((now, max_seq))
        while self._seen and self._seen[0][0] <= now - self.lag:
            self._safe = max(self._safe, self._seen.popleft()[1])
        return self._safe


@dataclass(frozen=True)
class Policy:
    batch_size: int = 100
    poll_seconds: float = 2.0
    backoff_seconds: float = 1.0  # the first retry's wait; doubles per failure
    max_backoff_seconds: float = 300.0
    lease_seconds: float = 30.0
    lag_seconds: float = 0.0
    start_at_end: bool = False  # a new cursor starts after the events already there

    def backoff(self, failures: int) -> float:
        return float(min(self.max_backoff_seconds, self.backoff_seconds * 2 ** max(0, failures - 1)))


class Step(enum.Enum):
    DELIVERED = "delivered"  # a batch went out; there may be more
    IDLE = "idle"  # nothing to send below the watermark
    FAILED = "failed"  # the sink did not take it: back off
    NOT_OURS = "not_ours"  # another replica holds the sink's lease


class SinkExporter:
    def __init__(
        self,
        name: str,
        sink: Sink,
        cursors: Cursors,
        policy: Policy,
        clock: Clock = system_clock,
        monotonic: Monotonic = time.monotonic,
        owner: str = "",
    ) -> None:
        self.name = name
        self.sink = sink
        self.cursors = cursors
        self.policy = policy
        self._clock = clock
        self.watermark = Watermark(policy.lag_seconds, monotonic)
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.failures = 0
        self.last_error = ""
        cursors.ensure(name, sink.kind, policy.start_at_end, clock())

    def step(self) -> Step:
        """One round: claim the lease, send one batch, move the cursor past what was taken."""
        lease_ms = int(self.policy.lease_seconds * 1000)
        position = self.cursors.claim(self.name, self.owner, self._clock(), lease_ms)
        if position is None:
            return Step.NOT_OURS
        upto = self.watermark.observe(self.cursors.max_seq())
        batch = self.cursors.events(position, upto, self.policy.batch_size)
        if not batch:
            return Step.IDLE
        try:
            self.sink.deliver(batch)
            taken, error = len(batch), ""
        except DeliveryFailed as exc:
            taken, error = exc.delivered, str(exc)
        except Exception as exc:  # a client's own bug or a new error type: retried like the rest
            log.exception("export %s: unexpected error from the %s client", self.name, self.sink.kind)
            taken, error = 0, f"{exc.__class__.__name__}: {exc}"
        if taken and not self.cursors.advance(
            self.name, self.owner, position, batch[taken - 1].seq, taken, self._clock()
        ):
            log.warning("export %s: the cursor moved under us (lease lost); not advancing", self.name)
            return Step.NOT_OURS
        if error:
            self.failures = self.cursors.failed(self.name, self.owner, error, self._clock())
            self.last_error = error
            log.warning("export %s: %s (attempt %d failed)", self.name, error, self.failures)
            return Step.FAILED
        self.failures, self.last_error = 0, ""
        return Step.DELIVERED

    def run_until_caught_up(self, max_rounds: int = 1_000_000) -> Step:
        """Deliver until nothing is left below the watermark, or the first failure (`export run --once`)."""
        for _ in range(max_rounds):
            step = self.step()
            if step is not Step.DELIVERED:
                return step
        return Step.DELIVERED

    def run(self, stopping: threading.Event) -> None:
        while not stopping.is_set():
            try:
                step = self.step()
            except Exception:  # the database itself: keep going once it is back
                log.exception("export %s: round failed; retrying", self.name)
                step = Step.FAILED
                self.failures += 1
            if step is Step.DELIVERED:
                continue
            wait = self.policy.backoff(self.failures) if step is Step.FAILED else self.policy.poll_seconds
            stopping.wait(wait)
        try:
            self.cursors.release(self.name, self.owner)
        except Exception:  # shutting down: the lease runs out by itself
            log.exception("export %s: could not release the lease", self.name)


class ExportRunner:
    """The control plane's background exporters, one thread each."""

    def __init__(self, exporters: Sequence[SinkExporter]) -> None:
        self.exporters = list(exporters)
        self._stopping = threading.Event()
        self._threads = [
            threading.Thread(target=e.run, args=(self._stopping,), name=f"export-{e.name}", daemon=True)
            for e in self.exporters
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()
        if self.exporters:
            log.info("exporting usage events to %s", ", ".join(e.name for e in self.exporters))

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout)
