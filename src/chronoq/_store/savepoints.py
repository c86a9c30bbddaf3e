"""The savepoint each handler's writes run in, inside its group's transaction."""

from __future__ import annotations

from chronoq._store.connection import Connection
from chronoq._store.sql import query


async def open_job(conn: Connection) -> None:
    await conn.execute(query("open_job_savepoint"))


async def keep_job(conn: Connection) -> None:
    """Keep the handler's writes; raises if the handler left the transaction aborted."""
    await conn.execute(query("keep_job_savepoint"))


async def undo_job(conn: Connection) -> None:
    await conn.execute(query("undo_job_savepoint"))
