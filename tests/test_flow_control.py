"""Queue controls across the fleet: pause and resume, concurrency and rate limits, enforced by the
timers' claims by the database's clock, whatever number of timers and workers run."""

from __future__ import annotations

import argparse
import re
from datetime import timedelta

import asyncpg
import pytest

from chronoq import JobContext, Producer, Worker
from chronoq._runtime.hooks import PrometheusHooks
from chronoq._store import wheel
from chronoq._store.sql import query
from chronoq.cli.arguments import rate
from chronoq.consumer.service import WorkerService
from chronoq.errors import InvalidJobError
from chronoq.schemas.limits import Rate, check_limits
from chronoq.timer import Timer
from tests.harness import Process, all_finished, dispatch_once, eventually, running


async def _status(producer: Producer, queue: str):
    return next((s for s in await producer.status() if s.queue == queue), None)


@pytest.mark.parametrize(("arguments", "field", "message"), [
    ({"max_running": 0}, "max_running", "outside 1..100000"),
    ({"max_running": -3}, "max_running", "outside 1..100000"),
    ({"max_running": True}, "max_running", "must be an integer"),
    ({"max_running": 2.5}, "max_running", "must be an integer"),
    ({"rate": (0, 1)}, "rate", "outside 1..10000"),
    ({"rate": (10, 0)}, "rate", "at least 1 ms"),
    ({"rate": (10, timedelta(days=2))}, "rate", "at most"),
    ({"rate": (10,)}, "rate", "a (count, period) pair"),
    ({"rate": "10/1s"}, "rate", "a (count, period) pair"),
    ({"rate": (10, "1s")}, "rate", "a timedelta or a number of seconds"),
])
async def test_a_bad_limit_is_refused_naming_its_field_and_nothing_is_stored(
        producer: Producer, db: asyncpg.Connection, arguments: dict, field: str, message: str) -> None:
    with pytest.raises(InvalidJobError) as refused:
        await producer.set_queue_limits("reports", **arguments)
    assert refused.value.field == field and message in refused.value.message
    assert await db.fetchval("SELECT count(*) FROM chronoq.queue_controls") == 0


@pytest.mark.parametrize("queue", ["", "amq.x", "a b", "x" * 201, 7])
async def test_a_bad_queue_name_is_refused_by_every_control(producer: Producer, queue: object) -> None:
    for control in (producer.pause_queue(queue), producer.resume_queue(queue),  # type: ignore[arg-type]
                    producer.set_queue_limits(queue, max_running=1)):  # type: ignore[arg-type]
        with pytest.raises(InvalidJobError) as refused:
            await control
        assert refused.value.field == "queue"


def test_the_command_line_reads_a_rate_as_count_slash_period() -> None:
    assert rate("100/1s") == Rate(100, timedelta(seconds=1))
    assert rate(" 5 /250ms") == Rate(5, timedelta(milliseconds=250))
    assert check_limits(3, (10, 60)) == check_limits(3, rate("10/1m"))
    assert str(Rate(50, timedelta(seconds=1))) == "50/1s"
    for text, message in [("ten per second", "is not a rate like 100/1s"), ("10/soon", "is not a duration"),
                          ("0/1s", "outside 1..10000"), ("٣/1s", "is not a rate like 100/1s"),
                          ("10/2d", "at most"), ("10/0s", "at least 1 ms")]:
        with pytest.raises(argparse.ArgumentTypeError, match=re.escape(message)):
            rate(text)


async def test_limits_are_stored_replaced_and_lifted(producer: Producer, db: asyncpg.Connection) -> None:
    await producer.set_queue_limits("reports", max_running=4, rate=(100, timedelta(seconds=2)))
    row = await _status(producer, "reports")
    assert row is not None and (row.paused, row.max_running, row.rate_count, row.rate_period_s) == (False, 4, 100, 2.0)
    await producer.set_queue_limits("reports", rate=(5, 1))  # replaces both: max_running lifted
    row = await _status(producer, "reports")
    assert row is not None and (row.max_running, row.rate_count, row.rate_period_s) == (None, 5, 1.0)
    assert await producer.pause_queue("reports") is True
    assert await producer.pause_queue("reports") is False
    await producer.set_queue_limits("reports")  # no limits, but still paused
    row = await _status(producer, "reports")
    assert row is not None and row.paused and row.rate_count is None
    assert await producer.resume_queue("reports") is True
    assert await producer.resume_queue("reports") is False
    assert await db.fetchval("SELECT count(*) FROM chronoq.queue_controls") == 0  # runs freely again


