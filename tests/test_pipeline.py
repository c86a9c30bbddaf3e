"""One-shot jobs end to end through the real Postgres and RabbitMQ, services in-process."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from datetime import datetime, timedelta
from typing import Any

import aio_pika
import orjson
import pytest
from asyncpg import connect as asyncpg_connect
from pydantic import BaseModel

from chronoq import Cancel, JobContext, Producer, Retry, RetryPolicy, Worker
from chronoq.consumer.service import WorkerService
from chronoq.timer import Timer
from tests.harness import all_finished, dispatch_once, eventually, running


class Email(BaseModel):
    to: str


QUICK = RetryPolicy(max_attempts=3, backoff_base=timedelta(milliseconds=100), backoff_cap=timedelta(milliseconds=300))


async def take_dead_letter(settings, queue: str) -> aio_pika.abc.AbstractIncomingMessage:
    """Read (and ack) the first message in a job queue's dead-letter queue."""
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        dlq = await channel.declare_queue(f"{settings.namespace}.dlq.{queue}", passive=True)
        message = await dlq.get(timeout=5)
        await message.ack()
    return message


async def test_job_runs_at_its_time_and_its_result_is_stored(settings, producer: Producer, db) -> None:
    worker = Worker()
    ran = asyncio.Event()
    seen: dict = {}

    @worker.handler("emails.send")
    async def send(ctx: JobContext, payload: dict) -> dict:
        seen.update(ctx=ctx, payload=payload, db_now=await ctx.db.fetchval("SELECT clock_timestamp()"))
        ran.set()
        return {"sent_to": payload["to"]}

    job_id = await producer.enqueue("emails.send", {"to": "a@b.c"}, delay=timedelta(seconds=1))
    row = await db.fetchrow("SELECT run_at FROM chronoq.wheel WHERE job_id = $1", job_id)
    async with running(Timer(settings)), running(WorkerService(worker, settings)):
        await asyncio.wait_for(ran.wait(), 15)
        summary = await all_finished(producer, [job_id])

    ctx: JobContext = seen["ctx"]
    assert seen["payload"] == {"to": "a@b.c"}
    assert (ctx.job_id, ctx.queue, ctx.attempt) == (job_id, "emails.send", 1)
    assert ctx.idempotency_key.startswith(f"{job_id}@")
    assert ctx.fire_at == row["run_at"]
    # Never early by the database's clock; late by milliseconds, not a poll interval.
    assert seen["db_now"] >= row["run_at"]
    assert summary["succeeded"] == 1
    assert 0 <= summary["lateness_p50"] < 0.5, summary
    job = await producer.get(job_id)
    assert job.state == "succeeded"
    assert job.occurrences[0].result == {"sent_to": "a@b.c"}


async def test_failing_handler_retries_with_backoff_then_dies_into_the_dead_letter_queue(
    settings, producer: Producer, db
) -> None:
    worker = Worker()
    attempts: list[tuple[int, datetime]] = []

    @worker.handler("flaky")
    async def flaky(ctx: JobContext, payload: dict) -> None:
        attempts.append((ctx.attempt, await ctx.db.fetchval("SELECT clock_timestamp()")))
        await ctx.db.execute("CREATE TABLE IF NOT EXISTS never_committed (x int)")
        raise ValueError(f"boom {ctx.attempt}")

    job_id = await producer.enqueue("flaky", {"n": 1}, retry=QUICK)
    async with running(Timer(settings)), running(WorkerService(worker, settings)):
        summary = await all_finished(producer, [job_id])

    assert summary["dead"] == 1
    assert [a for a, _ in attempts] == [1, 2, 3]
    gaps = [b - a for (_, a), (_, b) in itertools.pairwise(attempts)]
    assert all(gap >= timedelta(milliseconds=80) for gap in gaps), gaps  # backoff 100 ms, jitter 20 %
    # The handler's writes rolled back with every failed attempt.
    assert await db.fetchval("SELECT to_regclass('never_committed')") is None

    job = await producer.get(job_id)
    assert job.state == "dead"
    (occurrence,) = job.occurrences
    assert occurrence.reason == "max_attempts"
    assert occurrence.error == "ValueError: boom 3"
    assert [(a.attempt, a.outcome, a.error) for a in occurrence.attempts] == [
        (1, "failed", "ValueError: boom 1"),
        (2, "failed", "ValueError: boom 2"),
        (3, "failed", "ValueError: boom 3"),
    ]

    message = await take_dead_letter(settings, "flaky")
    body = orjson.loads(message.body)
    assert body["job_id"] == job_id and body["attempt"] == 3
    assert message.headers["x-chronoq-reason"] == "max_attempts"
    assert message.headers["x-chronoq-error"] == "ValueError: boom 3"
    assert message.headers["x-chronoq-idempotency-key"] == occurrence.occurrence_key


