"""The database's clock, the only clock chronoq's decisions use.

Every time a decision rests on is Postgres's ``now()``: a skewed host clock (a producer's, a
timer's) cannot make a job due early or a tick fire twice. Code that needs the time as a value
reads it here. A statement that must read the clock at a point of its own (after waiting for
locks, say) reads it in that statement and returns it as ``db_now``.
"""

from __future__ import annotations

from datetime import datetime

from chronoq._store.connection import Connection
from chronoq._store.sql import query


async def db_now(conn: Connection) -> datetime:
    """The current transaction's start by the database's clock (outside a transaction: now)."""
    now: datetime = await conn.fetchval(query("db_now"))
    return now
