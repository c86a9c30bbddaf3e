"""Producer-side statements: enqueue (single and bulk) and cancel."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

import asyncpg
import orjson

from chronoq._store.sql import query
from chronoq.schemas.job import JobSpec


@dataclass(frozen=True)
class Enqueued:
    job_id: int
    created: bool  # False: a job with the same (queue, key) already existed


def milliseconds(delta: timedelta) -> int:
    return int(delta.total_seconds() * 1000)


def _trace_text(trace: dict[str, str] | None) -> str | None:
    return orjson.dumps(trace).decode() if trace else None


def _row(spec: JobSpec, payload: bytes) -> tuple:
    retry = spec.retry
    return (
        spec.queue,
        spec.key,
        payload.decode(),  # orjson's output is UTF-8
        retry.max_attempts,
        milliseconds(retry.backoff_base),
        milliseconds(retry.backoff_cap),
        retry.jitter,
        milliseconds(spec.timeout),
        spec.run_at,
        # No time given means now, by the database's clock.
        (spec.delay or timedelta(0)) if spec.run_at is None else None,
        spec.misfire,
        milliseconds(spec.misfire_grace),
    )


async def enqueue(conn: asyncpg.Connection, spec: JobSpec, payload: bytes, trace: dict[str, str] | None = None) -> Enqueued:
    args = (*_row(spec, payload), _trace_text(trace))
    # A concurrent enqueue of the same key can commit between our conflict check and our
    # read of the existing row; one more round always sees it.
    for _ in range(3):
        row = await conn.fetchrow(query("enqueue"), *args)
        if row is not None:
            return Enqueued(row["id"], row["created"])
    raise RuntimeError(f"enqueue of key {spec.key!r} found neither a new nor an existing job")


async def enqueue_many(
    conn: asyncpg.Connection, specs: Sequence[JobSpec], payloads: Sequence[bytes], trace: dict[str, str] | None = None
) -> list[Enqueued]:
    ids = [r["id"] for r in await conn.fetch(query("allocate_job_ids"), len(specs))]
    columns = list(zip(*(_row(s, p) for s, p in zip(specs, payloads, strict=True)), strict=True))
    inserted = {r["id"] for r in await conn.fetch(query("enqueue_many"), ids, *columns, _trace_text(trace))}
    result = [Enqueued(job_id, True) for job_id in ids]
    missing = [i for i, job_id in enumerate(ids) if job_id not in inserted]
    if missing:
        rows = await conn.fetch(
            query("existing_ids"), [specs[i].queue for i in missing], [specs[i].key for i in missing]
        )
        by_position = {r["ord"]: r["id"] for r in rows}
        for n, i in enumerate(missing, start=1):
            result[i] = Enqueued(by_position[n], False)
    return result


async def cancel(conn: asyncpg.Connection, job_id: int) -> tuple[bool, int]:
    """Returns (whether the job was active and is now cancelled, occurrences cancelled)."""
    row = await conn.fetchrow(query("cancel_job"), job_id)
    return row["cancelled"] > 0, row["occurrences"]


async def job_exists(conn: asyncpg.Connection, job_id: int) -> bool:
    return await conn.fetchval("SELECT EXISTS (SELECT FROM chronoq.jobs WHERE id = $1)", job_id)