async def test_payload_that_does_not_validate_is_dead_at_once(settings, producer: Producer) -> None:
    worker = Worker()
    calls = []

    @worker.handler("typed")
    async def typed(ctx: JobContext, payload: Email) -> None:
        calls.append(payload)

    good = await producer.enqueue("typed", {"to": "x@y.z"})
    bad = await producer.enqueue("typed", {"too": "x@y.z"}, max_attempts=5)
    async with running(Timer(settings)), running(WorkerService(worker, settings)):
        await all_finished(producer, [good, bad])
    assert calls == [Email(to="x@y.z")]
    job = await producer.get(bad)
    assert job.state == "dead"
    assert job.occurrences[0].reason == "invalid_payload"
    assert "to" in (job.occurrences[0].error or "")
    assert [a.outcome for a in job.occurrences[0].attempts] == ["invalid"]


async def test_retry_and_cancel_signals(settings, producer: Producer) -> None:
    worker = Worker()

    @worker.handler("signals")
    async def signals(ctx: JobContext, payload: dict) -> str:
        if payload["do"] == "cancel":
            raise Cancel("not needed any more")
        if ctx.attempt == 1:
            raise Retry("upstream busy", delay=timedelta(milliseconds=50))
        return "done"

    retried = await producer.enqueue("signals", {"do": "retry"})
    cancelled = await producer.enqueue("signals", {"do": "cancel"})
    async with running(Timer(settings)), running(WorkerService(worker, settings)):
        await all_finished(producer, [retried, cancelled])
    job = await producer.get(retried)
    assert (job.state, job.occurrences[0].attempt, job.occurrences[0].result) == ("succeeded", 2, "done")
    job = await producer.get(cancelled)
    assert (job.state, job.occurrences[0].reason) == ("cancelled", "not needed any more")


async def test_transactional_enqueue_commits_or_vanishes_with_the_callers_transaction(producer: Producer, db) -> None:
    await db.execute("CREATE TABLE orders (id int PRIMARY KEY)")
    with pytest.raises(RuntimeError):
        async with db.transaction():
            await db.execute("INSERT INTO orders VALUES (1)")
            await producer.enqueue("emails.send", {"order": 1}, connection=db)
            raise RuntimeError("the caller's work failed")
    assert await db.fetchval("SELECT count(*) FROM chronoq.jobs") == 0
    assert await db.fetchval("SELECT count(*) FROM chronoq.wheel") == 0

    async with db.transaction():
        await db.execute("INSERT INTO orders VALUES (2)")
        job_id = await producer.enqueue("emails.send", {"order": 2}, connection=db)
    assert (await producer.get(job_id)).state == "scheduled"


async def test_same_key_same_queue_enqueues_once(producer: Producer) -> None:
    first = await producer.enqueue("emails.send", {"v": 1}, key="order-42", delay=60)
    again = await producer.enqueue("emails.send", {"v": 2}, key="order-42", delay=60)
    other_queue = await producer.enqueue("sms.send", {"v": 1}, key="order-42", delay=60)
    assert first == again != other_queue
    assert (await producer.get(first)).payload == {"v": 1}
    concurrent = await asyncio.gather(*(producer.enqueue("race", {}, key="k") for _ in range(10)))
    assert len(set(concurrent)) == 1


async def test_enqueue_many_returns_ids_in_order_and_honours_keys(producer: Producer, db) -> None:
    existing = await producer.enqueue("bulk", {"i": -1}, key="k-1", delay=60)
    ids = await producer.enqueue_many(
        [{"queue": "bulk", "payload": {"i": i}, "delay": 60} for i in range(500)]
        + [{"queue": "bulk", "payload": {"i": "dup"}, "key": "k-1"}, {"queue": "bulk", "payload": {}, "key": "k-2"},
           {"queue": "bulk", "payload": {}, "key": "k-2"}]
    )
    assert len(ids) == 503
    assert ids[500] == existing
    assert ids[501] == ids[502] != existing
    payloads = dict(await db.fetch("SELECT id, payload->>'i' FROM chronoq.jobs WHERE queue = 'bulk'"))
    assert [payloads[i] for i in ids[:500]] == [str(i) for i in range(500)]
    assert await db.fetchval("SELECT count(*) FROM chronoq.wheel") == 502


