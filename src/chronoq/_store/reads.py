"""Read-only statements: a job with its history, and per-queue status."""

from __future__ import annotations

from datetime import timedelta

import asyncpg

from chronoq._store.sql import query


async def job(conn: asyncpg.Connection, job_id: int) -> asyncpg.Record | None:
    return await conn.fetchrow(query("job"), job_id)


async def live_occurrences(conn: asyncpg.Connection, job_id: int) -> list[asyncpg.Record]:
    return await conn.fetch(query("job_live_occurrences"), job_id)


async def results(conn: asyncpg.Connection, job_id: int) -> list[asyncpg.Record]:
    return await conn.fetch(query("job_results"), job_id)


async def attempts(conn: asyncpg.Connection, job_id: int) -> list[asyncpg.Record]:
    return await conn.fetch(query("job_attempts"), job_id)


async def queue_status(conn: asyncpg.Connection, window: timedelta) -> list[asyncpg.Record]:
    return await conn.fetch(query("queue_status"), window)


async def outcome_summary(conn: asyncpg.Connection, job_ids: list[int]) -> asyncpg.Record:
    return await conn.fetchrow(query("outcome_summary"), job_ids)


async def run_timing(conn: asyncpg.Connection, first_id: int, last_id: int) -> asyncpg.Record:
    return await conn.fetchrow(query("run_timing"), first_id, last_id)


async def pending_in_range(conn: asyncpg.Connection, first_id: int, last_id: int) -> int:
    return await conn.fetchval(query("pending_in_range"), first_id, last_id)


async def delete_jobs_of_queue(conn: asyncpg.Connection, queue: str) -> None:
    """Benchmarks clean up after themselves (cascades to occurrences and results)."""
    await conn.execute(query("delete_jobs_of_queue"), queue)
