"""Packed queues: many due jobs of one queue travel in one AMQP message, opt-in per queue."""

from __future__ import annotations

import aio_pika

from chronoq import JobContext, Producer, Worker
from chronoq.consumer.service import WorkerService
from chronoq.timer import Timer
from tests.harness import EFFECTS_TABLE, all_finished, dispatch_once, running


async def _messages_in(settings, queue: str) -> int:
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        declared = await (await connection.channel()).declare_queue(f"{settings.namespace}.q.{queue}", passive=True)
        return declared.declaration_result.message_count


async def test_a_packed_queue_carries_many_jobs_per_message_and_each_effect_commits_once(
    settings, producer: Producer, db
) -> None:
    settings = settings.model_copy(update={"packed_queues": "bulk", "pack_size": 50})
    await db.execute(EFFECTS_TABLE)
    worker = Worker()

    @worker.handler("bulk")
    @worker.handler("single")
    async def effect(ctx: JobContext, payload: dict) -> dict:
        await ctx.db.execute("INSERT INTO test_effects (job_id, occurrence_key, attempt, pid) VALUES ($1, $2, $3, 0)",
                             ctx.job_id, ctx.idempotency_key, ctx.attempt)
        return {"n": payload["n"]}

    bulk = await producer.enqueue_many([{"queue": "bulk", "payload": {"n": n}} for n in range(120)])
    single = await producer.enqueue_many([{"queue": "single", "payload": {"n": n}} for n in range(3)])
    assert await dispatch_once(settings) == 123
    assert (await _messages_in(settings, "bulk"), await _messages_in(settings, "single")) == (3, 3)  # 50 + 50 + 20
    async with running(Timer(settings)), running(WorkerService(worker, settings)):
        summary = await all_finished(producer, bulk + single)
    assert summary["succeeded"] == 123, summary
    per_job = await db.fetch("SELECT job_id, count(*) AS n FROM test_effects GROUP BY job_id")
    assert sorted(r["job_id"] for r in per_job) == sorted(bulk + single) and {r["n"] for r in per_job} == {1}
    assert (await producer.get(bulk[7])).occurrences[0].result == {"n": 7}


async def test_a_pack_whose_job_kills_its_worker_is_redelivered_and_only_that_job_ends_dead(
    settings, spawn_worker, producer: Producer
) -> None:
    settings = settings.model_copy(update={"delivery_limit": 3, "packed_queues": "crashy"})
    ids = await producer.enqueue_many([{"queue": "crashy", "payload": {"crash": n == 1}} for n in range(4)])
    assert await dispatch_once(settings) == 4
    assert await _messages_in(settings, "crashy") == 1
    summary = await spawn_worker(ids, settings)
    states = {i: (await producer.get(i)).state for i in ids}
    assert states[ids[1]] == "dead" and (await producer.get(ids[1])).occurrences[0].reason == "delivery_limit", summary
    assert [states[i] for i in (ids[0], ids[2], ids[3])] == ["succeeded"] * 3, summary


async def test_a_pack_with_a_forged_element_runs_the_valid_jobs_and_rejects_the_rest(settings, producer: Producer) -> None:
    from chronoq.consumer.delivery import Deliveries, Rejected

    deliveries = Deliveries(Worker(), "test")
    assert deliveries.parse_pack(b"not json", False) == []
    assert deliveries.parse_pack(b'{"v": 1, "pack": "nope"}', False) == []
    assert deliveries.parse_pack(b'{"v": 1, "pack": [{"job_id": "x"}, 42]}', False) == [Rejected("-"), Rejected("-")]