async def test_cancel_before_due_means_it_never_runs(settings, producer: Producer) -> None:
    worker = Worker()
    calls = []

    @worker.handler("later")
    async def later(ctx: JobContext, payload: dict) -> None:
        calls.append(ctx.job_id)

    cancelled = await producer.enqueue("later", {}, delay=timedelta(milliseconds=300))
    control = await producer.enqueue("later", {}, delay=timedelta(milliseconds=600))
    assert await producer.cancel(cancelled) is True
    assert await producer.cancel(cancelled) is False
    async with running(Timer(settings)), running(WorkerService(worker, settings)):
        await all_finished(producer, [cancelled, control])
    assert calls == [control]
    job = await producer.get(cancelled)
    assert (job.state, job.occurrences[0].state, job.occurrences[0].reason) == ("cancelled", "cancelled", "cancelled by request")


async def test_a_delivery_that_went_missing_is_dispatched_again(settings, producer: Producer, db) -> None:
    settings = settings.model_copy(update={"redispatch_after": timedelta(seconds=1)})
    job_id = await producer.enqueue("lost", {}, timeout=timedelta(seconds=1))
    timer = Timer(settings)
    await timer.start()
    try:
        assert await timer.run_once() == 1
        # The broker loses the message (purged): no worker ever sees it.
        connection = await aio_pika.connect(settings.amqp_url)
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(f"{settings.namespace}.q.lost", passive=True)
            assert (await queue.purge()).message_count == 1
        assert await timer.run_once() == 0  # not yet past its deadline (1 s + 1 s timeout)
        row = await db.fetchrow("SELECT dispatches, due_at - dispatched_at AS lease FROM chronoq.wheel WHERE job_id = $1", job_id)
        assert row["dispatches"] == 1 and row["lease"] == timedelta(seconds=2)
        await db.execute("UPDATE chronoq.wheel SET due_at = now() - interval '1 ms' WHERE job_id = $1", job_id)
        assert await timer.run_once() == 1
    finally:
        await timer.close()

    worker = Worker()

    @worker.handler("lost")
    async def lost(ctx: JobContext, payload: dict) -> None:
        return None

    async with running(WorkerService(worker, settings)):
        summary = await all_finished(producer, [job_id])
    assert summary["succeeded"] == 1
    job = await producer.get(job_id)
    assert job.occurrences[0].attempt == 1


async def test_an_occurrence_started_past_the_delivery_limit_is_dead_without_running(settings, producer: Producer, db) -> None:
    worker = Worker()
    runs = []

    @worker.handler("poison")
    async def poison(ctx: JobContext, payload: dict) -> None:
        runs.append(ctx.attempt)

    job_id = await producer.enqueue("poison", {})
    # As if workers had started it `delivery_limit` times and died each time (SIGKILL mid-handler).
    await db.execute("UPDATE chronoq.wheel SET starts = $1", settings.delivery_limit)
    async with running(Timer(settings)), running(WorkerService(worker, settings)):
        await all_finished(producer, [job_id])
    assert runs == []
    job = await producer.get(job_id)
    assert (job.state, job.occurrences[0].reason) == ("dead", "delivery_limit")
    assert "started 10 times without an outcome" in job.occurrences[0].error
    message = await take_dead_letter(settings, "poison")
    assert message.headers["x-chronoq-reason"] == "delivery_limit"


async def test_only_the_first_committed_copy_of_an_attempt_may_count_its_start_with_its_group(
    settings, producer: Producer, db
) -> None:
    """The store's verdict behind deferring a first delivery (design §8.1): a copy that is not
    the one the first committed timer batch published may follow a run that died uncounted."""
    from chronoq._store import outcomes, wheel

    await producer.enqueue("poison", {})
    key = await db.fetchval("SELECT occurrence_key FROM chronoq.wheel")
    lease = [timedelta(seconds=30)]

    async def verdict(dispatch_id: int | None) -> bool:
        async with db.transaction():
            statuses, _ = await outcomes.start_locked(db, [key], [1], [dispatch_id])
        assert statuses[key].starts == 1  # what this start would make it: nothing is counted
        return statuses[key].only_copy

    async with db.transaction():
        await wheel.mark_dispatched(db, [key], lease, 7)
    assert await verdict(7) is True  # the first batch's own copy
    assert await verdict(8) is False  # a batch that rolled back after publishing
    assert await verdict(None) is False  # a message without an id (an older timer's)
    async with db.transaction():
        await wheel.mark_dispatched(db, [key], lease, 9)  # published again: its lease ran out
    assert await verdict(9) is False
    # Five verdicts committed, no start counted: a delivery handed back from its group is counted
    # once, when it comes back as a redelivery (counting it here too spent two starts per run).
    assert await db.fetchval("SELECT starts FROM chronoq.wheel WHERE occurrence_key = $1", key) == 0


