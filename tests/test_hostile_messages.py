"""Raw AMQP messages a worker may meet — malformed, forged, for a cancelled job, for an unknown
queue — each gets a clear outcome (dead-lettered or acked as stale), no process crashes, and
nothing valid is lost."""

from __future__ import annotations

import json

import aio_pika

from chronoq import JobContext, Producer, Worker
from chronoq.consumer.service import WorkerService
from chronoq.timer import Timer
from tests.harness import all_finished, eventually, running


def envelope(**overrides) -> bytes:
    message = {"v": 1, "job_id": 1, "queue": "hostile", "occurrence_key": "1@2026-01-01T00:00:00.000000Z",
               "fire_at": "2026-01-01T00:00:00+00:00", "run_at": "2026-01-01T00:00:00+00:00", "attempt": 1,
               "max_attempts": 3, "timeout_s": 5, "payload": {}}
    message.update(overrides)
    # json, not orjson: orjson refuses integers past 64 bits, which are exactly what is tested here
    return json.dumps({k: v for k, v in message.items() if v is not ...}).encode()


MALFORMED = [  # each must be dead-lettered (rejected): it can never be processed
    b"",
    b"{",
    b'{"v": 1, "job_id": 1',  # truncated
    b"[1, 2, 3]",
    b"null",
    b"\xff\xfe not utf-8",
    envelope(job_id="one"),
    envelope(job_id=-5),
    envelope(job_id=2**63 + 1),
    envelope(attempt=0),
    envelope(attempt="first"),
    envelope(occurrence_key=""),
    envelope(occurrence_key="bad\u0000key"),
    envelope(occurrence_key="k" * 500),
    envelope(timeout_s=1e308),
    envelope(timeout_s=-1),
    envelope(fire_at="yesterday"),
    envelope(run_at=12),
    envelope(queue=None),
    envelope(queue="not-handled-here"),  # a queue this worker has no handler for
    envelope(max_attempts=0),
    envelope(job_id="5"),  # a number as a string: never read as job 5
    envelope(attempt=True),  # a bool as a number
    envelope(timeout_s="5"),
    envelope(job_id=...),  # missing field
    envelope(occurrence_key=...),
]
FORGED = [  # well-formed, but no such live occurrence: acked as stale, nothing runs
    envelope(),
    envelope(job_id=999_999, occurrence_key="999999@2026-01-01T00:00:00.000000Z"),
    envelope(attempt=7),
]


async def test_hostile_messages_are_contained_and_valid_work_still_runs(settings, producer: Producer, db) -> None:
    worker = Worker()
    ran: list[int] = []

    @worker.handler("hostile")
    async def hostile(ctx: JobContext, payload: dict) -> None:
        ran.append(ctx.job_id)

    cancelled = await producer.enqueue("hostile", {}, delay=3600)
    cancelled_key = (await producer.get(cancelled)).occurrences[0].occurrence_key
    await producer.cancel(cancelled)
    for_cancelled = envelope(job_id=cancelled, occurrence_key=cancelled_key)

    service = WorkerService(worker, settings.model_copy(update={"batch_size": 8}))
    async with running(service):
        connection = await aio_pika.connect(settings.amqp_url)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            exchange = await channel.get_exchange(f"{settings.namespace}.jobs")
            headers_variants = [{}, {"x-chronoq-job-id": "forged"}, {"x-chronoq-attempt": -1}]
            for n, body in enumerate([*MALFORMED, *FORGED, for_cancelled]):
                await exchange.publish(
                    aio_pika.Message(body, content_type="text/plain" if n % 2 else "application/json",
                                     headers=headers_variants[n % 3]),
                    routing_key="hostile",
                )
        total = len(MALFORMED) + len(FORGED) + 1

        async def all_settled() -> bool:
            return sum(service.outcomes.values()) >= total

        await eventually(all_settled, what=f"{total} hostile messages settled ({service.outcomes})")
        assert service.outcomes["rejected"] == len(MALFORMED), service.outcomes
        assert service.outcomes["stale"] == len(FORGED)
        assert service.outcomes["duplicate"] == 1  # the cancelled job's occurrence has ended

        valid = await producer.enqueue("hostile", {"ok": True})
        async with running(Timer(settings)):
            await all_finished(producer, [valid])
    assert ran == [valid]  # nothing forged ran, the valid job did
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        dlq = await channel.declare_queue(f"{settings.namespace}.dlq.hostile", passive=True)
        assert dlq.declaration_result.message_count == len(MALFORMED)  # kept for an operator to read
    assert await db.fetchval("SELECT count(*) FROM chronoq.results WHERE job_id <> ALL($1)", [cancelled, valid]) == 0
