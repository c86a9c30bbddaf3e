"""Recurring jobs against the real services: the tick ledger, missed-run and overlap policies,
pause/resume, idempotent schedules, timers stopped and restarted as real processes."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from chronoq import InvalidJobError, JobContext, Producer, Worker
from chronoq._runtime.hooks import Hooks
from chronoq._store import wheel
from chronoq._store.clock import db_now
from chronoq.consumer.service import WorkerService
from chronoq.schemas.cron import CronSchedule
from chronoq.timer import Timer
from tests.conftest import child_env
from tests.harness import Process, all_finished, dispatch_once, eventually, running

EVERY_SECOND = "* * * * * *"


async def until_db_time(db: asyncpg.Connection, moment: datetime, *, timeout: float = 60) -> None:
    """Wait until the database's clock has passed ``moment`` (ticks are due by that clock)."""

    async def passed() -> bool:
        return await db_now(db) > moment

    await eventually(passed, timeout=timeout, what=f"database time {moment.isoformat()}")


def recorder() -> tuple[Worker, list[tuple[int, datetime]]]:
    worker = Worker()
    runs: list[tuple[int, datetime]] = []

    @worker.handler("ticks")
    async def tick(ctx: JobContext, payload: dict) -> None:
        runs.append((ctx.job_id, ctx.fire_at))

    return worker, runs


async def assert_ledger_has_no_holes(producer: Producer, job_id: int, cron: str, timezone: str = "UTC") -> list:
    """Every nominal tick from the first to the last in the ledger is there exactly once."""
    ticks = await producer.ticks(job_id, limit=100_000)
    fired = [t.fire_at for t in ticks]
    assert fired == sorted(set(fired)), "a tick appears twice or out of order"
    expected = [fired[0], *CronSchedule.parse(cron, timezone).ticks_between(fired[0], fired[-1], 100_000)]
    assert fired == expected, f"holes: {sorted(set(expected) - set(fired))[:5]}"
    return ticks


async def test_every_tick_runs_once_with_two_timers(settings, producer: Producer, db, tmp_path) -> None:
    worker, runs = recorder()
    jobs = [await producer.schedule("ticks", {"n": n}, cron=EVERY_SECOND, misfire_grace=2) for n in range(3)]
    timers = [Process(["timer"], child_env(settings), tmp_path / f"timer-{n}.log") for n in range(2)]
    try:
        for t in timers:
            await t.wait_for_log("timer_started")
        async with running(WorkerService(worker, settings)):
            start = await db_now(db)
            await until_db_time(db, start + timedelta(seconds=4))

            async def ran_four() -> bool:
                return all(sum(1 for j, _ in runs if j == job) >= 4 for job in jobs)

            await eventually(ran_four, what="four ticks of every job")
        assert [t.terminate() for t in timers] == [0, 0]
    finally:
        for t in timers:
            t.close()
    counts = Counter(runs)
    assert max(counts.values()) == 1, [k for k, v in counts.items() if v > 1]
    for job in jobs:
        ticks = await assert_ledger_has_no_holes(producer, job, EVERY_SECOND)
        ended = [t for t in ticks if t.state not in ("scheduled", "due", "dispatched")]
        assert {t.state for t in ended} == {"succeeded"}, ended