async def test_two_copies_of_one_occurrence_in_one_group_are_judged_by_the_first(settings, producer: Producer, db) -> None:
    """A group can hold a rolled-back batch's copy and the committed batch's copy of one
    occurrence. Only the first runs (the other is a duplicate), so the verdict must be the first
    copy's own, whatever order Postgres returns the rows in: an orphan first is handed back."""
    from chronoq._store import outcomes, wheel

    await producer.enqueue("twice", {})
    key = await db.fetchval("SELECT occurrence_key FROM chronoq.wheel")
    async with db.transaction():
        await wheel.mark_dispatched(db, [key], [timedelta(seconds=30)], 7)  # the committed batch

    async def first_verdict(dispatch_ids: list[int]) -> bool:
        async with db.transaction():
            statuses, _ = await outcomes.start_locked(db, [key] * len(dispatch_ids), [1] * len(dispatch_ids),
                                                      dispatch_ids)
        return statuses[key].only_copy

    assert await first_verdict([8, 7]) is False  # the orphan came first: it goes back
    assert await first_verdict([7, 8]) is True
    assert await first_verdict([8, 7, 7]) is False
    assert await first_verdict([7, 8, 8]) is True


async def test_a_slow_handler_is_not_published_again_while_it_runs(settings, producer: Producer, db) -> None:
    settings = settings.model_copy(update={"redispatch_after": timedelta(seconds=1)})
    worker = Worker()
    runs = []

    @worker.handler("slow")
    async def slow(ctx: JobContext, payload: dict) -> None:
        runs.append(ctx.attempt)
        started = await ctx.db.fetchval("SELECT due_at - now() FROM chronoq.wheel WHERE job_id = $1", ctx.job_id)
        assert started > timedelta(seconds=3)  # the start moved the redelivery deadline past this run
        await asyncio.sleep(2.5)  # longer than redispatch_after + the 1 s timeout the timer leased

    job_id = await producer.enqueue("slow", {}, timeout=timedelta(seconds=3))
    service = WorkerService(worker, settings)
    async with running(Timer(settings)), running(service):
        summary = await all_finished(producer, [job_id])
    assert summary["succeeded"] == 1 and runs == [1]
    assert dict(service.outcomes) == {"succeeded": 1}  # no second copy was ever delivered


async def test_an_unroutable_message_is_not_marked_dispatched(settings, producer: Producer, db) -> None:
    async def delete_queue() -> None:
        connection = await aio_pika.connect(settings.amqp_url)
        async with connection:
            channel = await connection.channel()
            await channel.queue_delete(f"{settings.namespace}.q.vanishing")

    job_id = await producer.enqueue("vanishing", {})
    timer = Timer(settings)
    await timer.start()
    try:
        await timer._publisher.ensure_queues(["vanishing"])  # declare, then lose it
        connection = await aio_pika.connect(settings.amqp_url)
        async with connection:
            channel = await connection.channel()
            await channel.queue_delete(f"{settings.namespace}.q.vanishing")
        state = ("SELECT dispatches, dispatched_at, dispatch_id, last_error, due_at > now() AS later"
                 " FROM chronoq.wheel WHERE job_id = $1")
        assert await timer.run_once() == 1
        row = await db.fetchrow(state, job_id)
        assert row["dispatches"] == 0 and row["later"] and "NO_ROUTE" in row["last_error"]
        # The mark went out with the publish; refused, the row is as it was before the claim.
        assert row["dispatched_at"] is None and row["dispatch_id"] is None
        # The next attempt declares the queue again and goes through.
        await db.execute("UPDATE chronoq.wheel SET due_at = now() WHERE job_id = $1", job_id)
        assert await timer.run_once() == 1
        dispatched = await db.fetchrow(state, job_id)
        assert dispatched["dispatches"] == 1 and dispatched["dispatch_id"] is not None
        # Its lease runs out and the queue is gone again: the refused republish leaves the
        # first dispatch's record as it was.
        await delete_queue()
        await db.execute("UPDATE chronoq.wheel SET due_at = now() WHERE job_id = $1", job_id)
        assert await timer.run_once() == 1
        again = await db.fetchrow(state, job_id)
        assert (again["dispatches"], again["dispatched_at"], again["dispatch_id"]) == (
            1, dispatched["dispatched_at"], dispatched["dispatch_id"])
        assert again["later"] and "NO_ROUTE" in again["last_error"]
    finally:
        await timer.close()


