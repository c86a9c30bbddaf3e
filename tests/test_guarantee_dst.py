"""Cron ticks across daylight-saving transitions, through a real timer and the wheel: a daily
02:30 job in Europe/Berlin whose head is set back before the zone's last spring-forward and
fall-back, then backfilled by the timer up to the database's now. Expected instants are worked
out here from the zone's rules, apart from the cron module."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from chronoq import JobContext, Producer, Worker
from chronoq._store import clock
from chronoq.consumer.service import WorkerService
from chronoq.timer import Timer
from tests.harness import eventually, running

ZONE = ZoneInfo("Europe/Berlin")
WALL = time(2, 30)  # inside Berlin's spring-forward gap (02:00-03:00) and its fall-back fold


def transitions(today: date) -> tuple[date, date]:
    """The last spring-forward and the last fall-back day before ``today``."""
    gap = fold = None
    for n in range(2, 400):
        day = today - timedelta(days=n)
        before = datetime.combine(day - timedelta(days=1), time(12), ZONE).utcoffset()
        after = datetime.combine(day, time(12), ZONE).utcoffset()
        assert before is not None and after is not None
        if after > before and gap is None:
            gap = day
        if after < before and fold is None:
            fold = day
    assert gap is not None and fold is not None, "Europe/Berlin had no DST transition in the last year"
    return gap, fold


def expected_instant(day: date) -> datetime:
    """When the 02:30 tick of ``day`` fires: 02:30 local; in the spring-forward gap, the first
    instant after it (03:00 summer time); in the fall-back fold, the first 02:30 only."""
    wall = datetime.combine(day, WALL)
    first = wall.replace(tzinfo=ZONE, fold=0).astimezone(UTC)
    if first.astimezone(ZONE).replace(tzinfo=None) != wall:  # 02:30 does not exist that day
        return datetime.combine(day, time(3), ZONE).astimezone(UTC)
    return min(first, wall.replace(tzinfo=ZONE, fold=1).astimezone(UTC))


async def test_a_zoned_cron_job_ticks_once_per_day_across_dst_through_the_timer(settings, producer: Producer, db) -> None:
    worker = Worker()
    runs: list[datetime] = []

    @worker.handler("dst")
    async def record(ctx: JobContext, payload: dict) -> None:
        runs.append(ctx.fire_at)

    db_now: datetime = await clock.db_now(db)
    gap, fold = transitions(db_now.astimezone(ZONE).date())
    start = min(gap, fold) - timedelta(days=2)
    job_id = await producer.schedule("dst", {}, cron="30 2 * * *", timezone="Europe/Berlin", misfire="backfill",
                                     max_backfill=1000, misfire_grace=60)
    # Set the head back to the 02:30 tick two days before the earlier transition.
    first = expected_instant(start)
    await db.execute(
        "UPDATE chronoq.wheel SET fire_at = $2, run_at = $2, due_at = now(),"
        " occurrence_key = chronoq.occurrence_key(job_id, $2) WHERE job_id = $1 AND head", job_id, first)
    days = (db_now.astimezone(ZONE).date() - start).days + 1
    expected = [t for t in (expected_instant(start + timedelta(days=n)) for n in range(days)) if t <= db_now]

    async with running(Timer(settings)), running(WorkerService(worker, settings)):

        async def all_ran() -> bool:
            return len(runs) >= len(expected)

        await eventually(all_ran, timeout=120, what=f"{len(expected)} backfilled ticks")
        results = await db.fetch("SELECT fire_at, state FROM chronoq.results WHERE job_id = $1 ORDER BY fire_at", job_id)
    assert max(Counter(runs).values()) == 1
    # (A tick due while the test runs may follow: it is not part of the backfill.)
    assert [t for t in sorted(runs) if t <= db_now] == expected
    backfilled = [r for r in results if r["fire_at"] <= db_now]
    assert [r["fire_at"] for r in backfilled] == expected and {r["state"] for r in backfilled} == {"succeeded"}
    local = {t.astimezone(ZONE).date(): t.astimezone(ZONE) for t in expected}
    assert (local[gap].hour, local[gap].minute) == (3, 0)  # the gap's tick at its end
    assert (local[fold].hour, local[fold].minute, local[fold].fold) == (2, 30, 0)  # once, summer time
    assert local[fold].utcoffset() == timedelta(hours=2)
    (head,) = await db.fetch("SELECT fire_at FROM chronoq.wheel WHERE job_id = $1 AND head", job_id)
    assert head["fire_at"] == next(t for t in (expected_instant(expected[-1].astimezone(ZONE).date() + timedelta(days=n))
                                               for n in range(1, 3)) if t > db_now)
