"""Statements on recurring jobs and job states: write a schedule's definition, lock a job, move
its head (its next, undecided tick), park and unpark it, and read the tick ledger."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg

from chronoq._store.connection import Connection
from chronoq._store.jobs import milliseconds
from chronoq._store.sql import query
from chronoq.schemas.schedule import ScheduleSpec


async def lock_job(conn: Connection, job_id: int) -> asyncpg.Record | None:
    return await conn.fetchrow(query("lock_job"), job_id)


async def lock_keyed_job(conn: Connection, queue: str, key: str) -> asyncpg.Record | None:
    return await conn.fetchrow(query("lock_keyed_job"), queue, key)


def _definition(spec: ScheduleSpec) -> list[object]:
    retry = spec.retry
    return [
        spec.encoded_payload().decode(), retry.max_attempts, milliseconds(retry.backoff_base),
        milliseconds(retry.backoff_cap), retry.jitter, milliseconds(spec.timeout), spec.cron, spec.timezone,
        spec.misfire, milliseconds(spec.misfire_grace), spec.max_backfill, spec.overlap, milliseconds(spec.jitter),
    ]


async def insert_cron_job(conn: Connection, spec: ScheduleSpec) -> int | None:
    """The new recurring job's id; None if a job with the same (queue, key) exists."""
    new_id: int | None = await conn.fetchval(query("insert_cron_job"), spec.queue, spec.key, *_definition(spec))
    return new_id


async def update_cron_job(conn: Connection, job_id: int, spec: ScheduleSpec) -> None:
    await conn.execute(query("update_cron_job"), job_id, *_definition(spec))


async def head(conn: Connection, job_id: int) -> asyncpg.Record | None:
    return await conn.fetchrow(query("head"), job_id)


async def replace_head(
    conn: Connection, job_id: int, queue: str, fire_at: datetime | None, due_at: datetime | None,
    run_at: datetime | None = None,
) -> None:
    """Drop the job's undecided tick and, if ``fire_at`` is given, make it the new one, due at
    ``run_at`` (default: ``fire_at``) and judged at ``due_at``."""
    await conn.execute(query("drop_head"), job_id)
    if fire_at is not None:
        await conn.execute(query("insert_head"), job_id, queue, fire_at, run_at or fire_at, due_at)


async def insert_manual_run(conn: Connection, job_id: int, queue: str) -> str:
    key: str = await conn.fetchval(query("insert_manual_run"), job_id, queue)
    return key


async def set_job_state(conn: Connection, job_id: int, state: str) -> None:
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