async def test_a_duplicate_delivery_is_acked_without_running_again(settings, producer: Producer) -> None:
    worker = Worker()
    runs = []

    @worker.handler("dup")
    async def dup(ctx: JobContext, payload: dict) -> None:
        runs.append(ctx.idempotency_key)

    job_id = await producer.enqueue("dup", {})
    timer = Timer(settings)
    await timer.start()
    try:
        service = WorkerService(worker, settings)
        async with running(service):
            assert await timer.run_once() == 1
            await all_finished(producer, [job_id])
            # Publish the same occurrence again, as a timer that died before its commit would.
            from chronoq.timer.messages import job_message

            async with timer._pool.acquire() as conn:
                row = await conn.fetchrow(
                    "SELECT r.occurrence_key, r.job_id, r.queue, r.fire_at, r.run_at, r.attempt, 0 AS dispatches,"
                    " j.payload::text AS payload, j.max_attempts, j.timeout_ms, j.trace::text AS trace"
                    " FROM chronoq.results r JOIN chronoq.jobs j ON j.id = r.job_id WHERE r.job_id = $1", job_id)
            assert await timer._publisher.publish([job_message(row, 1)]) == [None]

            async def deduplicated() -> bool:
                return service.outcomes["duplicate"] == 1

            await eventually(deduplicated, what="the duplicate delivery to be acked")
    finally:
        await timer.close()
    assert len(runs) == 1


async def test_a_handler_past_its_timeout_is_cancelled_rolled_back_and_retried(settings, producer: Producer, db) -> None:
    worker = Worker()

    @worker.handler("sleepy")
    async def sleepy(ctx: JobContext, payload: dict) -> str:
        await ctx.db.execute("CREATE TABLE IF NOT EXISTS sleepy_effects (attempt int)")
        await ctx.db.execute("INSERT INTO sleepy_effects VALUES ($1)", ctx.attempt)
        if ctx.attempt == 1:
            await ctx.db.execute("SELECT pg_sleep(30)")  # stuck in the database, past the timeout
        return "woke up"

    job_id = await producer.enqueue("sleepy", {}, timeout=timedelta(milliseconds=500), retry=QUICK)
    async with running(Timer(settings)), running(WorkerService(worker, settings)):
        summary = await all_finished(producer, [job_id])
    assert summary["succeeded"] == 1
    job = await producer.get(job_id)
    first, second = job.occurrences[0].attempts
    assert (first.outcome, first.error) == ("timeout", "TimeoutError: handler exceeded its timeout")
    assert second.outcome == "succeeded"
    assert [r["attempt"] for r in await db.fetch("SELECT attempt FROM sleepy_effects")] == [2]


async def test_a_queue_the_broker_refuses_does_not_hold_up_other_queues(settings, producer: Producer, db) -> None:
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        # Someone declared it by hand with other arguments: declaring it as chronoq does fails.
        await channel.declare_queue(f"{settings.namespace}.q.clashing", durable=True, arguments={"x-queue-type": "classic"})
    bad = await producer.enqueue("clashing", {})
    good = await producer.enqueue("healthy", {})
    assert await dispatch_once(settings) == 2
    rows = {r["job_id"]: r for r in await db.fetch("SELECT job_id, dispatches, last_error FROM chronoq.wheel")}
    assert rows[good]["dispatches"] == 1
    assert rows[bad]["dispatches"] == 0 and "other arguments" in rows[bad]["last_error"]


async def test_one_group_with_every_kind_of_outcome_keeps_each_members_own(settings, producer: Producer, db) -> None:
    """Deliveries that run in one group (one transaction, a savepoint each) keep exactly their
    own writes and outcomes, whatever their neighbours do."""
    await db.execute("CREATE TABLE group_effects (name text)")
    worker = Worker()

    @worker.handler("mixed")
    async def mixed(ctx: JobContext, payload: Email) -> str:
        await ctx.db.execute("INSERT INTO group_effects VALUES ($1)", f"{payload.to}#{ctx.attempt}")
        if payload.to == "retry" and ctx.attempt == 1:
            raise Retry("later", delay=timedelta(milliseconds=10))
        if payload.to == "cancel":
            raise Cancel("no")
        if payload.to == "fail":
            raise RuntimeError("always")
        if payload.to == "swallow":
            with contextlib.suppress(Exception):  # the handler hides the error; the attempt still fails
                await ctx.db.execute("SELECT 1/0")
        return payload.to

    names = ["ok1", "retry", "cancel", "fail", "swallow", "ok2"]
    ids = {n: await producer.enqueue("mixed", {"to": n}, retry=QUICK) for n in names}
    ids["bad"] = await producer.enqueue("mixed", {"not": "an email"})
    assert await dispatch_once(settings) == len(ids)  # all published before any worker runs: one group
    service = WorkerService(worker, settings.model_copy(update={"concurrency": 1, "batch_size": 50}))
    async with running(Timer(settings)), running(service):
        await all_finished(producer, list(ids.values()))
    states = {n: (await producer.get(i)).state for n, i in ids.items()}
    assert states == {"ok1": "succeeded", "retry": "succeeded", "cancel": "cancelled", "fail": "dead",
                      "swallow": "dead", "ok2": "succeeded", "bad": "dead"}
    effects = sorted(r["name"] for r in await db.fetch("SELECT name FROM group_effects"))
    assert effects == ["ok1#1", "ok2#1", "retry#2"]
    retry_job = await producer.get(ids["retry"])
    assert [a.outcome for a in retry_job.occurrences[0].attempts] == ["failed", "succeeded"]


