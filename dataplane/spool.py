"""A durable local spool for settlements (write-ahead, one file per worker).

Every Settle and Release is written to this worker's spool file before it is
sent to the control plane, and a `done` record is appended once the control
plane has taken it. So a settlement survives the control plane being down, and
the worker itself dying (what a process wrote is in the kernel's page cache
whatever becomes of the process): on start, and every so often, a worker claims
the spool files of workers that are gone (it can take their file lock) and
replays what they had not delivered. Replays are safe because Settle and
Release are idempotent by request id.

The file is fsync'd by `sync`, which the worker calls every 100 ms when there is
something new (group commit), not once per write: a crash of the whole machine
can lose the last 100 ms of settlements, as SQLite's `synchronous=NORMAL`, the
control plane's own setting, can lose its last commits. An fsync per request
cost about 1 ms of CPU, half of what the rest of a request costs.

Once 4 MiB were written to it, the file is started again with only the records that
are still pending (`_compact`): under steady load one always is, so it is never simply
emptied (before 2026-12-04 it was, and only then: it grew by ~250 bytes a request for as
long as the load lasted).

File format, one record a line:  `S <base64 SettleRequest>` (settlement.Settlement
in its protobuf form), `R <request id>`,
`D <request id>` (done)."""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import json
import logging
import os
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from google.protobuf.message import DecodeError

from dataplane.settlement import Item, Refusal, Release, Settlement, refusal_from_pb, refusal_name
from spendgate.v1 import usage_pb2

log = logging.getLogger(__name__)

COMPACT_BYTES = 4 * 1024 * 1024  # a spool file is started again once this much was written to it
COMPACTING = ".compacting"  # the suffix of the file a compaction writes before renaming it


def item_id(item: Item) -> str:
    return item.request_id


def _encode(item: Item) -> bytes:
    if isinstance(item, Release):
        return b"R " + item.request_id.encode() + b"\n"
    return b"S " + _settlement_bytes(item) + b"\n"


def _settlement_bytes(settlement: Settlement) -> bytes:
    return base64.b64encode(settlement.to_pb().SerializeToString())


def _settlement_from(data: bytes | str) -> Settlement:
    return Settlement.from_pb(usage_pb2.SettleRequest.FromString(base64.b64decode(data, validate=True)))


def read_pending(path: Path) -> list[Item]:
    """The records of a spool file that have no `done` record, in order.
    A torn last line (a crash mid-write) is skipped."""
    pending: dict[str, Item] = {}
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    for line in data.splitlines():
        kind, _, rest = line.partition(b" ")
        try:
            if kind == b"S":
                settle = _settlement_from(rest)
                pending[settle.request_id] = settle
            elif kind == b"R":
                pending.setdefault(rest.decode(), Release(rest.decode()))
            elif kind == b"D":
                pending.pop(rest.decode(), None)
        except (DecodeError, binascii.Error, UnicodeDecodeError):
            log.warning("skipping a damaged record in %s", path)
    return list(pending.values())


class Spool:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"worker-{os.getpid()}-{uuid.uuid4().hex[:8]}.spool"
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held for this worker's life
        self._pending: dict[str, bytes] = {}  # request id -> its record, until done
        self._written = 0
        self._unsynced = False

    def append(self, items: Iterable[Item], sync: bool = False) -> None:
        """Write-ahead: written before it is sent; on disk at the next `sync`, or now."""
        records = {item_id(item): _encode(item) for item in items}
        self._write(b"".join(records.values()), sync=sync)
        self._unsynced = self._unsynced or not sync
        self._pending.update(records)

    @property
    def backlog(self) -> int:
        """Records written and not yet done (the spool backlog gauge, metrics.py)."""
        return len(self._pending)

    def sync(self) -> None:
        """fsync what was written since the last time (safe to call from another thread)."""
        if self._unsynced:
            self._unsynced = False
            os.fsync(self._fd)

    def done(self, ids: Iterable[str]) -> None:
        """Delivered: a lost `done` record only means a harmless replay, so no fsync."""
        ids = list(ids)
        self._write(b"".join(b"D " + i.encode() + b"\n" for i in ids), sync=False)
        for i in ids:
            self._pending.pop(i, None)
        if self._written > COMPACT_BYTES:
            self._compact()

    def _compact(self) -> None:
        """Start the file again with only what is pending. Under steady load something
        always is, so the file cannot simply be emptied: a new one is written beside it,
        made durable and renamed over it. A crash before the rename leaves the old file,
        which holds everything; after it, the new one, which holds what is pending. The
        new file takes the old one's descriptor number (dup2), so a `sync` running in
        another thread meanwhile fsyncs one or the other, never a closed descriptor."""
        if not self._pending:
            os.ftruncate(self._fd, 0)
            self._written = 0
            return
        data = b"".join(self._pending.values())
        fresh = self.path.with_name(self.path.name + COMPACTING)
        fd = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the new file is locked before it is visible
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
            os.replace(fresh, self.path)
            os.dup2(fd, self._fd)  # closes the old file (and drops its lock) in the same step
        finally:
            os.close(fd)
        self._written = len(data)

    def _write(self, data: bytes, sync: bool) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]
        self._written += len(data)
        if sync:
            os.fsync(self._fd)

    def claim_orphans(self) -> list[Item]:
        """Take over the undelivered records of spool files whose worker is gone."""
        taken: list[Item] = []
        for path in sorted(self.directory.glob("worker-*.spool")):
            if path != self.path:
                with _opened(path) as fd:
                    if fd is not None and abandoned(path, fd):
                        taken.extend(self._take(path))
        # A worker that died compacting left its new file half written: its spool file holds it all.
        for path in self.directory.glob(f"worker-*.spool{COMPACTING}"):
            with _opened(path) as fd:
                if fd is not None and abandoned(path, fd):
                    path.unlink(missing_ok=True)
        if taken:
            log.warning("replaying %d undelivered settlement(s) from a previous worker", len(taken))
        return taken

    def _take(self, orphan: Path) -> list[Item]:
        items = read_pending(orphan)
        if items:
            self.append(items, sync=True)  # ours now, durably, before the orphan goes
        orphan.unlink(missing_ok=True)
        return items

    def close(self) -> None:
        """A clean stop with nothing pending leaves no file behind."""
        if not self._pending:
            self.path.unlink(missing_ok=True)
        else:
            self.sync()
        os.close(self._fd)