async def test_a_paused_queue_keeps_its_due_jobs_while_other_queues_run_and_runs_them_on_resume(
        settings, producer: Producer) -> None:
    worker = Worker()
    ran: list[str] = []

    @worker.handler("mail")
    async def mail(ctx: JobContext, payload: dict) -> None:
        ran.append(f"mail {payload['n']}")

    @worker.handler("other")
    async def other(ctx: JobContext, payload: dict) -> None:
        ran.append("other")

    assert await producer.pause_queue("mail") is True
    hooks = PrometheusHooks()
    async with running(Timer(settings, hooks=hooks)), running(WorkerService(worker, settings)):
        paused = [await producer.enqueue("mail", {"n": n}) for n in range(20)]
        free = await producer.enqueue("other", {})
        await all_finished(producer, [free])

        async def deferred() -> bool:
            row = await _status(producer, "mail")
            return row is not None and row.deferred == 20

        await eventually(deferred, what="the paused queue's 20 jobs deferred")
        assert ran == ["other"]
        waiting = (await producer.get(paused[0])).occurrences[0]
        assert (waiting.state, waiting.reason) == ("deferred", "queue paused")
        assert hooks.registry.get_sample_value("chronoq_deferred_total", {"queue": "mail", "reason": "paused"}) == 20
        assert (await producer.summary(paused))["pending"] == 20
        assert await producer.resume_queue("mail") is True
        summary = await all_finished(producer, paused)
    assert summary["succeeded"] == 20
    assert sorted(ran[1:]) == sorted(f"mail {n}" for n in range(20))
    row = await _status(producer, "mail")
    assert row is not None and row.deferred == 0 and not row.paused


RUNS_TABLE = """
CREATE TABLE test_runs (occurrence_key text NOT NULL, started_at timestamptz NOT NULL,
                        finished_at timestamptz NOT NULL, pid int NOT NULL)
"""
# Every dispatch, as the timers mark the rows (an observer beside the mechanism, not its own
# bookkeeping): the time of each, by the database's clock.
DISPATCHES_TABLE = """
CREATE TABLE test_dispatches (occurrence_key text NOT NULL, at timestamptz NOT NULL);
CREATE FUNCTION test_record_dispatch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO test_dispatches VALUES (NEW.occurrence_key, NEW.dispatched_at);
    RETURN NULL;
END $$;
CREATE TRIGGER test_dispatched AFTER UPDATE OF dispatched_at ON chronoq.wheel FOR EACH ROW
    WHEN (NEW.dispatched_at IS DISTINCT FROM OLD.dispatched_at AND NEW.dispatched_at IS NOT NULL)
    EXECUTE FUNCTION test_record_dispatch();
"""


class Fleet:
    """Timers and workers as real processes, any of which the test may SIGKILL and restart."""

    def __init__(self, spawn, queue: str) -> None:
        self.spawn = spawn
        self.queue = queue
        self.started = 0

    async def timer(self) -> Process:
        self.started += 1
        # A killed worker's runs are published again 2 s after their timeout.
        process = self.spawn("timer", name=f"timer{self.started}", CHRONOQ_REDISPATCH_AFTER="2")
        await process.wait_for_log("timer_started")
        return process

    async def worker(self) -> Process:
        self.started += 1
        process = self.spawn("worker", "tests.handlers:worker", "--queue", self.queue, name=f"worker{self.started}",
                             CHRONOQ_CONCURRENCY="8", CHRONOQ_BATCH_SIZE="4")
        await process.wait_for_log("worker_started")
        return process


async def _most_at_once(db: asyncpg.Connection) -> int:
    """The most handlers inside at one instant, from their own records."""
    return await db.fetchval("""
        SELECT max((SELECT count(*) FROM test_runs o WHERE o.started_at <= r.started_at AND o.finished_at > r.started_at))
        FROM test_runs r""")


