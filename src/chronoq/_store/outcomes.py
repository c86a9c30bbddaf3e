"""Worker-side statements: dedup check and the outcome of an attempt."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from chronoq._store.connection import Connection, one_row
from chronoq._store.sql import query


@dataclass(frozen=True)
class OccurrenceStatus:
    terminal_state: str | None  # set: the occurrence has ended, the delivery is a duplicate
    live_attempt: int | None  # the wheel's current attempt, None if the row is gone
    starts: int | None  # deliveries of this attempt started so far, this one included
    only_copy: bool = False  # never started, and the first and only published copy (wheel.dispatch_id)


@dataclass(frozen=True)
class Attempt:
    """Identifies one attempt of one occurrence, as carried by its message."""

    occurrence_key: str
    job_id: int
    queue: str
    fire_at: datetime
    run_at: datetime
    attempt: int
    worker: str


async def record_retry(
    conn: Connection, a: Attempt, delay: timedelta, error: str, outcome: str, started_at: datetime
) -> datetime | None:
    """Schedules the next attempt; None if the attempt was stale (already moved on or ended)."""
    next_run: datetime | None = await conn.fetchval(
        query("record_retry"), a.occurrence_key, a.attempt, delay, error, outcome, started_at, a.worker
    )
    return next_run


async def record_dead(
    conn: Connection, a: Attempt, reason: str, error: str, outcome: str, started_at: datetime | None
) -> bool:
    recorded: int = await conn.fetchval(
        query("record_dead"), a.occurrence_key, a.attempt, reason, error, outcome, started_at, a.worker
    )
    return recorded == 1


async def record_cancelled(
    conn: Connection, a: Attempt, reason: str, started_at: datetime | None
) -> bool:
    recorded: int = await conn.fetchval(
        query("record_cancelled"), a.occurrence_key, a.attempt, reason, started_at, a.worker
    )
    return recorded == 1


async def retry_policy(conn: Connection, job_id: int) -> asyncpg.Record | None:
    return await conn.fetchrow(query("retry_policy"), job_id)


async def start_many(
    conn: Connection, keys: list[str], attempts: list[int], leases: list[timedelta]
) -> dict[str, OccurrenceStatus]:
    return _statuses(await conn.fetch(query("start_deliveries"), keys, attempts, leases))


async def unstart_many(conn: Connection, keys: list[str], attempts: list[int]) -> None:
    await conn.execute(query("unstart_deliveries"), keys, attempts)


def _statuses(rows: list[asyncpg.Record]) -> dict[str, OccurrenceStatus]:
    """By occurrence, from rows in the group's order: for an occurrence delivered twice in one
    group the first delivery's verdict, since it is the copy that may run (the others are
    duplicates); ``only_copy`` differs between copies published by different batches."""
    statuses: dict[str, OccurrenceStatus] = {}
    for r in rows:
        if r["occurrence_key"] not in statuses:
            statuses[r["occurrence_key"]] = OccurrenceStatus(r["terminal_state"], r["live_attempt"], r["starts"],
                                                             r["only_copy"])
    return statuses


async def start_locked(
    conn: Connection, keys: list[str], attempts: list[int], dispatch_ids: list[int | None],
) -> tuple[dict[str, OccurrenceStatus], datetime]:
    """The first statement of a group of first deliveries, in its transaction: the verdict of
    ``start_many`` with the live rows locked until the group ends (the fence), nothing counted
    (``lock_first_deliveries``). Also returns the database's clock."""
    rows = await conn.fetch(query("lock_first_deliveries"), keys, attempts, dispatch_ids)
    return _statuses(rows), rows[0]["db_now"]


async def lock_live(conn: Connection, keys: list[str], attempts: list[int]) -> tuple[set[str], datetime]:
    """Inside the group's transaction: lock the occurrences still live at these attempts.
    Returns the keys locked and the database's clock (read after the locks, even if none was
    live: a build without the fence, for the chaos checker, runs such deliveries anyway)."""
    row = await one_row(conn, query("lock_live"), keys, attempts)
    return set(row["locked"]), row["db_now"]


async def record_successes(
    conn: Connection, keys: list[str], attempts: list[int], results: list[object],
    started: list[datetime], worker: str,
) -> int:
    recorded: int = await conn.fetchval(query("record_successes"), keys, attempts, results, started, worker)
    return recorded
