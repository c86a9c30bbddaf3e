"""Schedules as users read them and steer them, against the real services: 6-field cron takes its
seconds first, ``@every`` intervals, the next ticks ``schedule`` returns, previews with DST marks,
manual runs (``trigger``) in the ledger, and cron jitter (due time moved, ledger and key nominal)."""

from __future__ import annotations

import itertools
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import orjson
import pytest

from chronoq import InvalidJobError, JobContext, JobNotFoundError, Producer, Worker
from chronoq._store.clock import db_now
from chronoq.cli.render import cron_ticks
from chronoq.consumer.service import WorkerService
from chronoq.errors import JobStateError
from chronoq.schemas.cron import CronSchedule
from chronoq.schemas.schedule import tick_due
from chronoq.schemas.submission import parse_submission
from chronoq.timer import Timer
from chronoq.timer.ticks import plan_head
from tests.conftest import child_env
from tests.harness import dispatch_once, eventually, running

BERLIN = ZoneInfo("Europe/Berlin")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def chronoq(settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "chronoq", *args], env=child_env(settings), capture_output=True,
                          text=True, timeout=60)


def recorder() -> tuple[Worker, list[tuple[int, datetime, str]]]:
    worker = Worker()
    runs: list[tuple[int, datetime, str]] = []

    @worker.handler("ticks")
    async def tick(ctx: JobContext, payload: object) -> None:
        runs.append((ctx.job_id, ctx.fire_at, ctx.idempotency_key))

    return worker, runs


def key(job_id: int, tick: datetime) -> str:
    return f"{job_id}@{tick.astimezone(UTC):%Y-%m-%dT%H:%M:%S.%fZ}"


# --- seconds first, @every --------------------------------------------------------------------


async def test_a_six_field_schedule_takes_its_seconds_first_end_to_end(settings, producer: Producer, db) -> None:
    worker, runs = recorder()
    job = await producer.schedule("ticks", {}, cron="*/2 * * * * *", misfire_grace=5)
    assert [t.at.second % 2 for t in job.next_ticks] == [0, 0, 0]
    async with running(Timer(settings)), running(WorkerService(worker, settings)):

        async def three() -> bool:
            return len(runs) >= 3

        await eventually(three, what="three ticks")
    fired = sorted(f for _, f, _ in runs)
    assert all(f.second % 2 == 0 and f.microsecond == 0 for f in fired), fired
    assert all(b - a == timedelta(seconds=2) for a, b in itertools.pairwise(fired)), fired
    assert all(k == key(job, f) for _, f, k in runs)


async def test_every_runs_on_multiples_of_its_interval_since_the_epoch(settings, producer: Producer) -> None:
    worker, runs = recorder()
    job = await producer.schedule("ticks", {}, cron="@every 3s", timezone="Europe/Berlin", misfire_grace=5)
    assert all(int(t.at.timestamp()) % 3 == 0 for t in job.next_ticks)
    async with running(Timer(settings)), running(WorkerService(worker, settings)):

        async def two() -> bool:
            return len(runs) >= 2

        await eventually(two, what="two ticks")
    assert all(f.timestamp() % 3 == 0 for _, f, _ in runs), runs


# --- what schedule returns, previews -------------------------------------------------------------


async def test_schedule_returns_the_id_with_the_next_three_ticks(producer: Producer, db) -> None:
    job = await producer.schedule("reports", {}, cron="0 9 * * MON-FRI", timezone="Europe/Berlin", key="daily")
    assert isinstance(job, int) and job.job_id == int(job)
    assert (await producer.get(job)).id == job  # the id works wherever an id did
    (head,) = await producer.ticks(job)
    ticks = job.next_ticks
    assert len(ticks) == 3 and ticks[0].at == head.fire_at
    assert [t.local.hour for t in ticks] == [9, 9, 9] and all(t.local.weekday() < 5 for t in ticks)
    expected = CronSchedule.parse("0 9 * * MON-FRI", "Europe/Berlin").preview(ticks[0].at - timedelta(microseconds=1), 3)
    assert ticks == tuple(expected)
    again = await producer.schedule("reports", {}, cron="0 9 * * MON-FRI", timezone="Europe/Berlin", key="daily")
    assert again == job and again.next_ticks == ticks


