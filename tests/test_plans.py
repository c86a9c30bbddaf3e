"""The timer's claim and the worker's group statements find their rows by key whatever the
planner's statistics say. On a server where autovacuum is off, or has not analyzed the tables
yet, the statistics can be those of empty tables while the tables hold many rows; plans made from
them hashed whole tables once per claim or group (docs/benchmarks-data/2026-11-29/README.md)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import asyncpg
import orjson

from chronoq import Producer
from chronoq._store.connection import create_pool
from chronoq._store.sql import query


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


#: Tables small by nature, read whole on purpose: one row per paused or limited queue.
SMALL_TABLES = {"queue_controls"}


def whole_table_reads(plan: list[dict[str, Any]]) -> list[str]:
    """Reads of a whole table: sequential and bitmap scans, and index scans without a condition."""
    return [f"{n['Node Type']} {n.get('Relation Name', '')}".strip() for n in plan
            if n.get("Relation Name") not in SMALL_TABLES
            and (n["Node Type"] in ("Seq Scan", "Bitmap Heap Scan")
                 or (n["Node Type"] in ("Index Scan", "Index Only Scan") and "Index Cond" not in n))]


#: Every statement the timer's dispatch session and the worker's session run (keyed planning:
#: one plan per session, kept whatever the tables hold later).
KEYED_STATEMENTS = (
    "claim_due", "claim_limited", "lock_controlled_queues", "mark_controlled", "mark_dispatched", "postpone_unpublished",
    "hold_occurrence", "next_due", "record_set_aside",
    "drop_occurrences", "add_occurrences", "park_occurrences", "record_unrun_ticks",
    "lock_first_deliveries", "record_successes", "start_deliveries", "lock_live", "unstart_deliveries",
    "record_retry", "record_dead", "record_cancelled", "retry_policy",
)


async def kept_plan(conn: asyncpg.Connection, statement: str) -> list[dict[str, Any]]:
    """The plan the session keeps for ``statement``: prepared, then explained as executed (the
    values do not matter to a plan made for no particular values)."""
    parameters = len((await conn.prepare(query(statement))).get_parameters())
    await conn.execute(f"PREPARE kept AS {query(statement)}")
    try:
        nulls = ", ".join(["NULL"] * parameters)
        document = orjson.loads(await conn.fetchval(f"EXPLAIN (FORMAT JSON) EXECUTE kept({nulls})" if parameters
                                                    else "EXPLAIN (FORMAT JSON) EXECUTE kept"))
    finally:
        await conn.execute("DEALLOCATE kept")
    return list(nodes(document[0]["Plan"]))


async def test_the_hot_statements_keep_plans_that_look_rows_up_by_key_under_statistics_of_empty_tables(
    settings,
) -> None:
    # A session as the timer's dispatch pool and the worker's pool open them.
    pool = await create_pool(settings.database_url, max_size=1, planning="keyed")
    try:
        async with pool.acquire() as conn:
            assert await conn.fetchval("SHOW plan_cache_mode") == "force_generic_plan"
            # A scan disabled here but the only way to a table (queue_controls, in a function the
            # claim calls) inflates a statement's cost past JIT's threshold: it would be compiled,
            # for a tenth of a second, at every run.
            assert await conn.fetchval("SHOW jit") == "off"
            await conn.execute("VACUUM ANALYZE chronoq.wheel, chronoq.jobs, chronoq.results, chronoq.queue_controls,"
                               " chronoq.queue_dispatches")  # statistics: empty
            plans = {statement: await kept_plan(conn, statement) for statement in KEYED_STATEMENTS}
            # Made now, kept for the session: they must not read a table whole once it holds
            # millions of rows (the statistics may still be these).
            claim_scans = [n["Node Type"] for n in plans["claim_due"] if n.get("Relation Name") == "wheel"]
            assert claim_scans[0] == "Index Scan"
            # Free rows through the index that a paused or limited queue's rows are not in:
            # however many of them wait, the claim for other queues never walks past them.
            assert next(n.get("Index Name") for n in plans["claim_due"] if n.get("Relation Name") == "wheel") == "wheel_free"
    finally:
        await pool.close()
    assert {statement: whole_table_reads(plan) for statement, plan in plans.items()} == \
        {statement: [] for statement in KEYED_STATEMENTS}


async def test_the_timer_counts_the_due_backlog_only_when_asked(settings, producer: Producer) -> None:
    """The timer reads next_due after every batch that did not fill; the backlog count in it (a
    scan of the wheel when the statistics expect many due rows) runs at most once a second."""
    from chronoq._store import wheel

    await producer.enqueue_many([{"queue": "now", "payload": {}}] * 5)
    pool = await create_pool(settings.database_url, max_size=1, planning="keyed")
    try:
        async with pool.acquire() as conn:
            assert (await wheel.next_due(conn, count_backlog=True)).backlog == 5
            assert (await wheel.next_due(conn, count_backlog=False)).backlog is None

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
