"""Timer-side statements: claim due occurrences, mark them dispatched, postpone, poison."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import asyncpg

from chronoq._store.sql import query


async def claim_due(conn: asyncpg.Connection, limit: int) -> list[asyncpg.Record]:
    """Must run inside a transaction: the claimed rows stay locked until it ends."""
    return await conn.fetch(query("claim_due"), limit)


async def mark_dispatched(
    conn: asyncpg.Connection, keys: Sequence[str], leases: Sequence[timedelta]
) -> None:
    if keys:
        await conn.execute(query("mark_dispatched"), list(keys), list(leases))


async def postpone(conn: asyncpg.Connection, keys: Sequence[str], pause: timedelta, error: str) -> None:
    if keys:
        await conn.execute(query("postpone_unpublished"), list(keys), pause, error)


async def mark_poison(conn: asyncpg.Connection, keys: Sequence[str]) -> int:
    if not keys:
        return 0
    return await conn.fetchval(query("mark_poison"), list(keys))


async def next_due(conn: asyncpg.Connection) -> tuple[float, float | None]:
    """(database epoch now, seconds until the earliest due row or None)."""
    row = await conn.fetchrow(query("next_due"))
    return row["db_now"], row["due_in"]
