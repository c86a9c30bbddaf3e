"""No single row, message or schedule can stop or slow the work of others: what cannot be
processed is set aside with its reason, at once, and everything else flows on."""

from __future__ import annotations

import logging
import statistics
from datetime import timedelta

import aio_pika
import orjson
import pytest

from chronoq import JobContext, Producer, Worker
from chronoq._store import wheel
from chronoq.consumer.service import WorkerService
from chronoq.timer import Timer, batch
from chronoq.timer.messages import build_messages
from tests.harness import EFFECTS_TABLE, all_finished, eventually, running

POISONED_QUEUE = "emails.send\n"


def _worker(*queues: str) -> Worker:
    worker = Worker()
    for queue in queues:

        @worker.handler(queue)
        async def handle(ctx: JobContext, payload: dict) -> None:
            return None

    return worker


async def _poison_queue_name(db, job_id: int, queue: str = POISONED_QUEUE) -> None:
    """What no entry point accepts, written straight into the tables (by hand, an older version)."""
    await db.execute("UPDATE chronoq.jobs SET queue = $2 WHERE id = $1", job_id, queue)
    await db.execute("UPDATE chronoq.wheel SET queue = $2 WHERE job_id = $1", job_id, queue)


async def test_a_stored_queue_name_the_broker_cannot_carry_is_set_aside_and_its_batch_runs(
    settings, producer: Producer, db
) -> None:
    good = [await producer.enqueue("emails.send", {"n": n}) for n in range(20)]
    poisoned = await producer.enqueue("emails.send", {"n": -1})
    await _poison_queue_name(db, poisoned)
    async with running(WorkerService(_worker("emails.send"), settings)), running(Timer(settings)):
        summary = await all_finished(producer, [*good, poisoned])
    assert (summary["succeeded"], summary["dead"]) == (20, 1)
    job = await producer.get(poisoned)
    (occurrence,) = job.occurrences
    assert (occurrence.state, occurrence.reason) == ("dead", "unpublishable")
    assert "queue name" in (occurrence.error or "")
    status = {s.queue: s for s in await producer.status()}
    assert status[POISONED_QUEUE].dead == 1 and status["emails.send"].succeeded == 20


async def test_stored_values_outside_the_contract_are_set_aside_each_with_its_reason(
    settings, producer: Producer, db
) -> None:
    ids = [await producer.enqueue("reports", {"n": n}) for n in range(4)]
    await db.execute("UPDATE chronoq.jobs SET timeout_ms = 10::bigint ^ 15 WHERE id = $1", ids[0])
    await db.execute("UPDATE chronoq.jobs SET max_attempts = 5000 WHERE id = $1", ids[1])
    await db.execute("UPDATE chronoq.jobs SET payload = to_jsonb(repeat('x', 2000000)) WHERE id = $1", ids[2])
    async with running(WorkerService(_worker("reports"), settings)), running(Timer(settings)):
        summary = await all_finished(producer, ids)
    assert (summary["succeeded"], summary["dead"]) == (1, 3)
    errors = [(await producer.get(i)).occurrences[0].error or "" for i in ids[:3]]
    assert "timeout" in errors[0] and "max_attempts" in errors[1] and "payload" in errors[2]


async def test_a_schedule_that_can_no_longer_be_judged_is_set_aside_and_other_jobs_run(
    settings, producer: Producer, db
) -> None:
    broken = await producer.schedule("reports", {}, cron="* * * * * *", misfire="run_once")
    # A grace Postgres stores but no timedelta can hold: judging the tick overflows.
    await db.execute("UPDATE chronoq.jobs SET misfire_grace_ms = 9223372036854775807 WHERE id = $1", broken)
    others = [await producer.enqueue("reports", {"n": n}) for n in range(5)]
    async with running(WorkerService(_worker("reports"), settings)), running(Timer(settings)):
        await all_finished(producer, others)

        async def recorded() -> bool:
            return any(o.reason == "invalid_schedule" for o in (await producer.get(broken)).occurrences)

        await eventually(recorded, what="the broken schedule's tick recorded dead")


