"""What a claim tells the timer about the wheel besides its rows: when the next row is due and
whether due rows were left to others. After a batch that claimed rows the timer sleeps on this,
without asking the wheel again (timer/dispatch.py, timer/wakeups.py). An idle timer looks at the
wheel once per ``timer_max_idle`` with one statement and claims nothing, and that look still
finds a job whose NOTIFY was lost."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from chronoq import JobContext, Producer, Worker
from chronoq._runtime.hooks import Hooks
from chronoq._store import wheel
from chronoq._store.connection import connect
from chronoq.consumer.service import WorkerService
from chronoq.timer import Timer
from chronoq.timer.batch import Look
from chronoq.timer.wakeups import Wakeups
from tests.harness import all_finished, eventually, running

MAX_IDLE = timedelta(milliseconds=200)


def look_of(rows: list[asyncpg.Record]) -> Look:
    return Look(rows[0]["db_epoch"], rows[0]["next_due_in"], rows[0]["due_now"] > len(rows), time.monotonic())


async def test_a_claim_says_when_the_next_row_is_due_and_whether_it_left_due_rows(settings, producer: Producer) -> None:
    await producer.enqueue_many([{"queue": "now", "payload": {}}] * 2)
    await producer.enqueue("later", {}, delay=timedelta(hours=1))
    conn = await connect(settings.database_url)
    try:
        claim = conn.transaction()
        await claim.start()
        db_now = await conn.fetchval("SELECT extract(epoch FROM now())::float8")
        one = look_of(await wheel.claim_due(conn, 1))
        await claim.rollback()  # the rows stay due for the next claim
        assert one.others_due  # the second due row is beyond the limit
        assert one.due_in == pytest.approx(3600, abs=60)
        assert one.db_now == db_now  # the transaction's clock
        async with conn.transaction():
            both = await wheel.claim_due(conn, 5)
            assert len(both) == 2 and not look_of(both).others_due
            assert look_of(both).due_in == pytest.approx(3600, abs=60)
    finally:
        await conn.close()


async def test_a_claim_that_skips_rows_locked_by_another_batch_says_so(settings, producer: Producer) -> None:
    await producer.enqueue_many([{"queue": "now", "payload": {}}] * 2)
    first, second = await connect(settings.database_url), await connect(settings.database_url)
    try:
        async with first.transaction():
            assert len(await wheel.claim_due(first, 1)) == 1  # another timer's batch, in flight
            async with second.transaction():
                rows = await wheel.claim_due(second, 5)
                assert len(rows) == 1 and look_of(rows).others_due
                assert look_of(rows).due_in is None  # nothing due later
    finally:
        await first.close()
        await second.close()


class Counted:
    """The store's statement, run as it is, its calls counted."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
        self.calls = 0
        self._statement = getattr(wheel, name)
        monkeypatch.setattr(wheel, name, self)

    async def __call__(self, *args, **kwargs):
        self.calls += 1
        return await self._statement(*args, **kwargs)


async def test_an_idle_timer_looks_at_the_wheel_once_per_max_idle_and_claims_nothing(
    settings, producer: Producer, monkeypatch: pytest.MonkeyPatch
) -> None:
    await producer.enqueue("later", {}, delay=timedelta(days=1))  # the wheel is not empty; nothing is due
    looks, claims = Counted(monkeypatch, "next_due"), Counted(monkeypatch, "claim_due")
    idle = settings.model_copy(update={"timer_max_idle": MAX_IDLE})
    async with running(Timer(idle)):

        async def looked_five_times() -> bool:
            return looks.calls >= 5

        await eventually(looked_five_times, what="five looks at the wheel")
    assert claims.calls == 1  # the first batch, at start: none after a look that found nothing due


async def test_a_job_whose_notify_is_lost_is_found_by_the_next_look(
    settings, producer: Producer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Wakeups, "_on_notify", lambda *args: None)  # every NOTIFY lost
    worker = Worker()

    @worker.handler("reports")
    async def report(ctx: JobContext, payload: dict) -> None:
        return None

    idle = settings.model_copy(update={"timer_max_idle": MAX_IDLE})
    async with running(WorkerService(worker, idle)), running(Timer(idle)):
        job_id = await producer.enqueue("reports", {})
        summary = await all_finished(producer, [job_id], timeout=30)
    assert summary["succeeded"] == 1


async def test_only_a_sleep_of_the_whole_max_idle_asks_for_another_look_before_a_claim(settings) -> None:
    wakeups = Wakeups(settings.database_url, "chronoq-test-wakeups", 0.05, Hooks(), asyncio.Event())
    try:
        wakeups.look_begins()
        assert await wakeups.sleep_as_seen(time.time(), None, time.monotonic()) is True  # nothing due: look again
        wakeups.look_begins()
        assert await wakeups.sleep_as_seen(time.time(), 0.01, time.monotonic()) is False  # slept until a due time: claim
        wakeups.look_begins()
        wakeups.interrupt()
        assert await wakeups.sleep_as_seen(time.time(), None, time.monotonic()) is False  # woken: a NOTIFY, or stopping
    finally:
        await wakeups.close()


async def test_the_sleep_after_a_batch_counts_from_its_claim_not_from_its_commit(settings) -> None:
    """A claim saw the next row due in 50 ms; its batch then took 40 ms. The timer wakes at the
    due time, 10 ms after the batch, not 50 ms after it."""
    wakeups = Wakeups(settings.database_url, "chronoq-test-wakeups", 5.0, Hooks(), asyncio.Event())
    try:
        await wakeups.listen()  # open: the sleep plans its wake-up before it first yields
        wakeups.look_begins()
        seen_at = time.monotonic() - 0.040
        sleeping = asyncio.ensure_future(wakeups.sleep_as_seen(time.time(), 0.050, seen_at))
        await asyncio.sleep(0)  # the sleep has planned its wake-up
        assert wakeups._planned_wake == pytest.approx(seen_at + 0.050, abs=0.002)
        wakeups.interrupt()
        assert await sleeping is False
    finally:
        await wakeups.close()


async def test_a_schedules_next_tick_written_by_a_batch_is_claimed_on_time_without_a_notify(
    settings, producer: Producer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch writes the next tick of every schedule it judged: rows its claim could not see.
    The timer asks the wheel again before it sleeps, so each tick runs on time even with every
    NOTIFY lost and a long max idle."""
    monkeypatch.setattr(Wakeups, "_on_notify", lambda *args: None)  # every NOTIFY lost
    worker, lateness = Worker(), []

    @worker.handler("each-second")
    async def tick(ctx: JobContext, payload: dict) -> None:
        lateness.append((datetime.now(UTC) - ctx.run_at).total_seconds())  # one machine: one clock

    await producer.schedule("each-second", {}, cron="* * * * * *")
    patient = settings.model_copy(update={"timer_max_idle": timedelta(seconds=30)})
    async with running(WorkerService(worker, patient)), running(Timer(patient)):

        async def three_ticks() -> bool:
            return len(lateness) >= 3

        await eventually(three_ticks, what="three ticks", timeout=15)
    assert max(lateness[1:]) < 1.0  # the first may be late from start-up; none waited for the max idle
