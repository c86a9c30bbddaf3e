"""``chronoq demo``: the whole pipeline on the local services, checked end to end.

Migrates, starts real timer and worker processes (the same ``chronoq timer`` and
``chronoq worker`` an operator runs) with the demo application (``chronoq.demo``), enqueues a
few thousand jobs due over the next seconds — some fail once, one always fails — shows
progress, and ends with a summary whose ``lost`` and ``duplicate effects`` must both be 0.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from chronoq._runtime.config import Settings
from chronoq._runtime.processes import start_fleet, stop
from chronoq._store import demo as store
from chronoq._store import maintenance
from chronoq.cli import render
from chronoq.cli.arguments import MAX_DEMO_JOBS, MAX_DEMO_SPREAD, MAX_PROCESSES, duration, integer
from chronoq.cli.command import Actions, add_command, run_async
from chronoq.cli.services import migrate
from chronoq.cli.settings import FLEET
from chronoq.demo import QUEUE
from chronoq.producer import Producer
from chronoq.schemas.job import RetryPolicy


def add_commands(actions: Actions) -> None:
    demo = add_command(actions, "demo", "Run the whole pipeline on the local services and check nothing was lost.",
                       settings=FLEET, run=_demo)
    demo.add_argument("--jobs", type=integer("jobs", 1, MAX_DEMO_JOBS), default=3000, help="jobs to enqueue (default 3000)")
    demo.add_argument("--spread", type=duration("spread", maximum=MAX_DEMO_SPREAD, positive=True),
                      default=timedelta(seconds=5), help="spread of due times (default 5s)")
    demo.add_argument("--workers", type=integer("workers", 1, MAX_PROCESSES), default=2, help="worker processes (default 2)")
    demo.add_argument("--timers", type=integer("timers", 1, MAX_PROCESSES), default=1, help="timer processes (default 1)")
    demo.add_argument("--external", action="store_true",
                      help="start no processes: use timers and workers already running (docker compose)")


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    return run_async(run_demo(settings, jobs=args.jobs, spread=args.spread, workers=0 if args.external else args.workers,
                              timers=0 if args.external else args.timers))


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
                await store.setup(conn)
                # Earlier runs' dead rows would slow this one where autovacuum is off.
                await maintenance.vacuum_hot_tables(conn)
            await start_fleet(settings, worker_target="chronoq.demo:worker", workers=workers, timers=timers,
                              logs=logs, procs=procs)
            console.print(f"processes up (logs in {logs})")
            run = uuid.uuid4().hex[:8]
            ids = await _enqueue(producer, run, jobs, spread)
            summary = await _watch(console, producer, ids, spread)
            async with producer.pool.acquire() as conn:
                duplicates = await store.duplicate_effects(conn, run)
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


def _report(console: Console, enqueued: int, s: dict[str, Any], duplicates: int, codes: list[int]) -> int:
    finished = s["succeeded"] + s["dead"] + s["cancelled"] + s["skipped"]
    lost = enqueued - finished
    rows = [
        ("enqueued", enqueued), ("succeeded", s["succeeded"]), ("retried", s["retried"]), ("dead", s["dead"]),
        ("lost (must be 0)", lost), ("duplicate effects (must be 0)", duplicates),
        ("lateness p50", render.ms(s["lateness_p50"], " ms")), ("lateness p99", render.ms(s["lateness_p99"], " ms")),
        ("processes exited cleanly", all(c == 0 for c in codes)),
    ]
    console.print(render.table("chronoq demo summary", ("measure", "value"), ([name, str(v)] for name, v in rows),
                               right=("value",)))
    ok = lost == 0 and duplicates == 0 and all(c == 0 for c in codes)
    console.print("[green]OK[/green]" if ok else "[red]FAILED[/red]")
    return 0 if ok else 1