async def test_a_group_out_of_time_hands_the_rest_back_and_they_still_run(settings, producer: Producer, monkeypatch) -> None:
    import chronoq.consumer.group as group

    monkeypatch.setattr(group, "GROUP_TIME_BUDGET", 0.2)
    worker = Worker()
    ran: list[int] = []

    @worker.handler("slowish")
    async def slowish(ctx: JobContext, payload: dict) -> None:
        await asyncio.sleep(0.3)
        ran.append(ctx.job_id)

    ids = [await producer.enqueue("slowish", {"n": n}) for n in range(4)]
    assert await dispatch_once(settings) == 4  # all buffered for one lane before it starts
    service = WorkerService(worker, settings.model_copy(update={"concurrency": 1, "batch_size": 10}))
    # Handlers this worker has seen run fast until now, so all four go in one group.
    service.times.observe("slowish", 0.0)
    async with running(Timer(settings)), running(service):
        await all_finished(producer, ids)
    assert sorted(ran) == sorted(ids)
    assert service.outcomes["deferred"] >= 1 and service.outcomes["succeeded"] == 4


async def test_attempts_beyond_the_delivery_limit_are_not_mistaken_for_poison(settings, producer: Producer) -> None:
    worker = Worker()

    @worker.handler("stubborn")
    async def stubborn(ctx: JobContext, payload: dict) -> None:
        raise RuntimeError(f"attempt {ctx.attempt}")

    job_id = await producer.enqueue("stubborn", {}, retry=RetryPolicy(max_attempts=settings.delivery_limit + 2,
                                                                      backoff_base=timedelta(0)))
    async with running(Timer(settings)), running(WorkerService(worker, settings)):
        await all_finished(producer, [job_id])
    occurrence = (await producer.get(job_id)).occurrences[0]
    assert (occurrence.reason, occurrence.attempt) == ("max_attempts", settings.delivery_limit + 2)


async def test_a_worker_crash_counts_only_against_the_job_that_causes_it(settings, spawn_worker, producer: Producer, db) -> None:
    """A group whose worker dies comes back redelivered; redeliveries run alone, so the job that
    kills its worker reaches the delivery limit while its group-mates simply succeed."""
    settings = settings.model_copy(update={"delivery_limit": 3})
    ids = [await producer.enqueue("crashy", {"crash": n == 0}) for n in range(4)]
    assert await dispatch_once(settings) == 4  # all buffered before the worker starts: one group
    summary = await spawn_worker(ids, settings)
    states = {i: (await producer.get(i)).state for i in ids}
    assert states[ids[0]] == "dead" and (await producer.get(ids[0])).occurrences[0].reason == "delivery_limit"
    assert [states[i] for i in ids[1:]] == ["succeeded"] * 3, summary


async def test_a_deadlock_victim_goes_back_to_the_queue_without_spending_an_attempt(settings, producer: Producer, db) -> None:
    """A real deadlock between a handler's `ctx.db` writes and another transaction: the handler
    is the victim, its writes roll back, and the delivery runs again as the same attempt."""
    await db.execute("CREATE TABLE contested (id int PRIMARY KEY, n int); INSERT INTO contested VALUES (1, 0), (2, 0)")
    worker = Worker()
    seen: list[str] = []

    @worker.handler("contended")
    async def contended(ctx: JobContext, payload: dict) -> None:
        await ctx.db.execute("UPDATE contested SET n = n + 1 WHERE id = 1")
        try:
            await ctx.db.execute("UPDATE contested SET n = n + 1 WHERE id = 2")
        except Exception as exc:
            seen.append(type(exc).__name__)
            raise
        seen.append(f"done#{ctx.attempt}")

    async def handler_waits() -> bool:
        waiting = "SELECT count(*) FROM pg_stat_activity WHERE pg_backend_pid() = ANY(pg_blocking_pids(pid))"
        return bool(await db.fetchval(waiting))

    async with running(Timer(settings)), running(WorkerService(worker, settings)):
        async with db.transaction():
            await db.execute("UPDATE contested SET n = n + 10 WHERE id = 2")
            job_id = await producer.enqueue("contended", {}, retry=QUICK)  # runs into the lock on row 2
            await eventually(handler_waits, what="the handler to wait for row 2")
            await db.execute("UPDATE contested SET n = n + 10 WHERE id = 1")  # closes the cycle
        await all_finished(producer, [job_id])
    job = await producer.get(job_id)
    assert seen == ["DeadlockDetectedError", "done#1"]
    assert (job.state, job.occurrences[0].attempt) == ("succeeded", 1)
    assert await db.fetch("SELECT id, n FROM contested ORDER BY id") == [(1, 11), (2, 11)]


