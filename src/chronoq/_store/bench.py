"""Statements only the benchmarks use: the benchmark handler's effects table, preloading many
jobs with COPY, removing them again, reading the wheel's table statistics and the server's
settings, explaining the timer's claim, and, where the operator allows it (``--tune-server``),
a checkpoint and autovacuum switched on for a run on a server where it is off."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from chronoq._store.connection import Connection, one_row
from chronoq._store.sql import query
from chronoq._store.wheel import occurrence_key

#: How long set_autovacuum_on waits for a reload to reach its session: 5 s in all.
RELOAD_POLL = timedelta(milliseconds=50)
RELOAD_POLLS = 100
_JOB_COLUMNS = ("id", "queue", "payload", "max_attempts", "backoff_base_ms", "backoff_cap_ms", "jitter", "timeout_ms")
_WHEEL_COLUMNS = ("occurrence_key", "job_id", "queue", "fire_at", "run_at", "due_at", "head")
#: The job defaults of a plain ``enqueue`` (3 attempts, 1 s .. 1 h backoff, 10 % jitter, 5 min timeout).
_JOB_DEFAULTS = (3, 1000, 3_600_000, 0.1, 300_000)
#: Rows per COPY: big enough for COPY's speed, small enough for a smooth progress bar.
COPY_CHUNK = 50_000


async def setup_effects(conn: Connection) -> None:
    """Create the ``db`` handler's table if missing, and empty it."""
    await conn.execute(query("bench_effects_setup"))


async def record_effect(conn: Connection, occurrence_key: str) -> None:
    await conn.execute(query("bench_effect"), occurrence_key)


async def server_environment(conn: Connection) -> dict[str, str]:
    """The server's version, synchronous_commit and autovacuum settings."""
    return dict(await one_row(conn, query("server_environment")))


async def preload(
    conn: Connection, *, queue: str, payload: str, count: int, first_due: datetime, spacing: timedelta,
    advance: Callable[[int], None] | None = None,
) -> tuple[int, int]:
    """COPY ``count`` one-shot jobs and their first occurrences, due at ``first_due`` plus
    ``spacing`` times their rank (distinct due times, as real schedules have: the due_at index
    gets no duplicate compression it would not get in production). Returns the id range.
    ``advance(n)`` is called after each chunk (for a progress bar)."""
    if count <= 0:
        return 0, -1
    first = await conn.fetchval(query("reserve_job_ids"), count)
    for start in range(0, count, COPY_CHUNK):
        ids = range(first + start, first + min(count, start + COPY_CHUNK))
        due = [first_due + spacing * (i - first) for i in ids]
        async with conn.transaction():
            await conn.copy_records_to_table(
                "jobs", schema_name="chronoq", columns=_JOB_COLUMNS,
                records=((i, queue, payload, *_JOB_DEFAULTS) for i in ids),
            )
            await conn.copy_records_to_table(
                "wheel", schema_name="chronoq", columns=_WHEEL_COLUMNS,
                records=((occurrence_key(i, d), i, queue, d, d, d, True) for i, d in zip(ids, due, strict=True)),
            )
        if advance is not None:
            advance(len(ids))
    return first, first + count - 1


async def delete_block(conn: Connection, queue: str, first: int, last: int) -> None:
    """Remove the jobs ``first..last`` of ``queue`` (and what they left in the wheel), a chunk at a time."""
    for start in range(first, last + 1, COPY_CHUNK):
        end = min(last, start + COPY_CHUNK - 1)
        async with conn.transaction():
            await conn.execute(query("delete_block_occurrences"), start, end, queue)
            await conn.execute(query("delete_job_block"), start, end, queue)


async def queue_block(conn: Connection, queue: str) -> tuple[int, int, int]:
    """(first id, last id, count) of a queue's occurrences in the wheel."""
    row = await one_row(conn, query("queue_block"), queue)
    return row["first"], row["last"], row["n"]


async def vacuum_analyze(conn: Connection) -> None:
    """Outside any transaction; needs the tables' owner."""
    await conn.execute(query("vacuum_analyze_wheel"))


