"""Statements of ``chronoq.testing``: what a handler run inline needs from the store."""

from __future__ import annotations

from datetime import datetime

from chronoq._store.connection import Connection
from chronoq._store.sql import query


async def occurrence_key(conn: Connection, job_id: int, fire_at: datetime) -> str:
    """The key the wheel gives this occurrence (``chronoq.occurrence_key``, the one format)."""
    key: str = await conn.fetchval(query("inline_occurrence_key"), job_id, fire_at)
    return key


async def decodes_jsonb_as_text(conn: Connection) -> bool:
    return isinstance(await conn.fetchval(query("empty_jsonb")), str)