async def test_a_delivery_that_can_never_be_processed_is_recorded_dead_not_left_to_its_lease(
    settings, producer: Producer
) -> None:
    """The worker's last resort for a delivery whose handler's writes Postgres refuses at commit,
    even alone: the broker dead-letters the message and Postgres records the occurrence dead, so
    no timer dispatches it again when its lease expires."""
    from chronoq.consumer.delivery import Deliveries, Job
    from chronoq.consumer.failures import bury_unprocessable

    job_id = await producer.enqueue("unprocessable", {"n": 1})
    assert await dispatch_once(settings) == 1
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        queue = await (await connection.channel()).declare_queue(f"{settings.namespace}.q.unprocessable", passive=True)
        message = await queue.get(timeout=5)
        await message.ack()
    worker = Worker()

    @worker.handler("unprocessable")
    async def never_reached(ctx: JobContext, payload: dict) -> None:
        raise AssertionError("not run")

    job = Deliveries(worker, "test").parse(message.body, dict(message.headers), False)
    assert isinstance(job, Job)
    conn = await asyncpg_connect(settings.database_url)
    try:
        assert await bury_unprocessable(conn, job, "TypeError: boom")
    finally:
        await conn.close()
    view = await producer.get(job_id)
    assert (view.state, view.occurrences[0].reason, view.occurrences[0].error) == ("dead", "unprocessable", "TypeError: boom")


async def test_handlers_writes_commit_durably_and_a_handler_that_never_uses_the_database_sends_nothing_for_it(
    settings, producer: Producer, db
) -> None:
    """The transaction that records outcomes and the handlers' writes commits durably, and the
    group prepares for a handler's writes only if it uses ctx.db (any method, transaction, cursor)."""
    worker = Worker()
    seen: dict[str, object] = {}

    @worker.handler("durable")
    async def durable(ctx: JobContext, payload: dict) -> None:
        if payload["touch"]:
            seen["synchronous_commit"] = await ctx.db.fetchval("SHOW synchronous_commit")
            async with ctx.db.transaction():
                await ctx.db.execute("CREATE TABLE touched (n int)")
            await ctx.db.executemany("INSERT INTO touched VALUES ($1)", [(1,), (2,)])
            seen["cursor"] = [r["n"] async for r in ctx.db.cursor("SELECT n FROM touched ORDER BY n")]
            seen["prepared"] = await (await ctx.db.prepare("SELECT count(*) FROM touched")).fetchval()
        else:
            seen["untouched"] = repr(ctx.db)

    ids = [await producer.enqueue("durable", {"touch": touch}) for touch in (False, True)]
    async with running(Timer(settings)), running(WorkerService(worker, settings)):
        await all_finished(producer, ids)
    assert (seen["synchronous_commit"], seen["cursor"], seen["prepared"]) == ("on", [1, 2], 2)
    assert "<JobConnection unused" in str(seen["untouched"])
    assert await db.fetchval("SELECT to_regclass('touched') IS NOT NULL")


#: The planner settings a handler's statements run with, and those of the worker's session.
PLANNER = ("plan_cache_mode", "enable_seqscan", "enable_bitmapscan")
HANDLER_PLANNING = ("auto", "on", "on")
KEYED_PLANNING = ("force_generic_plan", "off", "off")


async def planning_of(db: Any, values: str) -> tuple[str, ...]:
    """The planner settings in force (``setting``) or the session's own (``reset_val``)."""
    rows = await db.fetch(f"SELECT name, {values} AS value FROM pg_settings WHERE name = ANY($1::text[])", list(PLANNER))
    by_name = {r["name"]: r["value"] for r in rows}
    return tuple(by_name[name] for name in PLANNER)


