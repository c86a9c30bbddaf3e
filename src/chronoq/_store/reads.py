"""Read-only statements: a job with its history, the last outcome of jobs, and per-queue status."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import asyncpg

from chronoq._store.connection import Connection, one_row
from chronoq._store.sql import query


async def job(conn: Connection, job_id: int) -> asyncpg.Record | None:
    return await conn.fetchrow(query("job"), job_id)


async def live_occurrences(conn: Connection, job_id: int) -> list[asyncpg.Record]:
    return await conn.fetch(query("job_live_occurrences"), job_id)


async def results(conn: Connection, job_id: int) -> list[asyncpg.Record]:
    return await conn.fetch(query("job_results"), job_id)


async def attempts(conn: Connection, job_id: int) -> list[asyncpg.Record]:
    return await conn.fetch(query("job_attempts"), job_id)


async def last_outcomes(conn: Connection, job_ids: list[int]) -> dict[int, dict[str, Any]]:
    """The state, reason and finish time of each job's latest finished occurrence, by job id
    (jobs with none are absent)."""
    return {r["job_id"]: dict(r) for r in await conn.fetch(query("last_outcomes"), job_ids)}


async def queue_status(conn: Connection, window: timedelta) -> list[asyncpg.Record]:
    return await conn.fetch(query("queue_status"), window)


async def outcome_summary(conn: Connection, job_ids: list[int]) -> asyncpg.Record:
    return await one_row(conn, query("outcome_summary"), job_ids)


async def run_timing(conn: Connection, first_id: int, last_id: int) -> asyncpg.Record:
    return await one_row(conn, query("run_timing"), first_id, last_id)


async def pending_in_range(conn: Connection, first_id: int, last_id: int) -> int:
    pending: int = await conn.fetchval(query("pending_in_range"), first_id, last_id)
    return pending


async def delete_jobs_of_queue(conn: Connection, queue: str) -> None:
    """Benchmarks clean up after themselves (cascades to occurrences and results)."""
    await conn.execute(query("delete_jobs_of_queue"), queue)
