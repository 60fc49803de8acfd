"""The settlement spool: write-ahead records, done markers, torn lines, orphans."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
