"""The statements of ``chronoq demo``'s application: its effects table, written by its handler
in the transaction of each job's result, and the count of duplicate effects."""

from __future__ import annotations

from chronoq._store.connection import Connection
from chronoq._store.sql import query


async def setup(conn: Connection) -> None:
    await conn.execute(query("demo_setup"))


async def record_effect(conn: Connection, run: str, job_id: int, occurrence_key: str, attempt: int) -> None:
    await conn.execute(query("demo_effect"), run, job_id, occurrence_key, attempt)


async def duplicate_effects(conn: Connection, run: str) -> int:
    duplicates: int = await conn.fetchval(query("demo_duplicates"), run)
    return duplicates
