"""Statements on queue controls: pause, resume and limits (docs/flow-control.md).

Each change runs in one transaction. A queue that ends neither paused nor limited loses its
control row, and its controlled rows become free rows again, due when they were.
"""

from __future__ import annotations

from chronoq._store.connection import Connection
from chronoq._store.sql import query
from chronoq.schemas.limits import QueueLimits


async def pause(conn: Connection, queue: str) -> bool:
    """True if this call paused the queue."""
    return bool(await conn.fetchval(query("pause_queue"), queue))


async def resume(conn: Connection, queue: str) -> bool:
    """True if this call resumed the queue (it was paused)."""
    async with conn.transaction():
        resumed = bool(await conn.fetchval(query("unpause_queue"), queue))
        await _free_if_uncontrolled(conn, queue)
    return resumed


async def set_limits(conn: Connection, queue: str, limits: QueueLimits) -> None:
    rate = limits.rate
    async with conn.transaction():
        await conn.execute(
            query("set_queue_limits"), queue, limits.max_running,
            None if rate is None else rate.count,
            None if rate is None else round(rate.period.total_seconds() * 1000),
        )
        if rate is None:
            await conn.execute(query("forget_queue_dispatches"), queue)
        await _free_if_uncontrolled(conn, queue)


async def _free_if_uncontrolled(conn: Connection, queue: str) -> None:
    if await conn.fetchval(query("drop_queue_control"), queue) is not None:
        await conn.execute(query("free_queue_rows"), queue)
