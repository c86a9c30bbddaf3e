"""The statements around handlers' writes in a group's transaction (consumer/writes.py decides
when each is sent)."""

from __future__ import annotations

from chronoq._store.connection import Connection
from chronoq._store.sql import query


async def plan_for_handlers(conn: Connection) -> None:
    await conn.execute(query("plan_for_handlers"))


async def plan_for_chronoq(conn: Connection) -> None:
    await conn.execute(query("plan_for_chronoq"))


async def open_job(conn: Connection) -> None:
    await conn.execute(query("open_job_savepoint"))


async def keep_job(conn: Connection) -> None:
    """Keep the handler's writes; raises if the handler left the transaction aborted."""
    await conn.execute(query("keep_job_savepoint"))


async def undo_job(conn: Connection) -> None:
    await conn.execute(query("undo_job_savepoint"))


async def check_usable(conn: Connection) -> None:
    """Raises ``InFailedSQLTransactionError`` if the transaction is aborted."""
    await conn.execute(query("transaction_usable"))