async def test_preview_applies_the_timers_dst_rules_and_marks_gaps_and_folds(producer: Producer, db) -> None:
    spring = await producer.preview("30 2 * * *", "Europe/Berlin", count=2, after=utc(2026, 3, 28, 12))
    assert [(t.at, t.local.isoformat(), t.gap, t.fold) for t in spring] == [
        (utc(2026, 3, 29, 1), "2026-03-29T03:00:00+02:00", True, False),
        (utc(2026, 3, 30, 0, 30), "2026-03-30T02:30:00+02:00", False, False)]
    autumn = await producer.preview("*/30 2 * * *", "Europe/Berlin", count=3, after=utc(2026, 10, 24, 23))
    # 02:00 and 02:30 happen twice on 2026-10-25: each runs once, in the first pass (CEST).
    assert [(t.at, t.local.utcoffset(), t.fold) for t in autumn] == [
        (utc(2026, 10, 25, 0), timedelta(hours=2), True), (utc(2026, 10, 25, 0, 30), timedelta(hours=2), True),
        (utc(2026, 10, 26, 1), timedelta(hours=1), False)]
    lines = cron_ticks([*spring[:1], *autumn[:1]])
    assert lines[0].startswith("2026-03-29T01:00:00Z  2026-03-29 03:00:00+0200 CEST  [gap: 02:30:00")
    assert "[fold: 02:00:00 happens twice" in lines[1]
    now = await db_now(db)
    default = await producer.preview("*/5 * * * * *", count=4)  # after the database's now
    assert len(default) == 4 and default[0].at > now and all(t.at.second % 5 == 0 for t in default)
    assert await db.fetchval("SELECT count(*) FROM chronoq.jobs") == 0


@pytest.mark.parametrize(("args", "field"), [
    (("0 0 30 2 *", "UTC", 5, None), "cron"),
    (("@every 0s", "UTC", 5, None), "cron"),
    (("* * * * *", "Mars/Olympus", 5, None), "timezone"),
    (("* * * * *", "UTC", 0, None), "count"),
    (("* * * * *", "UTC", 1001, None), "count"),
    (("* * * * *", "UTC", "3", None), "count"),
    (("* * * * *", "UTC", 3, datetime(2026, 1, 1)), "after"),
    ((5, "UTC", 3, None), "cron"),
])
async def test_preview_refuses_bad_input_naming_the_field(producer: Producer, args, field) -> None:
    with pytest.raises(InvalidJobError) as refused:
        await producer.preview(*args)
    assert refused.value.field == field, str(refused.value)


async def test_cli_schedule_prints_the_id_and_the_next_ticks_and_preview_stores_nothing(settings, producer, db) -> None:
    result = chronoq(settings, "schedule", "reports", "--cron", "0 30 9 * * *", "--tz", "Europe/Berlin")
    assert result.returncode == 0, result.stderr
    job_id = int(result.stdout)  # stdout is the id alone, for scripts
    lines = result.stderr.splitlines()
    assert lines[0] == f"next ticks of job {job_id}:" and len(lines) == 4
    assert all("09:30:00+0" in line for line in lines[1:]), lines
    stored = await db.fetchval("SELECT count(*) FROM chronoq.jobs")
    preview = chronoq(settings, "schedule", "--cron", "30 2 * * *", "--tz", "Europe/Berlin", "--preview", "3",
                      "--after", "2026-03-28T12:00:00Z")
    assert preview.returncode == 0, preview.stderr
    assert preview.stdout.splitlines() == [
        "2026-03-29T01:00:00Z  2026-03-29 03:00:00+0200 CEST  [gap: 02:30:00 does not exist on 2026-03-29, runs at "
        "the end of the gap]",
        "2026-03-30T00:30:00Z  2026-03-30 02:30:00+0200 CEST",
        "2026-03-31T00:30:00Z  2026-03-31 02:30:00+0200 CEST"]
    assert await db.fetchval("SELECT count(*) FROM chronoq.jobs") == stored
    for args, field in [(["--cron", "@daily"], "queue"), (["q", "--cron", "@daily", "--after", "2026-01-01T00:00:00Z"],
                                                          "after"),
                        (["--cron", "@daily", "--preview", "0"], "preview"),
                        (["q", "--cron", "0 * * * *", "--jitter", "2h"], "jitter"),
                        (["q", "--cron", "@daily", "--jitter", "-5s"], "jitter")]:
        refused = chronoq(settings, "schedule", *args)
        assert refused.returncode == 2 and field in refused.stderr, (args, refused.stderr)
    assert await db.fetchval("SELECT count(*) FROM chronoq.jobs") == stored


