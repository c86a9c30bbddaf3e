"""Prometheus metrics: scraped from real timer and worker processes during a run."""

from __future__ import annotations

import socket
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from chronoq import Producer
from tests.conftest import child_env
from tests.harness import EFFECTS_TABLE, Process, all_finished


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()) if k != "le")
            if "le" not in sample.labels:
                samples[f"{sample.name}{{{labels}}}"] = sample.value
    return samples


async def test_timer_and_worker_expose_metrics(settings, producer: Producer, db, tmp_path) -> None:
    await db.execute(EFFECTS_TABLE)
    timer_port, worker_port = free_port(), free_port()
    worker = Process(["worker", "tests.handlers:worker", "--queue", "effects"],
                     child_env(settings, CHRONOQ_METRICS_PORT=str(worker_port)), tmp_path / "worker.log")
    timer = Process(["timer"], child_env(settings, CHRONOQ_METRICS_PORT=str(timer_port)), tmp_path / "timer.log")
    try:
        await worker.wait_for_log("worker_started")
        await timer.wait_for_log("timer_started")
        ids = await producer.enqueue_many([{"queue": "effects", "payload": {"i": i}} for i in range(50)])
        await all_finished(producer, ids)
        timer_metrics, worker_metrics = scrape(timer_port), scrape(worker_port)
    finally:
        for p in (timer, worker):
            p.terminate()
            p.close()
    assert timer_metrics["chronoq_jobs_dispatched_total{queue=effects}"] == 50
    assert timer_metrics["chronoq_claim_batch_size_count{}"] >= 1
    assert timer_metrics["chronoq_dispatch_lateness_seconds_count{queue=effects}"] == 50
    assert timer_metrics["chronoq_confirm_latency_seconds_count{}"] >= 1
    assert "chronoq_due_backlog{}" in timer_metrics
    assert worker_metrics["chronoq_jobs_total{outcome=succeeded,queue=effects}"] == 50
    assert worker_metrics["chronoq_start_lateness_seconds_count{queue=effects}"] == 50
    assert worker_metrics["chronoq_handler_duration_seconds_count{queue=effects}"] == 50


async def test_the_producer_counts_what_it_enqueued(producer: Producer) -> None:
    from prometheus_client import REGISTRY

    def enqueued() -> float:
        return REGISTRY.get_sample_value("chronoq_jobs_enqueued_total", {"queue": "counted"}) or 0.0

    before = enqueued()
    await producer.enqueue("counted", {}, key="once-only", delay=60)
    await producer.enqueue("counted", {}, key="once-only", delay=60)  # the same job: not counted again
    await producer.enqueue_many([{"queue": "counted", "payload": {}, "delay": 60}] * 3)
    assert enqueued() - before == 4
