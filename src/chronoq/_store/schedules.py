"""Statements for recurring jobs and job lifecycle: schedule, pause, resume, reschedule, ledger."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import asyncpg

from chronoq._store.connection import Connection
from chronoq._store.jobs import milliseconds
from chronoq._store.sql import query
from chronoq.errors import InvalidJobError, JobStateError
from chronoq.schemas.cron import CronSchedule
from chronoq.schemas.rules import short
from chronoq.schemas.schedule import ScheduleSpec

INFINITY = datetime.max.replace(tzinfo=UTC)


async def db_now(conn: Connection) -> datetime:
    now: datetime = await conn.fetchval(query("db_now"))
    return now


async def lock_job(conn: Connection, job_id: int) -> asyncpg.Record | None:
    return await conn.fetchrow(query("lock_job"), job_id)


async def lock_keyed_job(conn: Connection, queue: str, key: str) -> asyncpg.Record | None:
    return await conn.fetchrow(query("lock_keyed_job"), queue, key)


async def insert_cron_job(conn: Connection, args: Sequence[object]) -> int | None:
    new_id: int | None = await conn.fetchval(query("insert_cron_job"), *args)
    return new_id


async def update_cron_job(conn: Connection, job_id: int, args: Sequence[object]) -> None:
    await conn.execute(query("update_cron_job"), job_id, *args)


async def head(conn: Connection, job_id: int) -> asyncpg.Record | None:
    return await conn.fetchrow(query("head"), job_id)


async def replace_head(
    conn: Connection, job_id: int, queue: str, fire_at: datetime | None, due_at: datetime | None
) -> None:
    """Drop the job's undecided tick and, if ``fire_at`` is given, make it the new one."""
    await conn.execute(query("drop_head"), job_id)
    if fire_at is not None:
        await conn.execute(query("insert_head"), job_id, queue, fire_at, due_at)


async def set_state(conn: Connection, job_id: int, state: str) -> None:
    await conn.execute(query("set_job_state"), job_id, state)


async def set_cron(conn: Connection, job_id: int, cron: str, timezone: str) -> None:
    await conn.execute(query("set_cron"), job_id, cron, timezone)


async def park_head(conn: Connection, job_id: int) -> None:
    await conn.execute(query("park_head"), job_id)


async def unpark_head(conn: Connection, job_id: int) -> None:
    await conn.execute(query("unpark_head"), job_id)


async def record_paused_ticks(conn: Connection, job_id: int, queue: str, ticks: Sequence[datetime]) -> None:
    if ticks:
        await conn.execute(query("record_paused_ticks"), job_id, queue, list(ticks))


async def ticks(conn: Connection, job_id: int, since: datetime, limit: int) -> list[asyncpg.Record]:
    return await conn.fetch(query("ticks"), job_id, since, limit)


async def list_jobs(conn: Connection, queue: str | None, state: str | None, limit: int) -> list[asyncpg.Record]:
    return await conn.fetch(query("list_jobs"), queue, state, limit)


def _definition(spec: ScheduleSpec, payload: bytes) -> list[object]:
    retry = spec.retry
    return [
        payload.decode(), retry.max_attempts, milliseconds(retry.backoff_base), milliseconds(retry.backoff_cap), retry.jitter,
        milliseconds(spec.timeout), spec.cron, spec.timezone, spec.misfire, milliseconds(spec.misfire_grace), spec.max_backfill,
        spec.overlap,
    ]


async def store_schedule(conn: Connection, spec: ScheduleSpec) -> int:
    """Create the recurring job, or update the one with the same (queue, key); returns its id."""
    payload = spec.encoded_payload()
    cron = spec.schedule()
    definition = _definition(spec, payload)
    async with conn.transaction():
        for _ in range(3):
            if spec.key is not None:
                existing = await lock_keyed_job(conn, spec.queue, spec.key)
                if existing is not None:
                    return await _redeclare(conn, existing, spec, cron, definition)
            new_id = await insert_cron_job(conn, [spec.queue, spec.key, *definition])
            if new_id is not None:
                first = cron.next_after(await db_now(conn))
                await replace_head(conn, new_id, spec.queue, first, first)
                return new_id
            # A concurrent schedule() inserted the same key first; lock and update it.
    raise RuntimeError(f"schedule of key {short(spec.key)} found neither a new nor an existing job")


async def _redeclare(conn: Connection, existing: asyncpg.Record, spec: ScheduleSpec,
                     cron: CronSchedule, definition: list[object]) -> int:
    job_id: int = existing["id"]
    if existing["kind"] != "cron":
        raise InvalidJobError("key", f"key {short(spec.key)} on queue {short(spec.queue)} belongs to a one-shot job {job_id}")
    if existing["state"] == "cancelled":
        raise JobStateError(f"job {job_id} (key {short(spec.key)}) is cancelled; use another key")
    await update_cron_job(conn, job_id, definition)
    if (existing["cron"], existing["timezone"]) != (spec.cron, spec.timezone):
        # The new schedule applies from the next tick: the undecided one is replaced.
        first = cron.next_after(await db_now(conn))
        await replace_head(conn, job_id, spec.queue, first, INFINITY if existing["state"] == "paused" else first)
    return job_id