# --- manual runs ---------------------------------------------------------------------------------


async def test_trigger_runs_the_job_once_now_in_its_ledger_and_the_next_tick_still_runs(settings, producer, db) -> None:
    worker, runs = recorder()
    job = await producer.schedule("ticks", {}, cron="*/3 * * * * *", misfire_grace=5)
    (head,) = await producer.ticks(job)
    manual = await producer.trigger(job)
    assert manual.startswith(f"{job}@manual:")
    (still,) = [t for t in await producer.ticks(job) if not t.manual]
    assert still.fire_at == head.fire_at and still.state == "scheduled"  # the schedule is not disturbed
    async with running(Timer(settings)), running(WorkerService(worker, settings)):

        async def both_ran() -> bool:
            return {manual, key(job, head.fire_at)} <= {k for _, _, k in runs}

        await eventually(both_ran, what="the manual run and the next nominal tick")
    assert [k for _, _, k in runs].count(manual) == 1
    ledger = await producer.ticks(job)
    (run,) = [t for t in ledger if t.manual]
    assert (run.state, run.occurrence_key) == ("succeeded", manual)
    assert next(t.fire_at for t in ledger if not t.manual) == head.fire_at
    (shown,) = [o for o in (await producer.get(job)).occurrences if o.manual]
    assert (shown.occurrence_key, shown.state) == (manual, "succeeded")
    cli = chronoq(settings, "jobs", "ticks", str(job))
    assert "succeeded (manual run)" in cli.stdout


async def test_trigger_of_a_paused_job_runs_it_and_the_job_stays_paused(settings, producer: Producer, db) -> None:
    job = await producer.schedule("ticks", {}, cron="0 0 1 1 *")
    assert await producer.pause(job)
    cli = chronoq(settings, "jobs", "trigger", str(job))
    assert cli.returncode == 0 and f"manual run {job}@manual:" in cli.stdout, cli.stderr
    assert await dispatch_once(settings) == 1
    (occurrence,) = [o for o in (await producer.get(job)).occurrences if o.manual]
    assert occurrence.state == "dispatched"
    assert (await producer.get(job)).state == "paused"


async def test_trigger_refuses_one_shot_cancelled_and_unknown_jobs(settings, producer: Producer, db) -> None:
    once = await producer.enqueue("ticks", {}, delay=3600)
    with pytest.raises(JobStateError, match="one-shot"):
        await producer.trigger(once)
    cancelled = await producer.schedule("ticks", {}, cron="@hourly")
    await producer.cancel(cancelled)
    with pytest.raises(JobStateError, match="cancelled"):
        await producer.trigger(cancelled)
    with pytest.raises(JobNotFoundError):
        await producer.trigger(10**9)
    for bad in (0, "1", True):
        with pytest.raises(InvalidJobError) as refused:
            await producer.trigger(bad)  # type: ignore[arg-type]
        assert refused.value.field == "job_id"
    assert await db.fetchval("SELECT count(*) FROM chronoq.wheel WHERE occurrence_key LIKE '%@manual:%'") == 0
    missing = chronoq(settings, "jobs", "trigger", "999999")
    assert missing.returncode == 2 and "no job with id 999999" in missing.stderr


