"""The settlement spool: write-ahead records, done markers, torn lines, orphans."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from dataplane.spool import Spool, read_pending
from spendgate.v1 import usage_pb2


def settle(request_id: str, output: int = 1) -> usage_pb2.SettleRequest:
    return usage_pb2.SettleRequest(
        request_id=request_id,
        key_id="key_1",
        provider="openai",
        model="gpt-4o-mini",
        units=usage_pb2.Units(output_tokens=output),
    )


def test_pending_is_what_has_no_done_record(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append([settle("a"), settle("b", 7), "released-c"])
    spool.done(["a"])
    assert read_pending(spool.path) == [settle("b", 7), "released-c"]
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
        "import sys; from pathlib import Path; from dataplane.spool import Spool; from spendgate.v1 import usage_pb2;"
        "s = Spool(Path(sys.argv[1]));"
        "s.append([usage_pb2.SettleRequest(request_id='dead-1', key_id='k'), 'dead-2']); s.done(['dead-2']);"
        "import os; os._exit(0)"
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True)
    claimed = mine.claim_orphans()
    assert [getattr(i, "request_id", i) for i in claimed] == ["dead-1"]
    assert read_pending(mine.path) == claimed  # durably ours before the orphan file went
    assert len(list(tmp_path.glob("worker-*.spool"))) == 2
    other.done(["x"])
    other.close()
    mine.done(["dead-1"])
    mine.close()
    assert os.listdir(tmp_path) == []