def _broken_for_one_job(poisoned: int):
    """A mutant of the timer's message building whose batch fails as a whole, for a reason
    nobody foresaw, whenever one given job is in it: what isolation must find and hold alone."""

    def build(rows, dispatch_id, packed, pack_size):
        if any(r["job_id"] == poisoned for r in rows) and len(rows) > 1:
            raise RuntimeError("a batch containing the poisoned job fails")
        if any(r["job_id"] == poisoned for r in rows):
            raise KeyError("the poisoned job alone fails")
        return build_messages(rows, dispatch_id, packed, pack_size)

    return build


async def test_a_batch_failing_for_an_unknown_reason_is_split_and_only_its_culprit_is_held(
    settings, producer: Producer, db, monkeypatch: pytest.MonkeyPatch
) -> None:
    poisoned = await producer.enqueue("reports", {"n": -1})
    good = [await producer.enqueue("reports", {"n": n}) for n in range(30)]
    monkeypatch.setattr(batch, "build_messages", _broken_for_one_job(poisoned))
    timer = Timer(settings)
    async with running(WorkerService(_worker("reports"), settings)), running(timer):
        summary = await all_finished(producer, good)
    assert summary["succeeded"] == 30
    row = await db.fetchrow("SELECT due_at > now() AS later, last_error, dispatches FROM chronoq.wheel WHERE job_id = $1",
                            poisoned)
    assert row["later"] and row["dispatches"] == 0, dict(row)
    assert row["last_error"].startswith("dispatch failed: KeyError")
    (status,) = await producer.status()
    assert status.held == 1
    assert (await producer.get(poisoned)).occurrences[0].error.startswith("dispatch failed")