@pytest.mark.timeout(180)
async def test_missed_run_policies_after_all_timers_were_down(settings, producer: Producer, db, tmp_path) -> None:
    worker, runs = recorder()
    grace = timedelta(milliseconds=500)
    jobs = {
        policy: await producer.schedule("ticks", {}, cron=EVERY_SECOND, misfire=policy, misfire_grace=grace, max_backfill=3)
        for policy in ("skip", "run_once", "backfill")
    }
    env = child_env(settings)
    async with running(WorkerService(worker, settings)):
        first = Process(["timer"], env, tmp_path / "timer-1.log")
        try:
            await first.wait_for_log("timer_started")
            started = await db_now(db)

            async def kept_up() -> bool:
                return all(any(f > started + timedelta(seconds=1) for j, f in runs if j == job) for job in jobs.values())

            # Every job ran a tick on time, so no backfill budget spent at start-up carries into
            # the outage (a tick run on time renews it): on a loaded machine the first ticks can
            # be judged missed.
            await eventually(kept_up, what="every job to run on time before the outage")
            await until_db_time(db, started + timedelta(seconds=2))
            assert first.kill() == -9  # every timer gone
        finally:
            first.close()
        stopped = await db_now(db)
        await until_db_time(db, stopped + timedelta(seconds=6))  # the outage: six ticks or more
        restarted = await db_now(db)
        second = Process(["timer"], env, tmp_path / "timer-2.log")
        try:
            await second.wait_for_log("timer_started")
            await until_db_time(db, restarted + timedelta(seconds=3))

            async def caught_up() -> bool:
                return all(any(f > restarted + timedelta(seconds=1) for j2, f in runs if j2 == j) for j in jobs.values())

            await eventually(caught_up, what="every job to run on time again")
            assert second.terminate() == 0
        finally:
            second.close()

    # Ticks certainly missed: due while no timer ran, and over a second late at any claim after.
    outage = CronSchedule.parse(EVERY_SECOND).ticks_between(stopped, restarted - timedelta(seconds=1), 100)
    assert len(outage) >= 5
    for policy, job_id in jobs.items():
        ticks = await assert_ledger_has_no_holes(producer, job_id, EVERY_SECOND)
        by_time = {t.fire_at: t for t in ticks}
        after_stop = [t for t in ticks if t.fire_at > stopped]
        assert all(t in by_time for t in outage)
        if policy == "skip":
            assert all((by_time[t].state, by_time[t].reason) == ("skipped", "misfire") for t in outage)
        elif policy == "run_once":
            coalesced = {t.detail.rsplit(" ", 1)[-1] for t in after_stop if t.reason == "misfire"}
            (latest,) = coalesced  # every skipped tick names the one that ran in its place
            ran = by_time[datetime.fromisoformat(latest)]
            assert ran.state == "succeeded" and ran.fire_at >= outage[-1]
            before = [t for t in after_stop if t.fire_at < ran.fire_at]
            assert before and all((t.state, t.reason) == ("skipped", "misfire") for t in before)
        else:
            first_three = after_stop[:3]
            assert [t.state for t in first_three] == ["succeeded"] * 3  # oldest first, up to the cap
            rest = [by_time[t] for t in outage if t > first_three[-1].fire_at]
            assert rest and all((t.state, t.reason) == ("skipped", "backfill_cap") for t in rest)


async def test_overlap_skip_with_a_handler_slower_than_the_interval(settings, producer: Producer, db) -> None:
    worker = Worker()
    running_now: list[int] = []
    overlaps: list[int] = []
    finished: list[datetime] = []

    @worker.handler("slow-ticks")
    async def slow(ctx: JobContext, payload: dict) -> None:
        if running_now:
            overlaps.append(ctx.job_id)
        running_now.append(ctx.job_id)
        await asyncio.sleep(2.2)
        running_now.remove(ctx.job_id)
        finished.append(ctx.fire_at)

    job_id = await producer.schedule("slow-ticks", {}, cron=EVERY_SECOND, overlap="skip", misfire_grace=2)
    async with running(Timer(settings)), running(WorkerService(worker, settings)):

        async def two_done() -> bool:
            return len(finished) >= 2

        await eventually(two_done, what="two slow occurrences to finish")
    assert overlaps == []
    ticks = await assert_ledger_has_no_holes(producer, job_id, EVERY_SECOND)
    reasons = Counter(t.reason for t in ticks if t.state == "skipped")
    assert reasons["overlap"] >= 2 and set(reasons) == {"overlap"}


async def test_pause_records_skipped_ticks_and_resume_continues(settings, producer: Producer, db) -> None:
    job_id = await producer.schedule("ticks", {}, cron="*/10 * * * *")  # every ten minutes
    assert await producer.pause(job_id) is True
    assert await producer.pause(job_id) is False
    (head,) = await producer.ticks(job_id)
    assert head.state == "paused"
    # Pretend the pause lasted an hour: the head's tick is an hour old when the job resumes.
    await db.execute(
        "UPDATE chronoq.wheel SET fire_at = fire_at - interval '1 hour',"
        " occurrence_key = chronoq.occurrence_key(job_id, fire_at - interval '1 hour') WHERE job_id = $1", job_id)
    assert await producer.resume(job_id) is True
    ticks = await assert_ledger_has_no_holes(producer, job_id, "*/10 * * * *")
    paused = [t for t in ticks if t.state == "skipped"]
    assert len(paused) >= 6 and {t.reason for t in paused} == {"paused"}
    assert ticks[-1].state == "scheduled" and ticks[-1].fire_at > await db_now(db)
    assert (await producer.get(job_id)).state == "active"


async def test_a_tick_claimed_while_paused_is_recorded_paused(settings, producer: Producer, db) -> None:
    job_id = await producer.schedule("ticks", {}, cron=EVERY_SECOND)
    await db.execute("UPDATE chronoq.jobs SET state = 'paused' WHERE id = $1", job_id)  # a pause racing the claim
    await db.execute("UPDATE chronoq.wheel SET due_at = now() WHERE job_id = $1", job_id)
    assert await dispatch_once(settings) == 1
    first, nxt = await producer.ticks(job_id)
    assert (first.state, first.reason) == ("skipped", "paused")
    assert nxt.state == "paused"


