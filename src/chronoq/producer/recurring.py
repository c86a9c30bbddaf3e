"""Recurring jobs and job lifecycle on the producer side: schedule (idempotent by key), pause,
resume, reschedule, and the tick ledger.

Ticks are computed against the database's clock (``now()`` read in the same transaction), never
the caller's, so a producer on a skewed host cannot make a job fire early or skip a tick.
"""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg

from chronoq._store import schedules as store
from chronoq._store.connection import Connection
from chronoq.errors import InvalidJobError, JobNotFoundError, JobStateError
from chronoq.schemas.cron import CronSchedule
from chronoq.schemas.schedule import ScheduleSpec, parse_schedule
from chronoq.schemas.views import JobSummary, TickView

#: Ticks that fell while a job was paused are written to the ledger at resume, at most this
#: many per resume (a per-second job paused for a month would be 2.6 million rows).
MAX_PAUSED_TICKS_RECORDED = 100_000
INFINITY = datetime.max.replace(tzinfo=UTC)


async def schedule(conn: Connection, spec: ScheduleSpec) -> int:
    """Create the recurring job, or update the one with the same (queue, key); returns its id."""
    return await store.store_schedule(conn, spec)


async def _locked(conn: Connection, job_id: int) -> asyncpg.Record:
    job = await store.lock_job(conn, job_id)
    if job is None:
        raise JobNotFoundError(job_id)
    if job["state"] == "cancelled":
        raise JobStateError(f"job {job_id} is cancelled")
    return job


async def pause(conn: Connection, job_id: int) -> bool:
    """Stop a job's future ticks (they are recorded skipped, reason `paused`). True if it was
    active; a tick already dispatched still runs."""
    async with conn.transaction():
        job = await _locked(conn, job_id)
        if job["state"] == "paused":
            return False
        await store.set_state(conn, job_id, "paused")
        await store.park_head(conn, job_id)
    return True


async def resume(conn: Connection, job_id: int) -> bool:
    """Resume a paused job: ticks that fell while paused are recorded skipped (`paused`), the next
    one is scheduled. A paused one-shot job becomes due at its time again."""
    async with conn.transaction():
        job = await _locked(conn, job_id)
        if job["state"] != "paused":
            return False
        await store.set_state(conn, job_id, "active")
        head = await store.head(conn, job_id)
        if head is None:
            return True
        if job["kind"] == "once":
            await store.unpark_head(conn, job_id)
            return True
        cron = CronSchedule.parse(job["cron"], job["timezone"])
        now = await store.db_now(conn)
        fire_at = head["fire_at"]
        if fire_at > now:
            await store.unpark_head(conn, job_id)
            return True
        missed = [fire_at, *cron.ticks_between(fire_at, now, MAX_PAUSED_TICKS_RECORDED)]
        await store.record_paused_ticks(conn, job_id, job["queue"], missed)
        following = cron.next_after(now if len(missed) <= MAX_PAUSED_TICKS_RECORDED else missed[-1])
        await store.replace_head(conn, job_id, job["queue"], following, following)
    return True


async def reschedule(conn: Connection, job_id: int, *, cron: str | None, timezone: str | None,
                     run_at: datetime | None) -> None:
    """New cron (and/or zone) for a recurring job, or a new run time for a one-shot job that has
    not been dispatched yet. Applies from the next tick."""
    async with conn.transaction():
        job = await _locked(conn, job_id)
        parked = job["state"] == "paused"
        if job["kind"] == "cron":
            if run_at is not None:
                raise InvalidJobError("run_at", "a recurring job is rescheduled with cron=..., not run_at")
            if cron is None and timezone is None:
                raise InvalidJobError("cron", "give a new cron expression or time zone")
            expression, zone = cron or job["cron"], timezone or job["timezone"]
            schedule_ = parse_schedule(expression, zone)
            await store.set_cron(conn, job_id, expression, zone)
            following = schedule_.next_after(await store.db_now(conn))
            await store.replace_head(conn, job_id, job["queue"], following, INFINITY if parked else following)
            return
        if run_at is None or cron is not None:
            raise InvalidJobError("run_at", "a one-shot job is rescheduled with run_at=...")
        if await store.head(conn, job_id) is None:
            raise JobStateError(f"job {job_id} has already been dispatched; enqueue a new one")
        await store.replace_head(conn, job_id, job["queue"], run_at, INFINITY if parked else run_at)


async def ticks(conn: Connection, job_id: int, since: datetime | None, limit: int) -> list[TickView]:
    rows = await store.ticks(conn, job_id, since or datetime.min.replace(tzinfo=UTC), limit)
    return [TickView(**dict(r)) for r in rows]


async def list_jobs(conn: Connection, queue: str | None, state: str | None, limit: int) -> list[JobSummary]:
    return [JobSummary(**dict(r)) for r in await store.list_jobs(conn, queue, state, limit)]
