"""Statements for dead occurrences: counts per queue and replay."""

from __future__ import annotations

import asyncpg

from chronoq._store.connection import Connection
from chronoq._store.sql import query


async def counts(conn: Connection, queue: str | None) -> list[asyncpg.Record]:
    return await conn.fetch(query("dead_counts"), queue)


async def replay(conn: Connection, queue: str, occurrence_key: str | None, limit: int) -> list[str]:
    return [r["occurrence_key"] for r in await conn.fetch(query("replay_dead"), queue, occurrence_key, limit)]