async def test_schedule_is_idempotent_by_key_and_a_redeclared_cron_applies_from_the_next_tick(producer: Producer, db) -> None:
    first = await producer.schedule("reports", {"v": 1}, cron="0 9 * * *", timezone="Europe/Berlin", key="daily-report")
    again = await producer.schedule("reports", {"v": 1}, cron="0 9 * * *", timezone="Europe/Berlin", key="daily-report")
    assert first == again
    assert await db.fetchval("SELECT count(*) FROM chronoq.jobs") == 1
    (head,) = await producer.ticks(first)
    local = head.fire_at.astimezone(ZoneInfo("Europe/Berlin"))
    assert (local.hour, local.minute) == (9, 0)

    changed = await producer.schedule("reports", {"v": 2}, cron="30 7 * * *", timezone="Europe/Berlin", key="daily-report")
    assert changed == first
    job = await producer.get(first)
    assert job.payload == {"v": 2}
    (head,) = await producer.ticks(first)
    local = head.fire_at.astimezone(ZoneInfo("Europe/Berlin"))
    assert (local.hour, local.minute) == (7, 30)
    assert await db.fetchval("SELECT count(*) FROM chronoq.wheel WHERE head") == 1


async def test_reschedule_and_cancel(producer: Producer, db) -> None:
    cron_job = await producer.schedule("reports", {}, cron="0 * * * *")
    await producer.reschedule(cron_job, cron="15 * * * *")
    (head,) = await producer.ticks(cron_job)
    assert head.fire_at.minute == 15
    once = await producer.enqueue("emails", {}, delay=3600)
    new_time = (await db_now(db)) + timedelta(hours=5)
    await producer.reschedule(once, run_at=new_time)
    (occurrence,) = (await producer.get(once)).occurrences
    assert occurrence.fire_at == new_time
    assert await producer.cancel(cron_job) is True
    ticks = await producer.ticks(cron_job)
    assert [t.state for t in ticks] == ["cancelled"]
    with pytest.raises(Exception, match="cancelled"):
        await producer.pause(cron_job)


BAD_SCHEDULES = [
    pytest.param({"cron": "* * * *"}, "cron", id="four-fields"),
    pytest.param({"cron": "* * * * * * *"}, "cron", id="seven-fields"),
    pytest.param({"cron": "60 * * * *"}, "cron", id="minute-60"),
    pytest.param({"cron": "*/0 * * * *"}, "cron", id="step-zero"),
    pytest.param({"cron": "5-1 * * * *"}, "cron", id="reversed-range"),
    pytest.param({"cron": "every day at noon"}, "cron", id="garbage"),
    pytest.param({"cron": "1," * 5000 + "1 * * * *"}, "cron", id="10kb"),
    pytest.param({"cron": "0 0 30 2 *"}, "cron", id="never-fires"),
    pytest.param({"cron": "@reboot"}, "cron", id="reboot"),
    pytest.param({"cron": ""}, "cron", id="empty"),
    pytest.param({"timezone": "Mars/Olympus"}, "timezone", id="unknown-zone"),
    pytest.param({"timezone": "../../etc/passwd"}, "timezone", id="path-zone"),
    pytest.param({"timezone": ""}, "timezone", id="empty-zone"),
    pytest.param({"max_backfill": -1}, "max_backfill", id="negative-backfill"),
    pytest.param({"misfire_grace": -5}, "misfire_grace", id="negative-grace"),
    pytest.param({"misfire": "sometimes"}, "misfire", id="unknown-policy"),
    pytest.param({"overlap": "queue"}, "overlap", id="unknown-overlap"),
]


@pytest.mark.parametrize(("options", "field"), BAD_SCHEDULES)
async def test_bad_schedules_are_refused_and_nothing_is_stored(producer: Producer, db, options, field) -> None:
    options = {"cron": "0 9 * * *", **options}
    with pytest.raises(InvalidJobError) as caught:
        await producer.schedule("reports", {}, **options)
    assert caught.value.field == field, str(caught.value)
    assert len(str(caught.value)) < 400
    assert await db.fetchval("SELECT count(*) FROM chronoq.jobs") == 0