async def checkpoint(conn: Connection) -> bool:
    """Write every dirty page back now. False where the role may not (it needs superuser or
    pg_checkpoint): the run goes on, its figures then include the write-back."""
    try:
        await conn.execute(query("checkpoint"))
    except asyncpg.InsufficientPrivilegeError:
        return False
    return True


async def wheel_stats(conn: Connection) -> dict[str, Any]:
    await conn.fetchval(query("flush_stats"))
    row = await conn.fetchrow(query("wheel_stats"))
    return dict(row) if row is not None else {}


async def explain_claim(conn: Connection, limit: int) -> list[str]:
    """EXPLAIN (ANALYZE, BUFFERS) of the timer's real claim, in a transaction rolled back
    afterwards: the rows it locks stay due. (The prefix is a constant; the statement is the
    timer's own, not a copy that could drift.)"""
    plan: list[str] = []
    transaction = conn.transaction()
    await transaction.start()
    try:
        plan = [r[0] for r in await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + query("claim_due"), limit)]
    finally:
        await transaction.rollback()
    return plan


async def set_autovacuum_on(conn: Connection, naptime: timedelta | None = None) -> None:
    """``ALTER SYSTEM`` (superuser): overrides postgresql.conf and its conf.d until reset."""
    await conn.execute(query("autovacuum_on"))
    if naptime is not None:
        await conn.execute(await conn.fetchval(query("autovacuum_naptime_statement"), naptime // timedelta(milliseconds=1)))
    await conn.fetchval(query("reload_conf"))
    # pg_reload_conf() only signals the postmaster, which signals every backend, this one
    # included: wait (bounded) until this session runs with what was asked, so that what the
    # run records is what it ran with. Postgres rounds the naptime to whole seconds.
    naptime_s = None if naptime is None else int(naptime.total_seconds() + 0.5)
    for _ in range(RELOAD_POLLS):
        now = await autovacuum_settings(conn)
        if now["enabled"] and naptime_s in (None, now["naptime_s"]):
            return
        await asyncio.sleep(RELOAD_POLL.total_seconds())


async def reset_autovacuum(conn: Connection) -> None:
    await conn.execute(query("autovacuum_reset"))
    await conn.execute(query("autovacuum_naptime_reset"))
    await conn.fetchval(query("reload_conf"))


async def autovacuum_settings(conn: Connection) -> asyncpg.Record:
    return await one_row(conn, query("autovacuum_settings"))


async def database_transactions(conn: Connection) -> int:
    """Transactions of every session in this database so far (this one's: up to its flush here)."""
    await conn.fetchval(query("flush_stats"))
    return int(await conn.fetchval(query("database_transactions")))


async def client_sessions(conn: Connection) -> dict[int, str]:
    """The other sessions in this database: backend pid -> application name."""
    return {r["pid"]: r["application_name"] for r in await conn.fetch(query("client_sessions"))}


#: What keeps pg_stat_statements from answering: not installed in this database (or not on the
#: search path), its library not in shared_preload_libraries, a role that may not reset it.
STATEMENTS_UNAVAILABLE = (asyncpg.UndefinedFunctionError, asyncpg.UndefinedTableError,
                          asyncpg.ObjectNotInPrerequisiteStateError, asyncpg.InsufficientPrivilegeError)


async def reset_statements(conn: Connection) -> str | None:
    """Empty this database's pg_stat_statements; None if done, else why it could not be."""
    try:
        await conn.fetchval(query("statements_reset"), 0, 0)
    except STATEMENTS_UNAVAILABLE as exc:
        return f"{type(exc).__name__}: {exc}".splitlines()[0]
    return None


async def statements_since_reset(conn: Connection) -> tuple[list[asyncpg.Record], bool]:
    """The statements run since the reset, most time first, and whether planning was counted."""
    rows = await conn.fetch(query("statements_since_reset"))
    return rows, bool(await conn.fetchval(query("statements_track_planning")))