@contextlib.contextmanager
def _opened(path: Path) -> Iterator[int | None]:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        yield None
        return
    try:
        yield fd
    finally:
        os.close(fd)


def abandoned(path: Path, fd: int) -> bool:
    """Whether the file at `path`, opened as `fd`, has no live worker: its lock can be taken,
    and it is still the file at `path` (a live worker's compaction renames a new file over
    its spool, and only then lets go of the old one's lock). The lock stays with `fd`."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    try:
        now = path.stat()
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (opened.st_dev, opened.st_ino) == (now.st_dev, now.st_ino)


# Dead letters ----------------------------------------------------------------
#
# A settlement the control plane refuses for good (an unknown model, a unit
# with no price, ...) is usage that happened and must still be billed once the
# cause is fixed. It is kept in DEAD_LETTERS in the spool directory, shared by
# the directory's workers (each record one append, under an exclusive lock),
# until `spendgate settlements replay` gets it taken.

DEAD_LETTERS = "dead-letters.jsonl"


@dataclass(frozen=True)
class DeadLetter:
    settlement: Settlement
    refusal: Refusal
    error: str
    refused_ms: int

    def to_line(self) -> bytes:
        record = {
            "request_id": self.settlement.request_id,
            "key_id": self.settlement.key_id,
            "model": f"{self.settlement.provider}/{self.settlement.model}",
            "refusal": refusal_name(self.refusal),
            "error": self.error,
            "refused_ms": self.refused_ms,
            "settlement": _settlement_bytes(self.settlement).decode(),
        }
        return json.dumps(record).encode() + b"\n"

    @classmethod
    def from_line(cls, line: bytes) -> DeadLetter:
        record = json.loads(line)
        refusal = refusal_from_pb(usage_pb2.SettleRefusal.Value(str(record["refusal"])))
        return cls(
            _settlement_from(record["settlement"]), refusal, str(record["error"]), int(record["refused_ms"])
        )


class DeadLetters:
    def __init__(self, directory: Path) -> None:
        self.path = directory / DEAD_LETTERS
        self._lock = directory / (DEAD_LETTERS + ".lock")  # never replaced, unlike the file

    @contextlib.contextmanager
    def _locked(self) -> Iterator[int]:
        """The dead-letter file, opened for appending, under the directory's lock."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = os.open(self._lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                yield fd
            finally:
                os.close(fd)
        finally:
            os.close(lock)

    def add(self, letters: Iterable[DeadLetter]) -> None:
        """Durably, before the spool forgets them."""
        data = b"".join(letter.to_line() for letter in letters)
        if not data:
            return
        with self._locked() as fd:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)

    def read(self) -> list[DeadLetter]:
        if not self.path.exists():
            return []
        with self._locked():
            return self._parse(self.path.read_bytes())

    @staticmethod
    def _parse(data: bytes) -> list[DeadLetter]:
        letters: dict[str, DeadLetter] = {}
        for line in data.splitlines():
            try:
                letter = DeadLetter.from_line(line)
            except (ValueError, KeyError, TypeError, DecodeError, binascii.Error):
                log.warning("skipping a damaged dead letter")
                continue
            letters[letter.settlement.request_id] = letter  # the latest refusal of a request wins
        return list(letters.values())

    def rewrite(self, replay: Callable[[list[DeadLetter]], list[DeadLetter]]) -> tuple[int, list[DeadLetter]]:
        """Hand every dead letter to `replay`, which returns those still refused;
        only those are kept. Workers adding meanwhile wait for the lock.
        Returns (how many were replayed, those kept)."""
        with self._locked():
            letters = self._parse(self.path.read_bytes())
            if not letters:
                return 0, []
            kept = replay(letters)
            data = b"".join(letter.to_line() for letter in kept)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_bytes(data)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            return len(letters), kept
