"""Handlers the guarantee tests run in real worker processes
(``chronoq worker tests.guarantee_handlers:worker``).

Each run is written down outside the job's transaction (a line in a file), so that a run whose
writes rolled back, or whose process was killed, is still seen by the test.
"""

from __future__ import annotations

import asyncio
import json
import os
from datetime import timedelta
from pathlib import Path

from chronoq import JobContext, Retry, Worker
from tests.harness import eventually

worker = Worker()


def _append(path: Path, record: dict) -> int:
    """Append one JSON line; returns how many lines the file holds now (this run's number)."""
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")
    with path.open() as f:
        return sum(1 for _ in f)


@worker.handler("scripted")
async def scripted(ctx: JobContext, payload: dict) -> None:
    """Records what this run saw, then does what the script says for this run's number:
    ``retry`` (raise Retry at once), ``hang`` (until the test kills the process) or ``succeed``."""
    record = {"key": ctx.idempotency_key, "attempt": ctx.attempt, "redelivered": ctx.redelivered, "pid": os.getpid()}
    run = await asyncio.to_thread(_append, Path(payload["log"]), record)
    action = payload["script"][run - 1]
    if action == "retry":
        raise Retry("scripted", delay=timedelta(0))
    if action == "hang":
        await asyncio.sleep(3600)


@worker.handler("held")
async def held(ctx: JobContext, payload: dict) -> None:
    """Writes its effect through ``ctx.db`` (the row lock on its occurrence held meanwhile), says
    so with a file, and returns only once the test creates the ``release`` file."""
    await ctx.db.execute(
        "INSERT INTO test_effects (job_id, occurrence_key, attempt, pid) VALUES ($1, $2, $3, $4)",
        ctx.job_id, ctx.idempotency_key, ctx.attempt, os.getpid(),
    )
    folder = Path(payload["dir"])
    (folder / f"holding-{os.getpid()}").touch()

    async def released() -> bool:
        return (folder / "release").exists()

    await eventually(released, timeout=300, what="the test to release the held job")
