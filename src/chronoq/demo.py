"""``chronoq demo``: the whole pipeline on the local services, checked end to end.

Migrates, starts real timer and worker processes (the same ``chronoq timer`` and
``chronoq worker`` an operator runs), enqueues a few thousand jobs due over the next seconds —
some fail once, one always fails — shows progress, and ends with a summary whose ``lost`` and
``duplicate effects`` must both be 0. Every handler writes an effect row through ``ctx.db``
into a table with no unique constraint, so a duplicate effect would be counted, not hidden.
"""

from __future__ import annotations

import asyncio
import subprocess
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from chronoq._runtime.config import Settings
from chronoq._runtime.processes import start_fleet, stop
from chronoq._store import maintenance
from chronoq.commands import migrate
from chronoq.consumer.context import JobContext
from chronoq.consumer.registry import Worker
from chronoq.producer import Producer
from chronoq.schemas.job import RetryPolicy

QUEUE = "chronoq.demo"
SETUP_SQL = """
CREATE SCHEMA IF NOT EXISTS chronoq_demo;
CREATE TABLE IF NOT EXISTS chronoq_demo.effects (
    run_id text NOT NULL, job_id bigint NOT NULL, occurrence_key text NOT NULL,
    attempt integer NOT NULL, at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS effects_run ON chronoq_demo.effects (run_id);
"""
EFFECT_SQL = "INSERT INTO chronoq_demo.effects (run_id, job_id, occurrence_key, attempt) VALUES ($1, $2, $3, $4)"
DUPLICATES_SQL = """
SELECT coalesce(sum(n - 1), 0) FROM (
    SELECT count(*) AS n FROM chronoq_demo.effects WHERE run_id = $1 GROUP BY occurrence_key HAVING count(*) > 1
) AS d
"""


class DemoPayload(BaseModel):
    run: str
    i: int
    fail_times: int = 0


worker = Worker()


@worker.handler(QUEUE)
async def demo_job(ctx: JobContext, payload: DemoPayload) -> None:
    # The effect commits with the result row or not at all: a failed attempt's row rolls back.
    await ctx.db.execute(EFFECT_SQL, payload.run, ctx.job_id, ctx.idempotency_key, ctx.attempt)
    if ctx.attempt <= payload.fail_times:
        raise RuntimeError(f"planned failure {ctx.attempt} of {payload.fail_times}")


async def run_demo(settings: Settings, *, jobs: int, spread: timedelta, workers: int, timers: int) -> int:
    console = Console(highlight=False)
    console.print(f"[bold]chronoq demo[/bold]: {jobs} jobs over {spread.total_seconds():g}s, "
                  f"{timers} timer(s), {workers} worker(s)")
    await migrate(settings)
    logs = Path(tempfile.mkdtemp(prefix="chronoq-demo-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        async with Producer(settings.database_url) as producer:
            async with producer.pool.acquire() as conn:
                await conn.execute(SETUP_SQL)
                # Earlier runs' dead rows would slow this one where autovacuum is off.
                await maintenance.vacuum_hot_tables(conn)
            await start_fleet(settings, worker_target="chronoq.demo:worker", workers=workers, timers=timers,
                              logs=logs, procs=procs)
            console.print(f"processes up (logs in {logs})")
            run = uuid.uuid4().hex[:8]
            ids = await _enqueue(producer, run, jobs, spread)
            summary = await _watch(console, producer, ids, spread)
            async with producer.pool.acquire() as conn:
                duplicates = await conn.fetchval(DUPLICATES_SQL, run)
    finally:
        codes = stop(procs)
    return _report(console, len(ids), summary, duplicates, codes)


async def _enqueue(producer: Producer, run: str, jobs: int, spread: timedelta) -> list[int]:
    quick = RetryPolicy(max_attempts=3, backoff_base=timedelta(milliseconds=300), backoff_cap=timedelta(seconds=2))
    lead = 1.0  # seconds before the first job is due, so every job is enqueued ahead of time
    specs = [
        {
            "queue": QUEUE,
            "payload": {"run": run, "i": i, "fail_times": 1 if i % 10 == 3 else 0},
            "delay": lead + spread.total_seconds() * i / max(jobs, 1),
            "retry": quick,
        }
        for i in range(jobs)
    ]
    # One job that always fails: it must end dead after max_attempts, visible in the DLQ.
    specs.append({"queue": QUEUE, "payload": {"run": run, "i": -1, "fail_times": 99}, "delay": lead, "retry": quick})
    ids: list[int] = []
    for start in range(0, len(specs), 5000):
        ids += await producer.enqueue_many(specs[start : start + 5000])
    return ids


async def _watch(console: Console, producer: Producer, ids: list[int], spread: timedelta) -> dict[str, Any]:
    deadline = time.monotonic() + spread.total_seconds() + 60
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("finished", total=len(ids))
        while True:
            summary = await producer.summary(ids)
            done = summary["succeeded"] + summary["dead"] + summary["cancelled"] + summary["skipped"]
            progress.update(
                task, completed=done,
                description=f"succeeded {summary['succeeded']} · retried {summary['retried']} · dead {summary['dead']}",
            )
            if summary["pending"] == 0 or time.monotonic() > deadline:
                return summary
            await asyncio.sleep(0.2)


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f} ms"


def _report(console: Console, enqueued: int, s: dict[str, Any], duplicates: int, codes: list[int]) -> int:
    finished = s["succeeded"] + s["dead"] + s["cancelled"] + s["skipped"]
    lost = enqueued - finished
    table = Table(title="chronoq demo summary")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for name, value in (
        ("enqueued", enqueued), ("succeeded", s["succeeded"]), ("retried", s["retried"]), ("dead", s["dead"]),
        ("lost (must be 0)", lost), ("duplicate effects (must be 0)", duplicates),
        ("lateness p50", _ms(s["lateness_p50"])), ("lateness p99", _ms(s["lateness_p99"])),
        ("processes exited cleanly", all(c == 0 for c in codes)),
    ):
        table.add_row(name, str(value))
    console.print(table)
    ok = lost == 0 and duplicates == 0 and all(c == 0 for c in codes)
    console.print("[green]OK[/green]" if ok else "[red]FAILED[/red]")
    return 0 if ok else 1