# --- jitter --------------------------------------------------------------------------------------


def test_jitter_offsets_are_deterministic_within_bounds_and_spread() -> None:
    tick = utc(2026, 12, 8, 9)
    offsets = [tick_due(job, tick, 30_000) - tick for job in range(1, 2001)]
    assert offsets == [tick_due(job, tick, 30_000) - tick for job in range(1, 2001)]
    assert all(timedelta(0) <= o < timedelta(seconds=30) for o in offsets)
    assert max(offsets) - min(offsets) > timedelta(seconds=29)  # spread over the window
    assert len({o.seconds for o in offsets}) == 30
    # One job's ticks get different offsets too; no jitter, no offset.
    assert len({tick_due(7, tick + timedelta(minutes=m), 30_000) - tick - timedelta(minutes=m) for m in range(50)}) > 40
    assert tick_due(7, tick, 0) == tick


def claimed_head(fire_at: datetime, now: datetime, *, jitter_ms: int, misfire: str = "skip") -> dict:
    return {"db_now": now, "job_state": "active", "fire_at": fire_at, "misfire_grace_ms": 1000, "kind": "cron",
            "misfire": misfire, "max_backfill": 100, "backfilled": 0, "overlap": "allow", "previous_running": False,
            "cron": "0 * * * *", "timezone": "UTC", "job_id": 42, "cron_jitter_ms": jitter_ms}


def test_missed_run_judgement_counts_from_the_nominal_tick_past_the_jitter_window() -> None:
    tick = utc(2026, 12, 8, 9)
    # Within jitter + grace of the nominal tick: on time, it runs.
    plan = plan_head(claimed_head(tick, tick + timedelta(seconds=30), jitter_ms=30_000))  # type: ignore[arg-type]
    assert plan.publish and not plan.skipped
    late = plan_head(claimed_head(tick, tick + timedelta(seconds=32), jitter_ms=30_000))  # type: ignore[arg-type]
    assert not late.publish and [s.reason for s in late.skipped] == ["misfire"]
    # The next head is the next nominal tick, due at its jittered time.
    assert plan.next_head == utc(2026, 12, 8, 10)
    assert plan.next_head_run_at == tick_due(42, utc(2026, 12, 8, 10), 30_000) != plan.next_head


def test_a_later_tick_whose_jittered_time_has_not_come_waits_as_the_next_head() -> None:
    tick = utc(2026, 12, 8, 9)
    following = utc(2026, 12, 8, 10)
    offset = tick_due(42, following, 3_600_000) - following
    now = following + offset / 2  # the next nominal tick has passed, its jittered time has not
    plan = plan_head(claimed_head(tick, now, jitter_ms=3_600_000, misfire="backfill"))  # type: ignore[arg-type]
    assert plan.publish and plan.extra_runs == [] and plan.next_head == following


async def test_jitter_moves_each_tick_due_time_and_keeps_the_ledger_and_key_nominal(settings, producer, db) -> None:
    worker, runs = recorder()
    jitter = timedelta(milliseconds=1900)
    job = await producer.schedule("ticks", {}, cron="*/2 * * * * *", jitter=jitter, misfire_grace=5)
    (head,) = await producer.ticks(job)
    row = await db.fetchrow("SELECT fire_at, run_at, due_at FROM chronoq.wheel WHERE job_id = $1", job)
    assert row["fire_at"] == head.fire_at and row["run_at"] == row["due_at"] == tick_due(job, head.fire_at, 1900)
    async with running(Timer(settings)), running(WorkerService(worker, settings)):

        async def three() -> bool:
            return len(runs) >= 3

        await eventually(three, what="three jittered ticks")
    assert all(f.second % 2 == 0 and f.microsecond == 0 and k == key(job, f) for _, f, k in runs), runs
    done = await db.fetch("SELECT fire_at, run_at, started_at, occurrence_key FROM chronoq.results WHERE job_id = $1 "
                          "AND state = 'succeeded'", job)
    assert len(done) >= 3
    for r in done:
        assert r["occurrence_key"] == key(job, r["fire_at"])
        assert r["run_at"] == tick_due(job, r["fire_at"], 1900)  # due at its jittered time
        assert r["started_at"] >= r["run_at"]  # and not started before it
    ledger = [t.fire_at for t in await producer.ticks(job)]
    assert ledger == [head.fire_at, *CronSchedule.parse("*/2 * * * * *").ticks_between(head.fire_at, ledger[-1], 100)]
    assert (await producer.get(job)).jitter_s == 1.9


