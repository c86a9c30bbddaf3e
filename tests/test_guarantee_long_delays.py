"""G10: long delays cost no broker or worker memory. A job due next year, or retried a year
from now, is one wheel row: never published, so never a message in a queue or in a worker."""

from __future__ import annotations

from datetime import timedelta

import aio_pika

from chronoq import JobContext, Producer, Retry, Worker
from chronoq.consumer.service import WorkerService
from chronoq.timer import Timer
from tests.harness import all_finished, eventually, running

A_YEAR = timedelta(days=365)


async def test_a_job_due_next_year_and_a_retry_a_year_out_stay_rows_and_never_messages(
    settings, producer: Producer, db
) -> None:
    worker = Worker()
    runs: list[tuple[str, int]] = []

    @worker.handler("later")
    async def later(ctx: JobContext, payload: dict) -> None:
        runs.append((payload["name"], ctx.attempt))
        if payload["name"] == "retried":
            raise Retry("next year", delay=A_YEAR)

    next_year = await producer.enqueue("later", {"name": "next-year"}, delay=A_YEAR)
    retried = await producer.enqueue("later", {"name": "retried"}, max_attempts=3)
    now_job = await producer.enqueue("later", {"name": "now"})
    timer = Timer(settings)
    await timer.start()
    try:
        async with running(WorkerService(worker, settings)):
            assert await timer.run_once() == 2  # the two jobs due now; not next year's
            await all_finished(producer, [now_job])

            async def retried_later() -> bool:
                return await db.fetchval("SELECT attempt FROM chronoq.wheel WHERE job_id = $1", retried) == 2

            await eventually(retried_later, what="the retry to go back into the wheel")
            assert await timer.run_once() == 0  # nothing is due: neither row is published
        assert sorted(runs) == [("now", 1), ("retried", 1)]
    finally:
        await timer.close()
    rows = await db.fetch("SELECT job_id, due_at - now() AS due_in, dispatches FROM chronoq.wheel ORDER BY job_id")
    assert [r["job_id"] for r in rows] == [next_year, retried]
    assert all(r["dispatches"] == 0 and r["due_in"] > A_YEAR - timedelta(minutes=5) for r in rows), rows
    # The worker stopped: anything it had received and not settled would be back in the queue.
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(f"{settings.namespace}.q.later", passive=True)
        assert queue.declaration_result.message_count == 0