async def test_a_look_at_the_wheel_failing_for_an_unknown_reason_is_retried_after_a_pause(
    settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No row is to blame when the timer's look at the wheel fails: it pauses and tries again. It
    used to claim one row at a time to find a culprit, which an empty wheel never ends: a tight
    loop of claims, the look never retried."""
    looks: list[int] = []
    claims: list[int] = []
    claim_due = wheel.claim_due

    async def failing_look(conn, *, count_backlog: bool):
        looks.append(1)
        raise RuntimeError("the look at the wheel fails")

    async def counted_claim(conn, limit: int, *controlled):
        claims.append(limit)
        return await claim_due(conn, limit, *controlled)

    monkeypatch.setattr(wheel, "next_due", failing_look)
    monkeypatch.setattr(wheel, "claim_due", counted_claim)
    async with running(Timer(settings)):

        async def looked_three_times() -> bool:
            return len(looks) >= 3

        await eventually(looked_three_times, timeout=15, what="three failed looks")
    assert len(claims) <= len(looks) + 1  # one claim after each pause, not a loop of them
    assert set(claims) == {settings.claim_batch}  # and whole batches: no row is being sought


async def test_isolation_ends_once_nothing_is_due(settings) -> None:
    """After a batch failed, its rows are claimed one at a time; rows gone before their turn
    (cancelled, dispatched by another timer) must not keep the timer from sleeping."""
    timer = Timer(settings)
    await timer.start()
    try:
        assert timer._batches is not None
        timer._batches.one_at_a_time = 3  # a failed batch of three rows, none of them due any more
        assert await timer.run_once() == 0
        assert timer._batches.one_at_a_time == 0
    finally:
        await timer.close()


async def _rejected(channel: aio_pika.abc.AbstractChannel, namespace: str, count: int) -> list:
    queue = await channel.get_queue(f"{namespace}.submissions.rejected")
    found: list = []

    async def arrived() -> bool:
        message = await queue.get(fail=False)
        if message is not None:
            found.append(message)
            await message.ack()
        return len(found) >= count

    await eventually(arrived, what=f"{count} rejected submission(s)")
    return found


async def test_a_rejected_submission_with_headers_near_the_frame_size_does_not_break_the_timer(
    settings, producer: Producer, db, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="chronoq")
    big = {"x-trace-blob": "t" * 130_000}  # RabbitMQ accepts it: just under its 128 KiB frame
    async with running(WorkerService(_worker("reports"), settings)), running(Timer(settings)):
        connection = await aio_pika.connect(settings.amqp_url)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            submit = await channel.get_exchange(f"{settings.namespace}.submit")
            bad = orjson.dumps({"queue": "reports", "delay_s": "30"})  # a number as a string
            await submit.publish(aio_pika.Message(bad, headers=big), routing_key="")
            good = orjson.dumps({"queue": "reports", "payload": {"ok": True}, "key": "big-headers"})
            await submit.publish(aio_pika.Message(good, headers=big), routing_key="")
            (rejected,) = await _rejected(channel, settings.namespace, 1)
            # A job due meanwhile runs as usual.
            canary = await producer.enqueue("reports", {"canary": True})
            await all_finished(producer, [canary])
    assert "delay_s" in rejected.headers["x-chronoq-error"]
    assert rejected.headers["x-chronoq-headers-dropped"] == 1 and "x-trace-blob" not in rejected.headers
    assert rejected.body == bad
    assert [j.key for j in await producer.list_jobs(queue="reports") if j.key] == ["big-headers"]
    assert not [r for r in caplog.records if getattr(r, "action", "") == "broker_connection_lost"]


async def test_a_submission_the_database_refuses_for_an_unforeseen_reason_is_rejected_at_once(
    settings, producer: Producer, db, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="chronoq")
    # A trigger of the operator's that refuses one queue: an error chronoq has no name for.
    await db.execute("""
        CREATE FUNCTION refuse_exploding() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN IF NEW.queue = 'explodes' THEN RAISE EXCEPTION 'not this one'; END IF; RETURN NEW; END $$;
        CREATE TRIGGER refuse_exploding BEFORE INSERT ON chronoq.jobs
            FOR EACH ROW EXECUTE FUNCTION refuse_exploding();
    """)
    async with running(Timer(settings)):
        connection = await aio_pika.connect(settings.amqp_url)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            submit = await channel.get_exchange(f"{settings.namespace}.submit")
            await submit.publish(aio_pika.Message(orjson.dumps({"queue": "explodes"})), routing_key="")
            await submit.publish(aio_pika.Message(orjson.dumps({"queue": "fine", "key": "k"})), routing_key="")
            (rejected,) = await _rejected(channel, settings.namespace, 1)

            async def stored() -> bool:
                return bool(await producer.list_jobs(queue="fine"))

            await eventually(stored, what="the valid submission stored")
    assert "RaiseError" in rejected.headers["x-chronoq-error"]
    handed_back = [r for r in caplog.records if getattr(r, "action", "") == "submission_requeued"]
    assert not handed_back, "the refused submission was handed back instead of rejected at once"


async def test_a_delivery_whose_outcome_the_database_refuses_goes_back_never_dead_and_its_group_runs(
    settings, producer: Producer, db, caplog
) -> None:
    """Postgres refusing to record an outcome is chronoq's fault, not the job's: the delivery goes
    back to the queue with an error logged, again and again, and never ends dead; its group-mates
    run; once the outcome can be recorded, it is."""
    doomed = await producer.enqueue("reports", {"n": -1})
    await db.execute(f"""
        CREATE FUNCTION refuse_doomed() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN IF NEW.job_id = {doomed} THEN RAISE EXCEPTION 'no outcome for this one'; END IF; RETURN NEW; END $$;
        CREATE TRIGGER refuse_doomed BEFORE INSERT ON chronoq.results
            FOR EACH ROW EXECUTE FUNCTION refuse_doomed();
    """)
    others = [await producer.enqueue("reports", {"n": n}) for n in range(10)]
    service = WorkerService(_worker("reports"), settings.model_copy(update={"batch_size": 16}))
    caplog.set_level(logging.ERROR, logger="chronoq.worker")

    async def refused_again_and_again() -> bool:
        errors = [r for r in caplog.records if getattr(r, "action", "") == "internal_error" and doomed in r.job_ids]
        return len(errors) >= 3

    async with running(service), running(Timer(settings)):
        await all_finished(producer, others)
        await eventually(refused_again_and_again, what="the refused delivery to come back three times")
        assert await db.fetchval("SELECT count(*) FROM chronoq.results WHERE job_id = $1", doomed) == 0
        await db.execute("DROP TRIGGER refuse_doomed ON chronoq.results")
        await all_finished(producer, [doomed])
    assert (await producer.get(doomed)).state == "succeeded"
    assert service.outcomes["rejected"] == 0 and service.outcomes["succeeded"] == 11


# --- one poisoned row among 1,000 good ones on two timers, measured -------------------------------

GOOD_JOBS = 1000
SPREAD = timedelta(seconds=2)
LEAD = timedelta(seconds=3)


async def _lateness_ms(db, ids: list[int]) -> list[float]:
    rows = await db.fetch("SELECT extract(epoch FROM started_at - run_at) * 1000 AS ms FROM chronoq.results"
                          " WHERE job_id = ANY($1) AND state = 'succeeded'", ids)
    return sorted(r["ms"] for r in rows)


async def _round(producer: Producer, db, *, poisoned: bool) -> tuple[list[float], int | None]:
    """1,000 jobs due over two seconds, a few seconds from now; with ``poisoned``, one more due
    first, among them, whose stored queue name no broker can carry."""
    jobs = [{"queue": "effects", "payload": {"n": n}, "delay": LEAD + SPREAD * n / GOOD_JOBS} for n in range(GOOD_JOBS)]
    ids = await producer.enqueue_many(jobs)
    bad = None
    if poisoned:
        bad = await producer.enqueue("effects", {"n": -1}, delay=LEAD)
        await _poison_queue_name(db, bad)
    await all_finished(producer, ids + ([bad] if bad else []), timeout=90)
    return await _lateness_ms(db, ids), bad


@pytest.mark.timeout(300)
async def test_one_poisoned_row_among_a_thousand_on_two_timers_leaves_their_lateness_unchanged(
    spawn, settings, producer: Producer, db, capsys
) -> None:
    await db.execute(EFFECTS_TABLE)
    processes = [spawn("timer", name=f"timer-{n}") for n in range(2)]
    processes.append(spawn("worker", "tests.handlers:worker", "--queue", "effects", name="worker"))
    for proc in processes:
        await proc.wait_for_log("_started")
    clean, _ = await _round(producer, db, poisoned=False)
    dirty, bad = await _round(producer, db, poisoned=True)
    clean_again, _ = await _round(producer, db, poisoned=False)
    assert all(p.popen.poll() is None for p in processes), "a process died"
    assert len(clean) == len(dirty) == len(clean_again) == GOOD_JOBS
    job = await producer.get(bad)
    assert job.occurrences[0].reason == "unpublishable"

    def p(values: list[float], q: float) -> float:
        return values[min(len(values) - 1, int(q * len(values)))]

    with capsys.disabled():
        for name, values in (("clean", clean), ("one poisoned row", dirty), ("clean again", clean_again)):
            print(f"\n  isolation, {name}: lateness p50 {statistics.median(values):.1f} ms, "
                  f"p99 {p(values, 0.99):.1f} ms, max {values[-1]:.1f} ms ({len(values)} jobs, 2 timers)")
    # Stalled would be seconds (a batch retried for ever) or jobs never run; unchanged is within
    # this machine's noise between the clean rounds around it.
    assert p(dirty, 0.99) < max(p(clean, 0.99), p(clean_again, 0.99)) + 1000
