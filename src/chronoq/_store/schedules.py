"""Statements for recurring jobs and job lifecycle: schedule, pause, resume, reschedule, ledger."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg

from chronoq._store.sql import query


async def db_now(conn: asyncpg.Connection) -> datetime:
    return await conn.fetchval(query("db_now"))


async def lock_job(conn: asyncpg.Connection, job_id: int) -> asyncpg.Record | None:
    return await conn.fetchrow(query("lock_job"), job_id)


async def lock_keyed_job(conn: asyncpg.Connection, queue: str, key: str) -> asyncpg.Record | None:
    return await conn.fetchrow(query("lock_keyed_job"), queue, key)


async def insert_cron_job(conn: asyncpg.Connection, args: Sequence[object]) -> int | None:
    return await conn.fetchval(query("insert_cron_job"), *args)


async def update_cron_job(conn: asyncpg.Connection, job_id: int, args: Sequence[object]) -> None:
    await conn.execute(query("update_cron_job"), job_id, *args)


async def head(conn: asyncpg.Connection, job_id: int) -> asyncpg.Record | None:
    return await conn.fetchrow(query("head"), job_id)


async def replace_head(conn: asyncpg.Connection, job_id: int, queue: str, fire_at: datetime | None, due_at: datetime | None) -> None:
    """Drop the job's undecided tick and, if ``fire_at`` is given, make it the new one."""
    await conn.execute(query("drop_head"), job_id)
    if fire_at is not None:
        await conn.execute(query("insert_head"), job_id, queue, fire_at, due_at)


async def set_state(conn: asyncpg.Connection, job_id: int, state: str) -> None:
    await conn.execute(query("set_job_state"), job_id, state)


async def set_cron(conn: asyncpg.Connection, job_id: int, cron: str, timezone: str) -> None:
    await conn.execute(query("set_cron"), job_id, cron, timezone)


async def park_head(conn: asyncpg.Connection, job_id: int) -> None:
    await conn.execute(query("park_head"), job_id)


async def unpark_head(conn: asyncpg.Connection, job_id: int) -> None:
    await conn.execute(query("unpark_head"), job_id)


async def record_paused_ticks(conn: asyncpg.Connection, job_id: int, queue: str, ticks: Sequence[datetime]) -> None:
    if ticks:
        await conn.execute(query("record_paused_ticks"), job_id, queue, list(ticks))


async def ticks(conn: asyncpg.Connection, job_id: int, since: datetime, limit: int) -> list[asyncpg.Record]:
    return await conn.fetch(query("ticks"), job_id, since, limit)


async def list_jobs(conn: asyncpg.Connection, queue: str | None, state: str | None, limit: int) -> list[asyncpg.Record]:
    return await conn.fetch(query("list_jobs"), queue, state, limit)
