"""The RabbitMQ management UI as a view: queued and dead-lettered messages read back through its
HTTP API show what they are, for when, and why they died."""

from __future__ import annotations

import base64
import json
import urllib.parse
import urllib.request
from datetime import timedelta
from urllib.parse import urlsplit

import orjson

from chronoq import JobContext, Producer, RetryPolicy, Worker
from chronoq.consumer.service import WorkerService
from chronoq.timer import Timer
from tests.harness import all_finished, dispatch_once, running


def peek(services, queue_name: str) -> dict:
    """GET /api/queues/%2F/<queue>/get, requeueing the message (the UI's "Get messages")."""
    parts = urlsplit(services.management_url)
    body = json.dumps({"count": 1, "ackmode": "ack_requeue_true", "encoding": "auto"}).encode()
    request = urllib.request.Request(
        f"{parts.scheme}://{parts.hostname}:{parts.port}/api/queues/%2F/{urllib.parse.quote(queue_name, safe='')}/get",
        data=body, method="POST", headers={"content-type": "application/json"},
    )
    token = base64.b64encode(f"{parts.username}:{parts.password}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        (message,) = json.loads(response.read())
    return message


async def test_a_queued_and_a_dead_lettered_message_read_well_in_the_management_api(
    settings, services, producer: Producer
) -> None:
    queued = await producer.enqueue("reports.monthly", {"month": "2026-11"})
    assert await dispatch_once(settings) == 1
    message = peek(services, f"{settings.namespace}.q.reports.monthly")
    props = message["properties"]
    assert props["content_type"] == "application/json" and props["app_id"] == "chronoq"
    assert props["delivery_mode"] == 2 and props["timestamp"] > 0
    key = (await producer.get(queued)).occurrences[0].occurrence_key
    assert props["message_id"] == f"{key}#1"
    headers = props["headers"]
    assert headers["x-chronoq-job-id"] == queued and headers["x-chronoq-queue"] == "reports.monthly"
    assert headers["x-chronoq-attempt"] == 1 and headers["x-chronoq-idempotency-key"] == key
    assert headers["x-chronoq-occurrence"].startswith(key.split("@")[1][:19])
    assert orjson.loads(message["payload"])["payload"] == {"month": "2026-11"}

    worker = Worker()

    @worker.handler("reports.failing")
    async def failing(ctx: JobContext, payload: dict) -> None:
        raise ConnectionError("upstream refused")

    dead = await producer.enqueue("reports.failing", {}, retry=RetryPolicy(max_attempts=2, backoff_base=timedelta(0)))
    async with running(Timer(settings)), running(WorkerService(worker, settings)):
        await all_finished(producer, [dead])
    message = peek(services, f"{settings.namespace}.dlq.reports.failing")
    headers = message["properties"]["headers"]
    assert headers["x-chronoq-reason"] == "max_attempts"
    assert headers["x-chronoq-error"] == "ConnectionError: upstream refused"
    assert headers["x-chronoq-attempt"] == 2 and headers["x-chronoq-job-id"] == dead
