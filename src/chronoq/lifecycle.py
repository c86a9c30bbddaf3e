"""The rules of a job's life after it is stored: declare a recurring job (idempotent by key),
pause, resume, reschedule and trigger (a manual run). The Producer and the AMQP intake both go through here, so a
schedule submitted in any language obeys the same rules as one declared in Python.

Each change runs in one transaction with the job row locked, so changes to one job happen one at
a time. Ticks are computed against the database's clock (``clock.db_now``), never the caller's,
so a producer on a skewed host cannot make a job fire early or skip a tick.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import asyncpg

from chronoq._store import schedules as store
from chronoq._store.clock import db_now
from chronoq._store.connection import Connection
from chronoq._store.wheel import INFINITY
from chronoq.errors import InvalidJobError, JobNotFoundError, JobStateError
from chronoq.schemas.cron import CronSchedule
from chronoq.schemas.rules import short
from chronoq.schemas.schedule import ScheduleSpec, check_jitter, parse_schedule, tick_due

#: Ticks that fell while a job was paused are written to the ledger at resume, at most this
#: many per resume (a per-second job paused for a month would be 2.6 million rows).
MAX_PAUSED_TICKS_RECORDED = 100_000
#: Tries of a keyed declaration that meets a concurrent one inserting the same key.
_DECLARE_TRIES = 3


def head_due(run_at: datetime, *, paused: bool) -> datetime:
    """When a timer should judge a job's head: when its tick is due, or never while the job is paused."""
    return INFINITY if paused else run_at


async def _new_head(conn: Connection, job_id: int, queue: str, fire_at: datetime, jitter_ms: int, *,
                    paused: bool) -> None:
    """Make the nominal tick ``fire_at`` the job's head, due at the tick plus its jitter offset."""
    run_at = tick_due(job_id, fire_at, jitter_ms)
    await store.replace_head(conn, job_id, queue, fire_at, head_due(run_at, paused=paused), run_at)


async def schedule(conn: Connection, spec: ScheduleSpec) -> int:
    """Create the recurring job, or update the one with the same (queue, key); returns its id.
    A changed cron or zone applies from the next tick."""
    cron = spec.schedule()
    async with conn.transaction():
        for _ in range(_DECLARE_TRIES):
            if spec.key is not None:
                existing = await store.lock_keyed_job(conn, spec.queue, spec.key)
                if existing is not None:
                    return await _redeclare(conn, existing, spec, cron)
            new_id = await store.insert_cron_job(conn, spec)
            if new_id is not None:
                first = cron.next_after(await db_now(conn))
                await _new_head(conn, new_id, spec.queue, first, _ms(spec.jitter), paused=False)
                return new_id
            # A concurrent schedule() inserted the same key first; lock and update it.
    raise RuntimeError(f"schedule of key {short(spec.key)} found neither a new nor an existing job")


async def _redeclare(conn: Connection, existing: asyncpg.Record, spec: ScheduleSpec, cron: CronSchedule) -> int:
    job_id: int = existing["id"]
    if existing["kind"] != "cron":
        raise InvalidJobError("key", f"key {short(spec.key)} on queue {short(spec.queue)} belongs to a one-shot job {job_id}")
    if existing["state"] == "cancelled":
        raise JobStateError(f"job {job_id} (key {short(spec.key)}) is cancelled; use another key")
    await store.update_cron_job(conn, job_id, spec)
    if (existing["cron"], existing["timezone"], existing["cron_jitter_ms"]) != (spec.cron, spec.timezone,
                                                                                 _ms(spec.jitter)):
        # The new schedule applies from the next tick: the undecided one is replaced.
        first = cron.next_after(await db_now(conn))
        await _new_head(conn, job_id, spec.queue, first, _ms(spec.jitter), paused=existing["state"] == "paused")
    return job_id


def _ms(jitter: timedelta) -> int:
    return jitter // timedelta(milliseconds=1)


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
        await store.set_job_state(conn, job_id, "paused")
        await store.park_head(conn, job_id)
    return True


async def resume(conn: Connection, job_id: int) -> bool:
    """Resume a paused job: ticks that fell while paused are recorded skipped (`paused`), the next
    one is scheduled. A paused one-shot job becomes due at its time again."""
    async with conn.transaction():
        job = await _locked(conn, job_id)
        if job["state"] != "paused":
            return False
        await store.set_job_state(conn, job_id, "active")
        head = await store.head(conn, job_id)
        if head is None:
            return True
        if job["kind"] == "once":
            await store.unpark_head(conn, job_id)
            return True
        cron = CronSchedule.parse(job["cron"], job["timezone"])
        now = await db_now(conn)
        fire_at = head["fire_at"]
        if fire_at > now:
            await store.unpark_head(conn, job_id)
            return True
        missed = [fire_at, *cron.ticks_between(fire_at, now, MAX_PAUSED_TICKS_RECORDED)]
        await store.record_paused_ticks(conn, job_id, job["queue"], missed)
        following = cron.next_after(now if len(missed) <= MAX_PAUSED_TICKS_RECORDED else missed[-1])
        await _new_head(conn, job_id, job["queue"], following, job["cron_jitter_ms"], paused=False)
    return True


async def reschedule(conn: Connection, job_id: int, *, cron: str | None, timezone: str | None,
                     run_at: datetime | None) -> None:
    """New cron (and/or zone) for a recurring job, or a new run time for a one-shot job that has
    not been dispatched yet. Applies from the next tick."""
    async with conn.transaction():
        job = await _locked(conn, job_id)
        paused = job["state"] == "paused"
        if job["kind"] == "cron":
            if run_at is not None:
                raise InvalidJobError("run_at", "a recurring job is rescheduled with cron=..., not run_at")
            if cron is None and timezone is None:
                raise InvalidJobError("cron", "give a new cron expression or time zone")
            expression, zone = cron or job["cron"], timezone or job["timezone"]
            schedule = parse_schedule(expression, zone)
            check_jitter(timedelta(milliseconds=job["cron_jitter_ms"]), schedule)
            following = schedule.next_after(await db_now(conn))
            await store.set_cron(conn, job_id, expression, zone)
            await _new_head(conn, job_id, job["queue"], following, job["cron_jitter_ms"], paused=paused)
            return
        if run_at is None or cron is not None:
            raise InvalidJobError("run_at", "a one-shot job is rescheduled with run_at=...")
        if await store.head(conn, job_id) is None:
            raise JobStateError(f"job {job_id} has already been dispatched; enqueue a new one")
        await store.replace_head(conn, job_id, job["queue"], run_at, head_due(run_at, paused=paused))


async def trigger(conn: Connection, job_id: int) -> str:
    """Run a recurring job once now, besides its schedule: a live occurrence under its own key
    (``chronoq.manual_key``), which the ledger shows as a manual run. The next nominal tick is
    left as it is. A paused job runs too (a pause stops the schedule, not a request to run);
    a cancelled job or a one-shot job is refused. Returns the run's idempotency key."""
    async with conn.transaction():
        job = await _locked(conn, job_id)
        if job["kind"] != "cron":
            raise JobStateError(f"job {job_id} is a one-shot job: trigger runs a recurring job once; "
                                "move a one-shot job with reschedule(run_at=...)")
        return await store.insert_manual_run(conn, job_id, job["queue"])
