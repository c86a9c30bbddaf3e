"""Maintenance statements: whether autovacuum runs, and vacuuming the hot tables by hand."""

from __future__ import annotations

import asyncpg

from chronoq._store.sql import query


async def autovacuum_enabled(conn: asyncpg.Connection) -> bool:
    return await conn.fetchval(query("autovacuum_enabled"))


async def vacuum_hot_tables(conn: asyncpg.Connection) -> None:
    """Needs the tables' owner (the migrating role); runs outside any transaction."""
    await conn.execute(query("vacuum_hot_tables"))
