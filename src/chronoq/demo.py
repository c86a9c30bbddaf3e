"""The demo's application: a Worker with one handler (``chronoq worker chronoq.demo:worker``).

Every handler writes an effect row through ``ctx.db`` into a table with no unique constraint, so
a duplicate effect would be counted, not hidden; some jobs fail on their first attempts, as
their payload says. ``chronoq demo`` runs it end to end.
"""

from __future__ import annotations

from pydantic import BaseModel

from chronoq._store import demo as store
from chronoq.consumer.context import JobContext
from chronoq.consumer.registry import Worker

QUEUE = "chronoq.demo"


class DemoPayload(BaseModel):
    run: str
    i: int
    fail_times: int = 0


worker = Worker()


@worker.handler(QUEUE)
async def demo_job(ctx: JobContext, payload: DemoPayload) -> None:
    # The effect commits with the result row or not at all: a failed attempt's row rolls back.
    await store.record_effect(ctx.db, payload.run, ctx.job_id, ctx.idempotency_key, ctx.attempt)
    if ctx.attempt <= payload.fail_times:
        raise RuntimeError(f"planned failure {ctx.attempt} of {payload.fail_times}")


