"""The chaos workload's handlers. Every run writes a ledger row through ctx.db (no unique
constraint: a duplicate effect stays visible) and, before its commit, appends the occurrence to
an fsynced "external effect" file (duplicates there are what only an idempotency key absorbs)."""

from __future__ import annotations

import asyncio
import os

from chronoq import JobContext, Worker

worker = Worker()
EFFECTS_FILE = os.environ.get("CHAOS_EFFECTS_FILE", "/tmp/chronoq-chaos-effects.log")
LEDGER_SQL = """
INSERT INTO chaos_ledger (job_id, occurrence_key, attempt, pid, at) VALUES ($1, $2, $3, $4, clock_timestamp())
"""


def _external_effect(key: str) -> None:
    with open(EFFECTS_FILE, "a") as f:
        f.write(f"{key}\n")
        f.flush()
        os.fsync(f.fileno())


@worker.handler("chaos")
async def chaos(ctx: JobContext, payload: dict) -> None:
    kind = payload.get("kind", "plain")
    if kind == "failing":
        raise RuntimeError("always fails")
    if kind == "flaky" and ctx.attempt <= payload.get("fail_times", 1):
        raise RuntimeError("fails this time")
    if kind == "slow" and ctx.attempt == 1:
        await asyncio.sleep(payload.get("seconds", 3))
    await ctx.db.execute(LEDGER_SQL, ctx.job_id, ctx.idempotency_key, ctx.attempt, os.getpid())
    _external_effect(ctx.idempotency_key)
