"""The data plane's metrics and log lines, in process: the JSON formatter, the queue
gauges a worker samples (real spool and dead-letter files), a killed worker's gauges
leaving the sum (real worker processes writing real metric files), and a /metrics that
asks for its token. The cross-worker sums, through `spendgate up`, are in
tests/e2e/test_observability.py."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from dataplane import logs, pricing, proxy, requestid
from dataplane.app import Worker, create_app
from dataplane.config import Settings
from dataplane.forward import HttpxUpstream
from dataplane.metrics import Backlog, Metrics
from dataplane.settlement import Refusal, Settlement
from dataplane.spool import DeadLetter, DeadLetters
from tests.dataplane.test_app import SECRET, MemoryBudget, MemoryKeys, key
from tests.dataplane.test_budget import run


def gauges(metrics: Metrics) -> dict[str, float]:
    text = metrics.exposition("")[0].decode()
    return {
        s.name: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name in ("spendgate_settle_queue_depth", "spendgate_spool_backlog", "spendgate_dead_letters")
    }


def test_a_json_line_has_the_request_id_the_extra_fields_and_the_traceback() -> None:
    record = logging.makeLogRecord(
        {"name": "dataplane.proxy", "levelno": logging.ERROR, "levelname": "ERROR", "msg": "failed %s"}
    )
    record.args = ("upstream",)
    record.status = 502  # as `extra=` sets it
    token = requestid.current.set("rid-1")
    try:
        requestid.RequestIdFilter().filter(record)
    finally:
        requestid.current.reset(token)
    try:
        raise ValueError("boom")
    except ValueError:
        record.exc_info = sys.exc_info()
    line = json.loads(logs.JsonFormatter().format(record))
    assert line["message"] == "failed upstream" and line["request_id"] == "rid-1"
    assert (line["level"], line["logger"], line["status"]) == ("ERROR", "dataplane.proxy", 502)
    assert line["ts"].endswith("Z") and "ValueError: boom" in line["exception"]
    outside = logging.makeLogRecord({"msg": "no request"})
    requestid.RequestIdFilter().filter(outside)
    assert "request_id" not in json.loads(logs.JsonFormatter().format(outside))


def test_a_bad_log_format_is_refused_by_name() -> None:
    assert logs.log_format({"SPENDGATE_LOG_FORMAT": "JSON"}) == "json"
    assert logs.log_format({}) == "text"
    with pytest.raises(ValueError, match="SPENDGATE_LOG_FORMAT must be text or json"):
        logs.log_format({"SPENDGATE_LOG_FORMAT": "yaml"})


def test_a_worker_samples_its_queues_and_the_dead_letters(tmp_path: Path) -> None:
    metrics = Metrics(directory="")
    backlog = Backlog(settle_queue=3, spool=2)
    letters = DeadLetters(tmp_path)

    async def scenario() -> None:
        sampler = asyncio.create_task(metrics.sample_forever(lambda: backlog, tmp_path, every=0.01))
        try:
            for _ in range(200):
                if gauges(metrics)["spendgate_settle_queue_depth"] == 3:
                    break
                await asyncio.sleep(0.01)
            assert gauges(metrics) == {
                "spendgate_settle_queue_depth": 3,
                "spendgate_spool_backlog": 2,
                "spendgate_dead_letters": 0,
            }
            refused = [
                DeadLetter(
                    Settlement(f"req-{i}", "key_a", "openai", "gpt-4o-mini"), Refusal.UNKNOWN_MODEL, "?", 0
                )
                for i in range(2)
            ]
            await asyncio.to_thread(letters.add, refused)
            for _ in range(200):  # the next sample
                if gauges(metrics)["spendgate_dead_letters"] == 2:
                    break
                await asyncio.sleep(0.01)
            assert gauges(metrics)["spendgate_dead_letters"] == 2
        finally:
            sampler.cancel()
            await asyncio.gather(sampler, return_exceptions=True)

    run(scenario)


WORKER = """
import sys
from dataplane.metrics import Metrics
metrics = Metrics()
metrics.settle_queue.set(5)
metrics.requests.labels("openai", "/v1/chat/completions", "2xx").inc(7)
if sys.argv[1] == "clean":
    metrics.close()
"""


def test_a_killed_workers_gauges_leave_the_sum_and_its_counters_stay(tmp_path: Path) -> None:
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PYTHONPATH": str(Path.cwd())}
    for end in ("clean", "killed"):  # one stops as a worker does, one never gets to
        subprocess.run([sys.executable, "-c", WORKER, end], env=env, check=True)
    assert len(list(tmp_path.glob("gauge_livesum_*.db"))) == 1  # the killed one's
    text = Metrics(directory=str(tmp_path)).exposition("")[0].decode()
    found = {s.name: s.value for family in text_string_to_metric_families(text) for s in family.samples}
    assert found["spendgate_requests_total"] == 14
    assert "spendgate_settle_queue_depth" not in found
    assert not list(tmp_path.glob("gauge_livesum_*.db"))


def test_metrics_ask_for_their_token_when_one_is_set() -> None:
    settings = replace(Settings.from_env({}), metrics_token="scrape-me")
    keys = MemoryKeys((SECRET, key("key_a")))

    @contextlib.asynccontextmanager
    async def connect(_: Settings) -> AsyncIterator[Worker]:
        upstream = HttpxUpstream(5.0, 30.0)
        try:
            yield Worker(proxy.Gateway(settings, keys, MemoryBudget({}), pricing.Catalog([]), upstream))
        finally:
            await upstream.aclose()

    app = create_app(settings, connect)

    async def scenario() -> None:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
                refused = await client.get("/metrics")
                wrong = await client.get("/metrics", headers={"authorization": "Bearer scrape-you"})
                scraped = await client.get("/metrics", headers={"authorization": "Bearer scrape-me"})
        assert (refused.status_code, wrong.status_code, scraped.status_code) == (401, 401, 200)
        assert "SPENDGATE_METRICS_TOKEN" in refused.json()["error"]["message"]  # OpenAI's error shape
        found = {
            (s.name, s.labels.get("reason", s.labels.get("status_class"))): s.value
            for family in text_string_to_metric_families(scraped.text)
            for s in family.samples
        }
        assert found[("spendgate_refusals_total", "unauthorized")] == 2
        assert found[("spendgate_requests_total", "4xx")] == 2

    run(scenario)
