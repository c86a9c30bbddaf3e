"""Statements on the wheel, the live occurrences: claim the due ones, mark them dispatched or
postponed, write what judging the heads decided, and prune history."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from chronoq._store.connection import Connection, one_row
from chronoq._store.sql import query

#: Postgres's ``'infinity'`` as asyncpg reads it: the due time of a parked row (a paused job's
#: next tick), which no claim reaches until the job is resumed.
INFINITY = datetime.max.replace(tzinfo=UTC)


def occurrence_key(job_id: int, fire_at: datetime) -> str:
    """``chronoq.occurrence_key(job_id, fire_at)``, the wheel's key and the idempotency key of an
    occurrence, computed without a round trip (rows written by COPY call no function). A test
    holds the two equal."""
    return f"{job_id}{fire_time_suffix(fire_at)}"


def fire_time_suffix(fire_at: datetime) -> str:
    """The part of an occurrence key after the job id: ``@`` and the fire time in UTC, to the
    microsecond (``42@2026-11-29T09:00:00.000000Z``)."""
    # isoformat, not strftime: %Y does not pad years before 1000 to four digits on every platform.
    return f"@{fire_at.astimezone(UTC).replace(tzinfo=None).isoformat(timespec='microseconds')}Z"


async def claim_due(conn: Connection, limit: int) -> list[asyncpg.Record]:
    """Up to ``limit`` free due rows. Must run inside a transaction: the claimed rows stay
    locked until it ends."""
    return await conn.fetch(query("claim_due"), limit)


async def claim_limited(conn: Connection, queues: Sequence[str], limit: int) -> list[asyncpg.Record]:
    """The due rows of the limited ``queues`` (locked by :func:`lock_controlled_queues` in the
    same transaction) that their limits let through, at most ``limit`` per queue."""
    return await conn.fetch(query("claim_limited"), list(queues), limit)


async def lock_controlled_queues(conn: Connection, limit: int | None = None) -> list[str]:
    """The limited queues with controlled rows due that no other transaction has locked, locked
    until this one ends (at most ``limit``)."""
    return [r["queue"] for r in await conn.fetch(query("lock_controlled_queues"), limit)]


async def mark_controlled(conn: Connection, keys: Sequence[str]) -> None:
    """Rows of paused or limited queues met by the claim of free rows."""
    if keys:
        await conn.execute(query("mark_controlled"), list(keys))


async def mark_dispatched(
    conn: Connection, keys: Sequence[str], leases: Sequence[timedelta], dispatch_id: int | None = None
) -> None:
    if keys:
        await conn.execute(query("mark_dispatched"), list(keys), list(leases), dispatch_id)


async def postpone(conn: Connection, rows: Sequence[asyncpg.Record], pause: timedelta, error: str) -> None:
    """Claimed rows the broker refused: due again after ``pause``, their dispatch state as claimed."""
    if rows:
        await conn.execute(
            query("postpone_unpublished"),
            [r["occurrence_key"] for r in rows], [r["dispatches"] for r in rows],
            [r["dispatched_at"] for r in rows], [r["dispatch_id"] for r in rows], pause, error,
        )


async def hold(conn: Connection, key: str, pause: timedelta, error: str) -> None:
    """An occurrence whose dispatch failed alone, for an unknown reason: due again after
    ``pause``, with the error for ``jobs show``; the other rows go on meanwhile."""
    await conn.execute(query("hold_occurrence"), key, pause, error)


@dataclass(frozen=True)
class NextDue:
    db_now: float  # database epoch seconds
    due_in: float | None  # seconds until the earliest free row is due; None: none
    backlog: int | None  # free rows due now, if counted
    controls_due_in: float | None  # seconds until a limited queue may have work; None: none known


async def next_due(conn: Connection, *, count_backlog: bool) -> NextDue:
    """When the next free row is due and when a limited queue may have work, by the database's
    clock; the backlog of due free rows if ``count_backlog``."""
    row = await one_row(conn, query("next_due"), count_backlog)
    return NextDue(row["db_now"], row["due_in"], row["backlog"], row["controls_due_in"])


async def record_unrun(conn: Connection, ticks: Sequence[tuple[int, str, datetime, str, str, str | None]]) -> None:
    """Rows of (job_id, queue, fire_at, state, reason, detail); state is skipped or cancelled."""
    if ticks:
        await conn.execute(query("record_unrun_ticks"), *map(list, zip(*ticks, strict=True)))


async def record_set_aside(conn: Connection, rows: Sequence[tuple[asyncpg.Record, str, str]]) -> None:
    """Claimed rows that can never be dispatched, as (row, reason, error): recorded dead."""
    if rows:
        await conn.execute(query("record_set_aside"), *map(list, zip(*(
            (r["occurrence_key"], r["job_id"], r["queue"], r["fire_at"], r["attempt"], reason, error, r["run_at"])
            for r, reason, error in rows
        ), strict=True)))


async def drop(conn: Connection, keys: Sequence[str]) -> None:
    if keys:
        await conn.execute(query("drop_occurrences"), list(keys))


async def add(conn: Connection, rows: Sequence[tuple[int, str, datetime, datetime, datetime, bool, int]]) -> None:
    """Rows of (job_id, queue, fire_at, run_at, due_at, head, backfilled)."""
    if rows:
        await conn.execute(query("add_occurrences"), *map(list, zip(*rows, strict=True)))


async def defer(conn: Connection, keys: Sequence[str], shortest: timedelta, longest: timedelta) -> None:
    if keys:
        await conn.execute(query("defer_occurrences"), list(keys), shortest, longest)


async def park(conn: Connection, keys: Sequence[str]) -> None:
    if keys:
        await conn.execute(query("park_occurrences"), list(keys))


async def prune(conn: Connection, retention: timedelta, batch: int) -> dict[str, int] | None:
    """One batch of pruning per table, in one transaction; None if another timer is pruning."""
    async with conn.transaction():
        if not await conn.fetchval(query("try_prune_lock")):
            return None
        job_ids = [r["job_id"] for r in await conn.fetch(query("prune_results"), retention, batch)]
        attempts = await conn.execute(query("prune_attempts"), retention, batch)
        # Finished one-shot jobs go with their (last) result: nothing else leads to them.
        jobs = await conn.execute(query("prune_jobs"), list(set(job_ids)))
        return {"results": len(job_ids), "attempts": _count(attempts), "jobs": _count(jobs)}


def _count(status: str) -> int:
    """Rows a statement touched, from its status ("DELETE 42")."""
    return int(status.split()[-1])
