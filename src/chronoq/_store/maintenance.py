"""Maintenance statements: whether autovacuum runs, and vacuuming the hot tables by hand."""

from __future__ import annotations

from chronoq._store.connection import Connection
from chronoq._store.sql import query


async def autovacuum_enabled(conn: Connection) -> bool:
    enabled: bool = await conn.fetchval(query("autovacuum_enabled"))
    return enabled


async def vacuum_hot_tables(conn: Connection) -> None:
    """Needs the tables' owner (the migrating role); runs outside any transaction."""
    await conn.execute(query("vacuum_hot_tables"))
