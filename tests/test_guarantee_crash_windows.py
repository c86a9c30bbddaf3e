"""G6 in its riskiest window: a worker killed after its commit and before its ack, while a
second copy of the same message waits in another worker on the occurrence's row lock."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import aio_pika
import pytest

from chronoq import Producer
from tests.harness import EFFECTS_TABLE, Process, dispatch_once, eventually
from tests.test_metrics import free_port, scrape

TARGET = "tests.guarantee_handlers:worker"


@pytest.fixture
def spawn(spawn: Callable[..., Process]) -> Callable[..., Process]:
    """A worker process running this file's handlers."""
    return lambda name, **env: spawn("worker", TARGET, "--queue", "held", name=name, **env)


async def _exists(path: Path) -> bool:
    return await asyncio.to_thread(lambda: any(path.parent.glob(path.name)))


@pytest.mark.timeout(180)
async def test_a_worker_killed_between_its_commit_and_its_ack_with_a_copy_waiting_on_the_lock_has_one_effect(
    spawn, settings, producer: Producer, db, tmp_path: Path
) -> None:
    await db.execute(EFFECTS_TABLE)
    folder = tmp_path / "held"
    folder.mkdir()
    job_id = await producer.enqueue("held", {"dir": str(folder)})
    assert await dispatch_once(settings) == 1
    queue_name = f"{settings.namespace}.q.held"
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(queue_name, passive=True)
        # Take the timer's message and put back two identical copies of it, as a timer that
        # publishes an occurrence again would: the first for worker A, the second for worker B.
        original = await queue.get(timeout=10)
        copy = aio_pika.Message(original.body, headers=original.headers, message_id=original.message_id,
                                content_type=original.content_type, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
        await channel.default_exchange.publish(copy, routing_key=queue_name)
        await original.ack()

        a = spawn("worker-a", CHRONOQ_FAILPOINTS="consumer.after_commit=kill")
        await eventually(lambda: _exists(folder / "holding-*"), what="worker A to hold the occurrence's row lock")
        await channel.default_exchange.publish(copy, routing_key=queue_name)
        port = free_port()
        b = spawn("worker-b", CHRONOQ_METRICS_PORT=str(port))

        async def b_waits_on_the_lock() -> bool:
            return await db.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            ) == 1

        await eventually(b_waits_on_the_lock, what="worker B's copy to wait on the row lock")
        (folder / "release").touch()
        # A commits its effect and its outcome, then dies at the failpoint: its copy is never acked.
        assert await a.exited() == -9
        assert await db.fetchval("SELECT state FROM chronoq.results WHERE job_id = $1", job_id) == "succeeded"

        settled: dict[str, float] = {}

        async def both_copies_settled() -> bool:
            # B's own copy and the one A never acked, which the broker gave back to B.
            try:
                figures = await asyncio.to_thread(scrape, port)
            except OSError:
                return False  # B's metrics endpoint not up yet
            settled.clear()
            settled.update({k: v for k, v in figures.items() if k.startswith("chronoq_jobs_total{") and "queue=held" in k})
            return sum(settled.values()) == 2

        await eventually(both_copies_settled, what="B to settle both copies")
        effects = await db.fetch("SELECT pid FROM test_effects")
        assert [r["pid"] for r in effects] == [a.popen.pid]
        assert settled == {"chronoq_jobs_total{outcome=duplicate,queue=held}": 2}
        assert b.terminate() == 0
        # Stopped, B holds nothing: a copy it had not acked would be ready in the queue again.
        assert (await channel.declare_queue(queue_name, passive=True)).declaration_result.message_count == 0
    assert await db.fetchval("SELECT count(*) FROM chronoq.wheel WHERE job_id = $1", job_id) == 0
