"""Stopping while the broker is unreachable: SIGTERM still ends a timer and a worker.

aio-pika's robust channels wait for the connection to come back before they send anything, so
a consumer cancel or a channel close made while stopping could wait for ever. Orphan workers
once outlived pkill by a quarter of an hour like that.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from chaos.proxy import Proxy
from chronoq import Producer
from tests.conftest import child_env
from tests.harness import Process

WORKER_TARGET = "tests.handlers:worker"
#: What a stop may take with no broker: the shutdown grace (10 s in tests) is for running jobs,
#: and no job runs here, so the bound is the per-call broker timeout plus process start-up.
EXIT_WITHIN_S = 20


@pytest.fixture
def broker_proxy(settings) -> Iterator[tuple[Proxy, str]]:
    parts = urlsplit(settings.amqp_url)
    proxy = Proxy(parts.hostname or "127.0.0.1", parts.port or 5672)
    port = proxy.start()
    netloc = f"{parts.username}:{parts.password}@127.0.0.1:{port}" if parts.username else f"127.0.0.1:{port}"
    yield proxy, urlunsplit(parts._replace(netloc=netloc))
    proxy.close()


async def test_sigterm_ends_a_worker_and_a_timer_whose_broker_is_gone(
    settings, broker_proxy, producer: Producer, tmp_path: Path
) -> None:
    proxy, amqp_url = broker_proxy
    env = child_env(settings, CHRONOQ_AMQP_URL=amqp_url)
    worker = Process(["worker", WORKER_TARGET, "--queue", "effects"], env, tmp_path / "worker.log")
    timer = Process(["timer"], env, tmp_path / "timer.log")
    try:
        await worker.wait_for_log("worker_started")
        await timer.wait_for_log("timer_started")
        proxy.close()  # cuts every connection and stops listening: reconnecting is refused
        await worker.wait_for_log("broker_connection_lost")
        await timer.wait_for_log("broker_connection_lost")
        # A due job: the timer must not claim it with nowhere to publish it.
        job_id = await producer.enqueue("effects", {})
        await timer.wait_for_log("timer_waiting_for_broker")
        assert worker.terminate(timeout=EXIT_WITHIN_S) == 0, worker.output()
        assert timer.terminate(timeout=EXIT_WITHIN_S) == 0, timer.output()
        (occurrence,) = (await producer.get(job_id)).occurrences
        assert occurrence.dispatches == 0, occurrence  # never claimed, still due
    finally:
        worker.close()
        timer.close()