async def test_a_one_shot_job_claimed_too_late_follows_its_misfire_policy(settings, producer: Producer, db) -> None:
    worker, runs = recorder()
    an_hour_ago = (await db_now(db)) - timedelta(hours=1)
    skipped = await producer.enqueue("ticks", {}, run_at=an_hour_ago, misfire="skip", misfire_grace=60)
    ran = await producer.enqueue("ticks", {}, run_at=an_hour_ago)  # run_once: late is better than never
    async with running(Timer(settings)), running(WorkerService(worker, settings)):
        await all_finished(producer, [skipped, ran])
    assert [j for j, _ in runs] == [ran]
    job = await producer.get(skipped)
    assert (job.state, job.occurrences[0].reason) == ("skipped", "misfire")


async def test_a_paused_one_shot_job_waits_and_runs_after_resume(settings, producer: Producer, db) -> None:
    worker, runs = recorder()
    job_id = await producer.enqueue("ticks", {}, delay=timedelta(milliseconds=200))
    assert await producer.pause(job_id) is True
    timer = Timer(settings)
    await timer.start()
    try:
        await until_db_time(db, (await db_now(db)) + timedelta(milliseconds=400))
        assert await timer.run_once() == 0  # parked: nothing due
    finally:
        await timer.close()
    assert (await producer.get(job_id)).state == "paused"
    assert await producer.resume(job_id) is True
    async with running(Timer(settings)), running(WorkerService(worker, settings)):
        await all_finished(producer, [job_id])
    assert [j for j, _ in runs] == [job_id]


class _Looks(Hooks):
    """Counts the timer's looks at the wheel that counted its backlog (the first, then at most one a second)."""

    def __init__(self) -> None:
        self.looks = 0

    def due_backlog(self, rows: int) -> None:
        self.looks += 1


async def test_a_timer_whose_wheel_holds_only_paused_jobs_finds_nothing_to_wait_for(
    settings, producer: Producer, db, caplog: pytest.LogCaptureFixture
) -> None:
    worker, runs = recorder()
    job_id = await producer.schedule("ticks", {}, cron=EVERY_SECOND)
    assert await producer.pause(job_id) is True
    # Its head is parked at 'infinity', from which no wait can be taken: the timer's look at the
    # wheel failed on it, and the timer retried it in a tight loop, claiming nothing.
    due_in = (await wheel.next_due(db, count_backlog=False)).due_in
    assert due_in is None
    now_job = await producer.enqueue("ticks", {})
    async with db.transaction():  # what a batch's claim sees of the rest of the wheel: a parked row
        (claimed,) = await wheel.claim_due(db, 10)
        assert claimed["job_id"] == now_job and claimed["next_due_in"] is None
    caplog.set_level(logging.WARNING, logger="chronoq.timer")
    hooks = _Looks()
    async with running(Timer(settings, hooks=hooks)), running(WorkerService(worker, settings)):

        async def looked() -> bool:
            return hooks.looks >= 1

        await eventually(looked, what="the timer to look at the wheel")
        assert await producer.resume(job_id) is True

        async def ran() -> bool:
            return {now_job, job_id} <= {j for j, _ in runs}

        await eventually(ran, what="the due job and a tick of the resumed one to run")
    failures = [r.getMessage() for r in caplog.records
                if r.levelno >= logging.ERROR or getattr(r, "action", None) == "timer_retry"]
    assert failures == []


async def test_a_schedule_in_a_paused_queue_waits_and_its_late_ticks_follow_the_misfire_policy(
        settings, producer: Producer, db) -> None:
    """A paused queue holds a schedule's tick as it comes due; on resume the tick is late, and
    the job's missed-run policy judges it like any late tick, with nothing missing in the ledger."""
    worker, runs = recorder()
    assert await producer.pause_queue("ticks") is True
    job_id = await producer.schedule("ticks", {}, cron=EVERY_SECOND, misfire="skip",
                                     misfire_grace=timedelta(milliseconds=500))
    first = (await producer.ticks(job_id))[0].fire_at
    async with running(Timer(settings)), running(WorkerService(worker, settings)):
        async def held() -> bool:
            return (await producer.get(job_id)).occurrences[0].state == "deferred"

        await eventually(held, what="the tick held back by the paused queue")
        await until_db_time(db, first + timedelta(seconds=2))
        assert runs == []
        resumed_at = await db_now(db)
        assert await producer.resume_queue("ticks") is True

        async def ran_again() -> bool:
            return len(runs) >= 2

        await eventually(ran_again, what="ticks after the resume")
    assert all(fire_at > resumed_at - timedelta(seconds=1) for _, fire_at in runs)
    ticks = await assert_ledger_has_no_holes(producer, job_id, EVERY_SECOND)
    assert (ticks[0].fire_at, ticks[0].state, ticks[0].reason) == (first, "skipped", "misfire")
