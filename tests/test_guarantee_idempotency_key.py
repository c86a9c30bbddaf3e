"""G3: ``ctx.idempotency_key`` is the same for every attempt, redelivery and redispatch of one
occurrence, and different for every occurrence, including each tick of a cron job."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import aio_pika
import pytest

from chronoq import JobContext, Producer, Worker
from chronoq.consumer.service import WorkerService
from chronoq.timer import Timer
from tests.harness import Process, all_finished, eventually, running

TARGET = "tests.guarantee_handlers:worker"


@pytest.fixture
def spawn(spawn: Callable[..., Process]) -> Callable[..., Process]:
    """A worker process running this file's handlers."""
    return lambda name, **env: spawn("worker", TARGET, "--queue", "scripted", name=name, **env)


def runs_seen(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


async def runs(log: Path, n: int) -> None:
    async def enough() -> bool:
        return len(await asyncio.to_thread(runs_seen, log)) >= n

    await eventually(enough, timeout=60, what=f"run {n} of the scripted handler")


@pytest.mark.timeout(240)
async def test_the_key_is_the_same_across_a_retry_a_redispatch_and_a_redelivery(
    spawn, settings, producer: Producer, db, tmp_path: Path
) -> None:
    log = tmp_path / "runs.jsonl"
    # Run 1 retries (attempt 2 follows); run 2 hangs in worker A, which is killed and its message
    # lost, so a timer publishes attempt 2 again; run 3 takes that copy in worker B and hangs,
    # B is killed and the broker redelivers the copy to worker C, where run 4 succeeds.
    job_id = await producer.enqueue("scripted", {"log": str(log), "script": ["retry", "hang", "hang", "succeed"]},
                                    timeout=timedelta(seconds=60), max_attempts=5)
    connection = await aio_pika.connect(settings.amqp_url)
    async with running(Timer(settings)), connection:
        a = spawn("worker-a")
        await runs(log, 2)
        assert a.kill() == -9
        channel = await connection.channel()

        async def ready_in_queue() -> bool:
            queue = await channel.declare_queue(f"{settings.namespace}.q.scripted", passive=True)
            return (queue.declaration_result.message_count or 0) >= 1

        await eventually(ready_in_queue, what="the copy A held to go back to the queue")
        await (await channel.declare_queue(f"{settings.namespace}.q.scripted", passive=True)).purge()  # lost
        # Its lease runs out (as after redispatch_after plus the timeout): a timer publishes it again.
        await db.execute("UPDATE chronoq.wheel SET due_at = now() WHERE job_id = $1", job_id)
        await eventually(ready_in_queue, what="the timer to publish attempt 2 again")
        assert await db.fetchval("SELECT dispatches FROM chronoq.wheel WHERE job_id = $1 AND attempt = 2", job_id) == 2
        b = spawn("worker-b")
        await runs(log, 3)
        assert b.kill() == -9
        c = spawn("worker-c")
        summary = await all_finished(producer, [job_id])
        assert c.terminate() == 0
    assert summary["succeeded"] == 1
    seen = runs_seen(log)
    assert [r["attempt"] for r in seen] == [1, 2, 2, 2]
    assert [r["pid"] for r in seen[1:]] == [a.popen.pid, b.popen.pid, c.popen.pid]
    assert seen[3]["redelivered"] is True  # C ran the copy the broker gave back
    result_key = await db.fetchval("SELECT occurrence_key FROM chronoq.results WHERE job_id = $1", job_id)
    assert {r["key"] for r in seen} == {result_key}, seen


async def test_every_occurrence_and_every_cron_tick_has_its_own_key(settings, producer: Producer) -> None:
    worker = Worker()
    keys: list[tuple[int, str]] = []

    @worker.handler("keys")
    async def record(ctx: JobContext, payload: dict) -> None:
        keys.append((ctx.job_id, ctx.idempotency_key))

    once = [await producer.enqueue("keys", {"n": n}) for n in range(3)]
    cron = await producer.schedule("keys", {}, cron="* * * * * *", misfire_grace=2)
    async with running(Timer(settings)), running(WorkerService(worker, settings)):
        await all_finished(producer, once)

        async def three_ticks() -> bool:
            return sum(1 for j, _ in keys if j == cron) >= 3

        await eventually(three_ticks, what="three ticks of the cron job")
    assert len({k for _, k in keys}) == len(keys), keys
    assert len({j for j, _ in keys if j in once}) == 3
