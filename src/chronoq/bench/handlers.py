"""The benchmark's handlers (``chronoq worker chronoq.bench.handlers:worker``).

``noop`` does nothing; ``db`` writes one row through ``ctx.db``, in the transaction that commits
the occurrence's result — the work a real handler with exactly-once effects does.
"""

from __future__ import annotations

from pydantic import BaseModel

from chronoq._store import bench as store
from chronoq.consumer.context import JobContext
from chronoq.consumer.registry import Worker

QUEUE = "chronoq.bench"


class BenchPayload(BaseModel):
    mode: str = "noop"


worker = Worker()


@worker.handler(QUEUE)
async def bench_job(ctx: JobContext, payload: BenchPayload) -> None:
    if payload.mode == "db":
        await store.record_effect(ctx.db, ctx.idempotency_key)
