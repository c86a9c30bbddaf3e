"""What a claim tells the timer about the wheel besides its rows: when the next row is due and
whether due rows were left to others. After a batch that claimed rows the timer sleeps on this,
without asking the wheel again (timer/dispatch.py, timer/wakeups.py)."""

from __future__ import annotations

from datetime import timedelta

import asyncpg
import pytest

from chronoq import Producer
from chronoq._store import wheel
from chronoq._store.connection import connect
from chronoq.timer.batch import Look


def look_of(rows: list[asyncpg.Record]) -> Look:
    return Look(rows[0]["db_epoch"], rows[0]["next_due_in"], rows[0]["due_now"] > len(rows))


async def test_a_claim_says_when_the_next_row_is_due_and_whether_it_left_due_rows(settings, producer: Producer) -> None:
    await producer.enqueue_many([{"queue": "now", "payload": {}}] * 2)
    await producer.enqueue("later", {}, delay=timedelta(hours=1))
    conn = await connect(settings.database_url)
    try:
        claim = conn.transaction()
        await claim.start()
        db_now = await conn.fetchval("SELECT extract(epoch FROM now())::float8")
        one = look_of(await wheel.claim_due(conn, 1))
        await claim.rollback()  # the rows stay due for the next claim
        assert one.others_due  # the second due row is beyond the limit
        assert one.due_in == pytest.approx(3600, abs=60)
        assert one.db_now == db_now  # the transaction's clock
        async with conn.transaction():
            both = await wheel.claim_due(conn, 5)
            assert len(both) == 2 and not look_of(both).others_due
            assert look_of(both).due_in == pytest.approx(3600, abs=60)
    finally:
        await conn.close()


async def test_a_claim_that_skips_rows_locked_by_another_batch_says_so(settings, producer: Producer) -> None:
    await producer.enqueue_many([{"queue": "now", "payload": {}}] * 2)
    first, second = await connect(settings.database_url), await connect(settings.database_url)
    try:
        async with first.transaction():
            assert len(await wheel.claim_due(first, 1)) == 1  # another timer's batch, in flight
            async with second.transaction():
                rows = await wheel.claim_due(second, 5)
                assert len(rows) == 1 and look_of(rows).others_due
                assert look_of(rows).due_in is None  # nothing due later
    finally:
        await first.close()
        await second.close()
