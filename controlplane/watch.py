"""The key change feed behind WatchKeys.

One poller thread per control-plane process reads `key_changes` and fans each
change out to the streams subscribed on this process. Polling the table (not
an in-process signal) is what makes a change made through one control plane
reach data planes watching another one on the same database.

On PostgreSQL a sequence number is taken at insert but becomes visible at
commit, so a smaller seq can appear after a larger one. The poller therefore
re-reads a short recent window behind its high-water mark and skips what it
has already delivered; consumers get every change, in at most a window's
delay, and changes are full snapshots so a repeat would be harmless anyway."""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque

from controlplane.keystore import KeyChange, KeyStore
from controlplane.records import Clock

log = logging.getLogger(__name__)

POLL_SECONDS = 0.1
LOOKBACK_SEQS = 1000
LOOKBACK_MS = 10_000  # longer than any key-change transaction takes to commit
REMEMBERED = 20_000


class KeyChangeFeed:
    def __init__(self, keystore: KeyStore, clock: Clock, poll_seconds: float = POLL_SECONDS) -> None:
        self._keystore = keystore
        self._clock = clock
        self._poll = poll_seconds
        self._subscribers: set[queue.SimpleQueue[KeyChange | None]] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._high = keystore.head_seq()
        self._seen: set[int] = set()
        self._seen_order: deque[int] = deque()
        self._thread = threading.Thread(target=self._run, name="key-change-feed", daemon=True)
        for change in keystore.changes_after(max(0, self._high - LOOKBACK_SEQS), limit=LOOKBACK_SEQS):
            self._remember(change.seq)

    @property
    def position(self) -> int:
        return self._high

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        with self._lock:
            for sub in self._subscribers:
                sub.put(None)

    def recent_seqs(self, upto: int) -> set[int]:
        """Sequence numbers ≤ upto committed in the recent look-back window."""
        recent = self._keystore.changes_after(
            max(0, upto - LOOKBACK_SEQS), limit=LOOKBACK_SEQS, newer_than_ms=self._clock() - LOOKBACK_MS
        )
        return {c.seq for c in recent if c.seq <= upto}

    def subscribe(self) -> queue.SimpleQueue[KeyChange | None]:
        sub: queue.SimpleQueue[KeyChange | None] = queue.SimpleQueue()
        with self._lock:
            self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: queue.SimpleQueue[KeyChange | None]) -> None:
        with self._lock:
            self._subscribers.discard(sub)

    def _run(self) -> None:
        while not self._stop.wait(self._poll):
            try:
                self.poll_once()
            except Exception:  # the feed must outlive a database hiccup
                log.exception("key change poll failed; retrying")

    def poll_once(self) -> None:
        late = self._keystore.changes_after(
            max(0, self._high - LOOKBACK_SEQS), limit=5000, newer_than_ms=self._clock() - LOOKBACK_MS
        )
        new = self._keystore.changes_after(self._high, limit=5000)
        fresh = sorted(
            {c.seq: c for c in (*late, *new) if c.seq not in self._seen}.values(), key=lambda c: c.seq
        )
        if not fresh:
            return
        for change in fresh:
            self._remember(change.seq)
        self._high = max(self._high, *(c.seq for c in fresh))
        with self._lock:
            for sub in self._subscribers:
                for change in fresh:
                    sub.put(change)

    def _remember(self, seq: int) -> None:
        self._seen.add(seq)
        self._seen_order.append(seq)
        while len(self._seen_order) > REMEMBERED:
            self._seen.discard(self._seen_order.popleft())
