"""Recording an outcome: a handler's Retry takes what enqueue takes, an error of chronoq's while
recording never ends an occurrence dead (the delivery goes back, loudly), and the one failure
outside a handler that is a job's fault (its writes refused at commit) buries that job alone."""

from __future__ import annotations

import logging
import math
from datetime import timedelta

import pytest

from chronoq import JobContext, Producer, Retry, RetryPolicy, Worker
from chronoq.consumer.service import WorkerService
from chronoq.errors import InvalidJobError
from chronoq.timer import Timer
from tests.harness import all_finished, dispatch_once, eventually, running


@pytest.mark.parametrize("delay", [1, 0.25, 0, timedelta(seconds=2)])
def test_a_retry_delay_is_a_timedelta_or_a_number_of_seconds(delay) -> None:
    expected = delay if isinstance(delay, timedelta) else timedelta(seconds=delay)
    assert Retry(delay=delay).delay == expected
    assert Retry().delay is None


@pytest.mark.parametrize("delay", ["x", "1", True, -1, math.nan, math.inf, 10**12, [1]])
def test_a_retry_delay_that_enqueue_would_refuse_is_refused_where_the_signal_is_built(delay) -> None:
    with pytest.raises(InvalidJobError) as refused:
        Retry(delay=delay)
    assert refused.value.field == "Retry.delay"


async def test_a_handler_retrying_after_a_number_of_seconds_runs_again_that_much_later(settings, producer: Producer) -> None:
    worker = Worker()

    @worker.handler("patient")
    async def patient(ctx: JobContext, payload: dict) -> str:
        if ctx.attempt == 1:
            raise Retry("not yet", delay=1)
        return "done"

    # A backoff of ten minutes: only the handler's delay brings the second attempt within seconds.
    job_id = await producer.enqueue("patient", {}, retry=RetryPolicy(max_attempts=3, backoff_base=timedelta(minutes=10)))
    async with running(Timer(settings)), running(WorkerService(worker, settings)):
        await all_finished(producer, [job_id])
    job = await producer.get(job_id)
    first, second = job.occurrences[0].attempts
    assert (job.state, first.outcome, first.error, second.outcome) == ("succeeded", "failed", "Retry: not yet", "succeeded")
    assert first.finished_at is not None and second.started_at is not None
    # The database's clock on both sides: the retry was due a second after the failure was recorded.
    assert timedelta(seconds=0.9) <= second.started_at - first.finished_at < timedelta(seconds=30)


async def test_an_error_while_recording_an_outcome_hands_the_delivery_back_and_never_buries_it(
    settings, producer: Producer, db, caplog
) -> None:
    """A real fault in recording (a trigger refuses the failed attempt's row): chronoq's fault,
    not the job's. Each time the delivery goes back to the queue with an error logged, its start
    does not count toward the delivery limit, and once recording works the job goes on."""
    await db.execute("""
        CREATE TABLE refusing (on_ boolean);
        INSERT INTO refusing VALUES (true);
        CREATE FUNCTION refuse_attempts() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF EXISTS (SELECT 1 FROM public.refusing) THEN RAISE EXCEPTION 'attempts are refused'; END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER refuse BEFORE INSERT ON chronoq.attempts FOR EACH ROW EXECUTE FUNCTION refuse_attempts();
    """)
    settings = settings.model_copy(update={"delivery_limit": 2})
    worker = Worker()

    @worker.handler("flaky")
    async def flaky(ctx: JobContext, payload: dict) -> str:
        if ctx.attempt == 1:
            raise RuntimeError("first attempt fails")
        return "ok"

    def internal_errors() -> list[logging.LogRecord]:
        return [r for r in caplog.records if getattr(r, "action", None) == "internal_error"]

    caplog.set_level(logging.ERROR, logger="chronoq.worker")
    job_id = await producer.enqueue("flaky", {}, retry=RetryPolicy(max_attempts=3, backoff_base=timedelta(0)))
    async with running(Timer(settings)), running(WorkerService(worker, settings)):

        async def handed_back_past_the_delivery_limit() -> bool:
            return len(internal_errors()) > settings.delivery_limit + 1

        await eventually(handed_back_past_the_delivery_limit, what="the delivery to come back three times")
        row = await db.fetchrow("SELECT attempt, starts FROM chronoq.wheel WHERE job_id = $1", job_id)
        assert row is not None and row["attempt"] == 1 and row["starts"] <= 1, dict(row or {})
        assert await db.fetchval("SELECT count(*) FROM chronoq.results WHERE job_id = $1", job_id) == 0
        await db.execute("DELETE FROM refusing")
        await all_finished(producer, [job_id])
    job = await producer.get(job_id)
    assert (job.state, [a.outcome for a in job.occurrences[0].attempts]) == ("succeeded", ["failed", "succeeded"])
    record = internal_errors()[0]
    assert record.levelno == logging.ERROR
    assert (record.error, record.sqlstate, record.job_ids) == ("RaiseError", "P0001", [job_id])  # type: ignore[attr-defined]


async def test_writes_refused_at_commit_bury_only_the_job_that_made_them(settings, producer: Producer, db) -> None:
    """A deferred constraint breaks only at the group's commit: the jobs run again one by one,
    and only the one whose writes Postgres refuses ends dead, as unprocessable."""
    await db.execute("""
        CREATE TABLE unique_later (n int, CONSTRAINT unique_n UNIQUE (n) DEFERRABLE INITIALLY DEFERRED);
        INSERT INTO unique_later VALUES (1);
    """)
    worker = Worker()

    @worker.handler("writer")
    async def writer(ctx: JobContext, payload: dict) -> None:
        await ctx.db.execute("INSERT INTO unique_later VALUES ($1)", payload["n"])

    ids = {n: await producer.enqueue("writer", {"n": n}) for n in (2, 1, 3)}
    assert await dispatch_once(settings) == 3  # all published before the worker starts: one group
    service = WorkerService(worker, settings.model_copy(update={"concurrency": 1, "batch_size": 10}))
    service.times.observe("writer", 0.0)  # known to be fast: the three run in one group
    async with running(Timer(settings)), running(service):
        await all_finished(producer, list(ids.values()))
    states = {n: (await producer.get(i)).state for n, i in ids.items()}
    assert states == {2: "succeeded", 1: "dead", 3: "succeeded"}
    dead = (await producer.get(ids[1])).occurrences[0]
    assert dead.reason == "unprocessable" and dead.error is not None and dead.error.startswith("UniqueViolationError")
    assert sorted(r["n"] for r in await db.fetch("SELECT n FROM unique_later")) == [1, 2, 3]
    assert service.outcomes["rejected"] == 1 and service.outcomes["succeeded"] == 2