async def test_max_running_holds_across_three_timers_and_four_workers_killed_and_restarted(
        settings, spawn, producer: Producer, db: asyncpg.Connection) -> None:
    await db.execute(RUNS_TABLE)
    await producer.set_queue_limits("limited", max_running=5)
    fleet = Fleet(spawn, "limited")
    timers = [await fleet.timer() for _ in range(3)]
    workers = [await fleet.worker() for _ in range(4)]
    ids = [await producer.enqueue("limited", {"seconds": 0.2}, timeout=5) for _ in range(80)]

    async def some_ran() -> bool:
        return await db.fetchval("SELECT count(*) FROM test_runs") >= 20

    await eventually(some_ran, timeout=60, what="20 runs")
    timers[0].kill()
    workers[0].kill()  # its runs hold their slots until their lease ends, then run again elsewhere
    timers[0], workers[0] = await fleet.timer(), await fleet.worker()
    summary = await all_finished(producer, ids, timeout=120)
    assert summary["succeeded"] == 80
    assert await db.fetchval("SELECT count(DISTINCT occurrence_key) FROM test_runs") == 80
    assert await db.fetchval("SELECT count(*) FROM test_runs") == 80  # no effect twice
    at_once = await _most_at_once(db)
    assert 2 <= at_once <= 5, at_once
    assert len(set(await db.fetchval("SELECT array_agg(DISTINCT pid) FROM test_runs"))) >= 2  # spread over workers


async def test_a_rate_limit_holds_in_every_window_across_three_timers(
        settings, spawn, producer: Producer, db: asyncpg.Connection) -> None:
    await db.execute(RUNS_TABLE)
    await db.execute(DISPATCHES_TABLE)
    await producer.set_queue_limits("limited", rate=(20, timedelta(seconds=1)))
    fleet = Fleet(spawn, "limited")
    timers = [await fleet.timer() for _ in range(3)]
    for _ in range(2):
        await fleet.worker()
    ids = [await producer.enqueue("limited", {"seconds": 0}) for _ in range(70)]

    async def some_dispatched() -> bool:
        return await db.fetchval("SELECT count(*) FROM test_dispatches") >= 25

    await eventually(some_dispatched, timeout=60, what="25 dispatches")
    timers[1].kill()
    await fleet.timer()
    summary = await all_finished(producer, ids, timeout=120)
    assert summary["succeeded"] == 70
    most_in_a_window = await db.fetchval("""
        SELECT max((SELECT count(*) FROM test_dispatches o WHERE o.at >= d.at AND o.at < d.at + interval '1 second'))
        FROM test_dispatches d""")
    assert most_in_a_window <= 20
    # 70 dispatches at 20 a second: the first 20 at once, the last no sooner than 3 s later.
    span = await db.fetchval("SELECT extract(epoch FROM max(at) - min(at)) FROM test_dispatches")
    assert span >= 3.0, span
    assert await db.fetchval("SELECT count(*) FROM test_runs") == 70


async def test_the_wheel_says_when_a_limited_queue_has_room(settings, producer: Producer, db: asyncpg.Connection) -> None:
    """What a timer reads before it sleeps: 0 while a limited queue has due rows and room, None
    while every running slot is taken (a finished run notifies), the time until the rate
    window has room; and the claim that holds the queue takes only what the limits leave."""
    await producer.set_queue_limits("reports", max_running=1)
    await producer.enqueue_many([{"queue": "reports", "payload": {"n": n}} for n in range(3)])
    assert await dispatch_once(settings) == 3  # met by the claim of free rows: marked controlled, not published
    assert await db.fetchval("SELECT count(*) FROM chronoq.wheel WHERE controlled AND dispatched_at IS NULL") == 3
    assert (await wheel.next_due(db, count_backlog=True)).controls_due_in == 0
    assert (await wheel.next_due(db, count_backlog=True)).backlog == 0  # free rows only

    async def claim_limited() -> list[str]:
        async with db.transaction():
            locked = await wheel.lock_controlled_queues(db)
            rows = await wheel.claim_limited(db, locked, 10)
            await wheel.mark_dispatched(db, [r["occurrence_key"] for r in rows], [timedelta(minutes=5)] * len(rows))
        return [r["occurrence_key"] for r in rows]

    assert len(await claim_limited()) == 1  # room for one
    assert (await wheel.next_due(db, count_backlog=False)).controls_due_in is None
    assert await claim_limited() == []
    await producer.set_queue_limits("reports", rate=(1, timedelta(seconds=10)))  # running no longer limited
    assert (await wheel.next_due(db, count_backlog=False)).controls_due_in == 0
    assert len(await claim_limited()) == 1
    assert 9 < (await wheel.next_due(db, count_backlog=False)).controls_due_in <= 10
    await producer.pause_queue("reports")
    assert (await wheel.next_due(db, count_backlog=False)).controls_due_in is None


