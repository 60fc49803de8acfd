"""The settlement spool: write-ahead records, done markers, torn lines, orphans."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dataplane import spool as spool_module
from dataplane.settlement import Outcome, Release, Settlement
from dataplane.spool import Spool, read_pending


def settle(request_id: str, output: int = 1) -> Settlement:
    return Settlement(request_id, "key_1", "openai", "gpt-4o-mini", {"output_tokens": output})


def test_a_settlement_survives_the_round_trip_through_its_record_whole(tmp_path: Path) -> None:
    full = Settlement(
        "r", "key_1", "anthropic", "claude-sonnet-4-6",
        {"input_tokens": 3, "cache_write_1h_tokens": 4, "web_searches": 2},
        started_ms=5, latency_ms=6, ttfb_ms=7, outcome=Outcome.UPSTREAM_ABORTED, http_status=200,
        estimated=True, service_tier="priority", grant_id="grant-1",
    )  # fmt: skip
    spool = Spool(tmp_path)
    spool.append([full])
    assert read_pending(spool.path) == [full]
    spool.done(["r"])
    spool.close()


def test_pending_is_what_has_no_done_record(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append([settle("a"), settle("b", 7), Release("released-c")])
    spool.done(["a"])
    assert read_pending(spool.path) == [settle("b", 7), Release("released-c")]
    spool.done(["b", "released-c"])
    assert read_pending(spool.path) == []
    spool.close()
    assert not spool.path.exists()  # nothing pending: nothing left behind


def test_a_torn_last_line_is_skipped(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append([settle("a")])
    with open(spool.path, "ab") as f:
        f.write(b"S AAAA%%%")  # a crash in the middle of a write
    assert read_pending(spool.path) == [settle("a")]
    spool.done(["a"])
    spool.close()


def test_a_live_workers_spool_is_not_claimed_but_a_dead_ones_is(tmp_path: Path) -> None:
    mine = Spool(tmp_path)
    other = Spool(tmp_path)  # alive: holds its lock
    other.append([settle("x")])
    assert mine.claim_orphans() == []
    # A worker that died with undelivered settlements: its process is gone, its lock with it.
    script = (
        "import sys; from pathlib import Path; from dataplane.spool import Spool;"
        "from dataplane.settlement import Release, Settlement;"
        "s = Spool(Path(sys.argv[1]));"
        "s.append([Settlement('dead-1', 'k', 'openai', 'm'), Release('dead-2')]); s.done(['dead-2']);"
        "import os; os._exit(0)"
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True)
    claimed = mine.claim_orphans()
    assert [i.request_id for i in claimed] == ["dead-1"]
    assert read_pending(mine.path) == claimed  # durably ours before the orphan file went
    assert len(list(tmp_path.glob("worker-*.spool"))) == 2
    other.done(["x"])
    other.close()
    mine.done(["dead-1"])
    mine.close()
    assert os.listdir(tmp_path) == []


def test_a_spool_that_always_has_something_pending_is_still_started_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under steady load a settlement is always in flight: the file is compacted to what is
    pending, not left to grow until a quiet moment that may never come."""
    monkeypatch.setattr(spool_module, "COMPACT_BYTES", 4096)
    spool = Spool(tmp_path)
    spool.append([settle("r-0")])
    sizes = []
    for i in range(1, 300):
        spool.append([settle(f"r-{i}"), Release(f"released-{i}")])
        spool.done([f"r-{i - 1}", f"released-{i}"])
        sizes.append(spool.path.stat().st_size)
    assert max(sizes) < 4096 + 1024
    assert read_pending(spool.path) == [settle("r-299")]
    assert list(tmp_path.iterdir()) == [spool.path]  # the compaction's own file is gone
    spool.sync()  # on the new file's descriptor
    spool.append([settle("after")])
    assert read_pending(spool.path) == [settle("r-299"), settle("after")]
    spool.done(["r-299", "after"])
    spool.close()
    assert not spool.path.exists()


def test_the_file_a_live_workers_compaction_replaced_is_not_taken_for_an_orphan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    live = Spool(tmp_path)
    live.append([settle("x"), settle("y")])
    before = os.open(live.path, os.O_RDONLY)  # a scan that opened the file just before...
    try:
        monkeypatch.setattr(spool_module, "COMPACT_BYTES", 0)
        live.done(["x"])  # ...the live worker compacted it
        assert not spool_module.abandoned(live.path, before)  # its lock is free, but it is not the file
        fresh = os.open(live.path, os.O_RDONLY)
        try:
            assert not spool_module.abandoned(live.path, fresh)  # and the new one is locked
        finally:
            os.close(fresh)
    finally:
        os.close(before)
    assert Spool(tmp_path).claim_orphans() == []
    assert read_pending(live.path) == [settle("y")]


def test_what_a_worker_that_died_compacting_left_is_removed_and_its_spool_replayed(tmp_path: Path) -> None:
    script = (
        "import sys, os; from pathlib import Path; from dataplane import spool as m;"
        "from dataplane.settlement import Settlement;"
        "s = m.Spool(Path(sys.argv[1])); s.append([Settlement('dead-1', 'k', 'openai', 'm')]);"
        "open(str(s.path) + m.COMPACTING, 'wb').write(b'S half');"  # died before the rename
        "os._exit(0)"
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True)
    mine = Spool(tmp_path)
    assert [i.request_id for i in mine.claim_orphans()] == ["dead-1"]
    assert list(tmp_path.iterdir()) == [mine.path]
    mine.done(["dead-1"])
    mine.close()
