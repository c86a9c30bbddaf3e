"""The timer's claim and the worker's group statements find their rows by key whatever the
planner's statistics say. On a server where autovacuum is off, or has not analyzed the tables
yet, the statistics can be those of empty tables while the tables hold many rows; plans made from
them hashed whole tables once per claim or group (docs/benchmarks.md)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import asyncpg
import orjson

from chronoq import Producer
from chronoq._store.connection import create_pool
from chronoq._store.sql import query

#: Future one-shot jobs in the wheel: enough that a whole-table scan is not what the rows need.
FUTURE_JOBS = 20_000


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


async def explain(conn: asyncpg.Connection, statement: str, *args: Any) -> list[dict[str, Any]]:
    document = orjson.loads(await conn.fetchval("EXPLAIN (FORMAT JSON) " + query(statement), *args))
    return list(nodes(document[0]["Plan"]))


def whole_table_reads(plan: list[dict[str, Any]]) -> list[str]:
    """Sequential scans of chronoq's tables, and hash tables built from anything."""
    return [f"{n['Node Type']} {n.get('Relation Name', '')}".strip() for n in plan
            if n["Node Type"] in ("Hash", "Seq Scan")]


async def test_claim_and_group_lock_look_rows_up_by_key_under_statistics_of_empty_tables(settings, producer: Producer) -> None:
    # A connection as the timer's and the worker's pools make them (custom plans).
    pool = await create_pool(settings.database_url, max_size=1, custom_plans=True)
    try:
        async with pool.acquire() as conn:
            await conn.execute("VACUUM ANALYZE chronoq.wheel, chronoq.jobs, chronoq.results")  # statistics: empty
            await producer.enqueue_many([{"queue": "later", "payload": {}, "delay": timedelta(hours=1)}] * FUTURE_JOBS)
            # A recurring job that skips overlapping runs: judging its due tick asks whether an
            # earlier occurrence is still live, which must not mean reading the whole wheel.
            await producer.schedule("ticks", {}, cron="* * * * * *", overlap="skip")
            key = await conn.fetchval("SELECT occurrence_key FROM chronoq.wheel LIMIT 1")
            # Finished occurrences pile up in results too (kept for the retention period).
            await conn.execute("""
                INSERT INTO chronoq.results (occurrence_key, job_id, queue, fire_at, state, attempt)
                SELECT 'done:' || n, (SELECT min(id) FROM chronoq.jobs), 'later', now(), 'succeeded', 1
                FROM generate_series(1, $1) AS n""", FUTURE_JOBS)

            assert whole_table_reads(await explain(conn, "claim_due", 1000)) == []
            assert whole_table_reads(await explain(conn, "lock_first_deliveries", [key], [1], [1])) == []
            assert whole_table_reads(await explain(conn, "start_deliveries", [key], [1], [timedelta(minutes=5)])) == []
    finally:
        await pool.close()


async def test_the_timer_counts_the_due_backlog_only_when_asked(settings, producer: Producer) -> None:
    """The timer reads next_due after every batch that did not fill; the backlog count in it (a
    scan of the wheel when the statistics expect many due rows) runs at most once a second."""
    from chronoq._store import wheel

    await producer.enqueue_many([{"queue": "now", "payload": {}}] * 5)
    pool = await create_pool(settings.database_url, max_size=1, custom_plans=True)
    try:
        async with pool.acquire() as conn:
            assert (await wheel.next_due(conn, count_backlog=True))[2] == 5
            assert (await wheel.next_due(conn, count_backlog=False))[2] is None

            async def counting_scans(count_backlog: bool) -> list[dict[str, Any]]:
                document = orjson.loads(await conn.fetchval(
                    "EXPLAIN (ANALYZE, FORMAT JSON) " + query("next_due"), count_backlog))
                return [n for n in nodes(document[0]["Plan"])
                        if "due_at <= now()" in n.get("Filter", "") + n.get("Index Cond", "")]

            assert [n["Actual Loops"] for n in await counting_scans(True)] == [1]
            # Not asked: the count is planned away, or at least never runs.
            assert all(n["Actual Loops"] == 0 for n in await counting_scans(False))
    finally:
        await pool.close()