async def test_handlers_statements_are_planned_as_postgres_does_by_default_and_chronoqs_own_keep_their_plans(
    settings, producer: Producer
) -> None:
    """The worker's session plans chronoq's statements once, by key (keyed planning); a handler's
    statements are planned as Postgres does by default, whether its group runs without savepoints
    or, after a handler failed having used ctx.db, again with them; the session stays as it was."""
    worker = Worker()
    seen: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = []

    @worker.handler("plans")
    async def plans(ctx: JobContext, payload: dict) -> None:
        seen.append((payload["kind"], await planning_of(ctx.db, "setting"), await planning_of(ctx.db, "reset_val")))
        if payload["kind"] == "fails":
            raise RuntimeError("after using ctx.db")

    ids = [await producer.enqueue("plans", {"kind": kind}, max_attempts=1) for kind in ("keeps", "fails", "keeps")]
    assert await dispatch_once(settings) == 3  # all buffered before the worker starts: one group
    service = WorkerService(worker, settings.model_copy(update={"concurrency": 1, "batch_size": 10}))
    service.times.observe("plans", 0.0)  # known to be fast: all three in one group
    async with running(Timer(settings)), running(service):
        await all_finished(producer, ids)
    assert [kind for kind, _, _ in seen] == ["keeps", "fails", "keeps", "keeps"]  # the first twice: with savepoints
    assert set(seen) == {("fails", HANDLER_PLANNING, KEYED_PLANNING), ("keeps", HANDLER_PLANNING, KEYED_PLANNING)}


async def test_handlers_are_planned_as_by_default_and_chronoqs_own_statements_as_the_session_says(settings) -> None:
    """What a group sends around its handlers' use of ctx.db, with or without savepoints, on a
    session like the worker's."""
    from chronoq._store import savepoints
    from chronoq._store.connection import create_pool
    from chronoq.consumer.writes import GroupWrites

    pool = await create_pool(settings.database_url, max_size=1, planning="keyed")  # as the worker's
    try:
        async with pool.acquire() as conn:
            async def mode() -> tuple[str, ...]:
                return await planning_of(conn, "setting")

            for with_savepoints in (False, True):
                async with conn.transaction():
                    writes = GroupWrites(conn, savepoints=with_savepoints)
                    await writes.open_job()
                    assert await mode() == HANDLER_PLANNING
                    await writes.keep_job(None)
                    assert await mode() == HANDLER_PLANNING  # until chronoq's next own statement
                    await writes.before_own_statement()
                    assert await mode() == KEYED_PLANNING
                    await writes.open_job()
                    if with_savepoints:
                        await savepoints.undo_job(conn)
                        assert await mode() == HANDLER_PLANNING  # set outside the handler's savepoint
                    await writes.before_own_statement()
                    assert await mode() == KEYED_PLANNING
                assert await mode() == KEYED_PLANNING
    finally:
        await pool.close()


async def test_queues_declared_by_an_earlier_version_with_other_limits_are_used_as_they_are(settings, producer: Producer) -> None:
    """RabbitMQ refuses to change a queue's arguments. A job queue and the submissions queue
    declared before the delivery limit and dead-lettering changed keep working as they are."""
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.declare_queue(f"{settings.namespace}.q.older", durable=True,
                                    arguments={"x-queue-type": "quorum", "x-delivery-limit": 10,
                                               "x-dead-letter-exchange": f"{settings.namespace}.dead",
                                               "x-dead-letter-routing-key": "older"})
        await channel.declare_queue(f"{settings.namespace}.submissions", durable=True, arguments={"x-queue-type": "quorum"})
    worker = Worker()

    @worker.handler("older")
    async def older(ctx: JobContext, payload: dict) -> None:
        return None

    job_id = await producer.enqueue("older", {})
    async with running(Timer(settings)), running(WorkerService(worker, settings)):
        await all_finished(producer, [job_id])
    assert (await producer.get(job_id)).state == "succeeded"


async def test_a_queue_declared_with_an_older_delivery_limit_is_still_checked_for_its_type(settings) -> None:
    from chronoq._broker.topology import Topology, _declare

    topology = Topology(settings.namespace)
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.declare_queue(f"{settings.namespace}.q.limited", durable=True,
                                    arguments={**topology.queue_arguments("limited"), "x-delivery-limit": 10})
        queue = await _declare(channel, f"{settings.namespace}.q.limited", topology.queue_arguments("limited"))
        assert queue.name == f"{settings.namespace}.q.limited"
        await channel.declare_queue(f"{settings.namespace}.q.typed", durable=True, arguments={"x-queue-type": "classic"})
        with pytest.raises(aio_pika.exceptions.ChannelPreconditionFailed, match="x-queue-type"):
            await _declare(channel, f"{settings.namespace}.q.typed", topology.queue_arguments("typed"))
