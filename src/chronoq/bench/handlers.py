"""The benchmark's handlers (``chronoq worker chronoq.bench.handlers:worker``).

``noop`` does nothing; ``db`` writes one row through ``ctx.db``, in the transaction that commits
the occurrence's result — the work a real handler with exactly-once effects does.
"""

from __future__ import annotations

from pydantic import BaseModel

from chronoq.consumer.context import JobContext
from chronoq.consumer.registry import Worker

QUEUE = "chronoq.bench"
SETUP_SQL = """
CREATE SCHEMA IF NOT EXISTS chronoq_bench;
CREATE TABLE IF NOT EXISTS chronoq_bench.effects (occurrence_key text NOT NULL, at timestamptz NOT NULL DEFAULT now());
"""
EFFECT_SQL = "INSERT INTO chronoq_bench.effects (occurrence_key) VALUES ($1)"


class BenchPayload(BaseModel):
    mode: str = "noop"


worker = Worker()


@worker.handler(QUEUE)
async def bench_job(ctx: JobContext, payload: BenchPayload) -> None:
    if payload.mode == "db":
        await ctx.db.execute(EFFECT_SQL, ctx.idempotency_key)