@pytest.mark.parametrize(("options", "field"), [
    ({"cron": "0 * * * *", "jitter": timedelta(hours=2)}, "jitter"),
    ({"cron": "*/2 * * * * *", "jitter": 2.5}, "jitter"),
    ({"cron": "@every 10s", "jitter": 11}, "jitter"),
    ({"cron": "0 9 * * MON-FRI", "jitter": timedelta(days=2)}, "jitter"),  # weekdays are a day apart
    ({"cron": "@hourly", "jitter": -1}, "jitter"),
    ({"cron": "@hourly", "jitter": "30s"}, "jitter"),
    ({"cron": "@every 0s"}, "cron"),
    ({"cron": "@every 25h"}, "cron"),
    ({"cron": "@every 1.5h"}, "cron"),
    ({"cron": "0 0 * * * 30"}, "cron"),  # seconds first: 30 is a day of week
])
async def test_bad_jitter_and_intervals_are_refused_and_nothing_is_stored(producer: Producer, db, options, field) -> None:
    with pytest.raises(InvalidJobError) as refused:
        await producer.schedule("reports", {}, **options)
    assert refused.value.field == field, str(refused.value)
    assert await db.fetchval("SELECT count(*) FROM chronoq.jobs") == 0


async def test_a_jitter_that_fits_exactly_is_taken_and_reschedule_keeps_it_within_bounds(settings, producer, db) -> None:
    job = await producer.schedule("reports", {}, cron="*/10 * * * * *", jitter=10)
    with pytest.raises(InvalidJobError) as refused:
        await producer.reschedule(job, cron="*/5 * * * * *")
    assert refused.value.field == "jitter"
    assert (await producer.get(job)).cron == "*/10 * * * * *"
    await producer.reschedule(job, cron="*/20 * * * * *")
    row = await db.fetchrow("SELECT fire_at, run_at FROM chronoq.wheel WHERE job_id = $1 AND head", job)
    assert row["fire_at"].second % 20 == 0 and row["run_at"] == tick_due(job, row["fire_at"], 10_000)
    shown = chronoq(settings, "jobs", "show", str(job))
    assert "schedule: */20 * * * * * (UTC)  misfire=run_once  overlap=allow  jitter=10s" in shown.stdout, shown.stdout


def test_amqp_submissions_read_seconds_first_and_take_jitter_for_schedules_only() -> None:
    spec = parse_submission(orjson.dumps({"kind": "cron", "queue": "q", "cron": "*/5 * * * * *", "jitter_s": 4.5}))
    assert spec.jitter == timedelta(seconds=4.5)  # type: ignore[union-attr]
    # Seconds first over AMQP too: every 5 seconds.
    assert spec.schedule().next_after(utc(2026, 1, 1)) == utc(2026, 1, 1, 0, 0, 5)  # type: ignore[union-attr]
    for body, field in [({"kind": "cron", "queue": "q", "cron": "*/5 * * * * *", "jitter_s": 6}, "jitter_s"),
                        ({"kind": "cron", "queue": "q", "cron": "@hourly", "jitter_s": -1}, "jitter_s"),
                        ({"kind": "once", "queue": "q", "jitter_s": 5}, "jitter_s"),
                        ({"kind": "cron", "queue": "q", "cron": "@every 99h"}, "cron")]:
        with pytest.raises(InvalidJobError) as refused:
            parse_submission(orjson.dumps(body))
        assert refused.value.field == field, (body, str(refused.value))
