"""Handlers the subprocess workers in the tests run (``chronoq worker tests.handlers:worker``).

Every handler writes an effect row through ``ctx.db`` into ``test_effects`` (``limited`` and
``debounced``: into the ``test_runs`` table of their tests), which has no unique constraint: a
duplicate effect stays visible to the test.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import orjson

from chronoq import JobContext, Worker

worker = Worker()


async def _effect(ctx: JobContext) -> None:
    await ctx.db.execute(
        "INSERT INTO test_effects (job_id, occurrence_key, attempt, pid) VALUES ($1, $2, $3, $4)",
        ctx.job_id, ctx.idempotency_key, ctx.attempt, os.getpid(),
    )


@worker.handler("effects")
async def effects(ctx: JobContext, payload: dict) -> dict:
    await _effect(ctx)
    return {"pid": os.getpid()}


@worker.handler("hang-once")
async def hang_once(ctx: JobContext, payload: dict) -> None:
    """Writes its effect, then the first process to run it announces itself with a file and
    hangs (the test SIGKILLs it there, mid-handler, with the effect uncommitted). Any later
    process finishes normally."""
    await _effect(ctx)
    if await asyncio.to_thread(_first_to_start, Path(payload["marker_dir"])):
        await asyncio.sleep(3600)


def _first_to_start(marker_dir: Path) -> bool:
    """Whether no process started this job before; if so, leaves this process's mark."""
    if any(marker_dir.glob("started-*")):
        return False
    (marker_dir / f"started-{os.getpid()}").touch()
    return True


@worker.handler("slow")
async def slow(ctx: JobContext, payload: dict) -> None:
    """Announces its start with a file, then takes `seconds` to finish."""
    (Path(payload["marker_dir"]) / f"started-{ctx.job_id}").touch()
    await asyncio.sleep(payload["seconds"])
    await _effect(ctx)


@worker.handler("crashy")
async def crashy(ctx: JobContext, payload: dict) -> None:
    """Kills its own worker process (a segfault, an OOM kill) when asked to."""
    if payload["crash"]:
        os.kill(os.getpid(), 9)
    await _effect(ctx)


@worker.handler("limited")
async def limited(ctx: JobContext, payload: dict) -> None:
    """Takes `seconds`, and records when it ran by the database's clock (``test_runs``): the
    test measures from these how many ran at once."""
    started = await ctx.db.fetchval("SELECT clock_timestamp()")
    await asyncio.sleep(payload["seconds"])
    await ctx.db.execute(
        "INSERT INTO test_runs (occurrence_key, started_at, finished_at, pid) VALUES ($1, $2, clock_timestamp(), $3)",
        ctx.idempotency_key, started, os.getpid(),
    )


@worker.handler("debounced")
async def debounced(ctx: JobContext, payload: dict) -> None:
    """Records the run (its payload, and the latest time its occurrence was due by) in
    ``test_runs``; the first run of every occurrence whose payload asks for it kills its worker
    with the record uncommitted, leaving a mark in ``marker_dir`` so that the next one finishes."""
    due_by = await ctx.db.fetchval("SELECT due_by FROM chronoq.wheel WHERE occurrence_key = $1", ctx.idempotency_key)
    await ctx.db.execute("INSERT INTO test_runs (occurrence_key, payload, started_at, due_by)"
                         " VALUES ($1, $2::text::jsonb, clock_timestamp(), $3)",
                         ctx.idempotency_key, orjson.dumps(payload).decode(), due_by)
    mark = Path(payload["marker_dir"]) / f"killed-{ctx.idempotency_key.replace(':', '-')}"
    if payload["kill"] and not await asyncio.to_thread(mark.exists):
        await asyncio.to_thread(mark.touch)
        os.kill(os.getpid(), 9)