async def test_pauses_and_resumes_racing_the_timers_strand_nothing(settings, producer: Producer, db: asyncpg.Connection) -> None:
    """Rows are marked controlled by claims while the queue is paused and resumed under them
    (and limited, then not): when the queue ends free, every row is free again and every job ran
    once."""
    worker = Worker()
    ran: list[int] = []

    @worker.handler("toggled")
    async def toggled(ctx: JobContext, payload: dict) -> None:
        ran.append(payload["n"])

    async def claims_met_this_round() -> bool:
        """No due row of the queue is left that no claim has met (in whatever state it found the queue)."""
        return await db.fetchval("SELECT count(*) FROM chronoq.wheel WHERE queue = 'toggled' AND NOT controlled"
                                 " AND dispatched_at IS NULL AND due_at <= now()") == 0

    ids: list[int] = []
    async with running(Timer(settings)), running(Timer(settings)), running(WorkerService(worker, settings)):
        for round_ in range(15):
            ids += await producer.enqueue_many([{"queue": "toggled", "payload": {"n": len(ids) + n}} for n in range(10)])
            if round_ % 3 == 2:
                await producer.set_queue_limits("toggled", max_running=2)
                await producer.set_queue_limits("toggled")
            elif round_ % 2:
                await producer.pause_queue("toggled")
            else:
                await producer.resume_queue("toggled")
            await eventually(claims_met_this_round, timeout=30, what="the claims to meet this round's rows")
        await producer.resume_queue("toggled")
        await producer.set_queue_limits("toggled")
        summary = await all_finished(producer, ids)
    assert summary["succeeded"] == 150
    assert sorted(ran) == list(range(150))
    assert await db.fetchval("SELECT count(*) FROM chronoq.wheel WHERE controlled") == 0
    assert await db.fetchval("SELECT count(*) FROM chronoq.queue_controls") == 0


async def test_a_limited_queues_rows_come_with_the_columns_of_free_rows(db: asyncpg.Connection) -> None:
    """The batch screens and publishes both kinds of rows the same way."""
    def columns(statement: str, look: set[str]) -> list[str]:
        return [a.name for a in attributes[statement] if a.name not in look]

    attributes = {name: (await db.prepare(query(name))).get_attributes() for name in ("claim_due", "claim_limited")}
    assert columns("claim_due", {"next_due_in", "due_now"}) == columns("claim_limited", set())


async def test_a_timer_killed_with_a_limited_queues_batch_confirmed_but_not_committed_loses_nothing(
        settings, spawn, producer: Producer, db: asyncpg.Connection) -> None:
    """The batch's claim, its recorded dispatches and its lock on the queue roll back with the
    dead timer's connection: the rows are due again, and the next timer dispatches them within
    the limit. The copies the dead timer published are dropped by the workers' fence."""
    await db.execute(RUNS_TABLE)
    await producer.set_queue_limits("limited", max_running=2, rate=(100, timedelta(seconds=1)))
    ids = [await producer.enqueue("limited", {"seconds": 0.3}) for _ in range(6)]
    doomed = spawn("timer", name="doomed-timer", CHRONOQ_FAILPOINTS="timer.after_confirm=kill")
    assert await doomed.exited() == -9  # died after the broker confirmed its limited batch
    assert await db.fetchval("SELECT count(*) FROM chronoq.wheel WHERE dispatches > 0") == 0
    assert await db.fetchval("SELECT count(*) FROM chronoq.queue_dispatches") == 0
    fleet = Fleet(spawn, "limited")
    await fleet.timer()
    await fleet.worker()
    summary = await all_finished(producer, ids)
    assert summary["succeeded"] == 6
    assert await db.fetchval("SELECT count(*) FROM test_runs") == 6  # each once
    assert await _most_at_once(db) <= 2
