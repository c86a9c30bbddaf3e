"""What each CLI command does, as plain async functions (the CLI parses, these act)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from datetime import datetime, timedelta
from typing import Any

import orjson
from rich.console import Console
from rich.live import Live
from rich.table import Table

from chronoq._broker.connection import connect as connect_broker
from chronoq._broker.topology import Topology, declare_exchanges, declare_submissions
from chronoq._runtime.config import Settings
from chronoq._runtime.hooks import Hooks, PrometheusHooks
from chronoq._runtime.service import run_until_signalled
from chronoq._store import migrate as migrations
from chronoq._store.connection import database_errors
from chronoq.consumer.registry import Worker
from chronoq.consumer.service import WorkerService
from chronoq.producer import Producer
from chronoq.schemas.views import JobView
from chronoq.timer import Timer

# Wide enough for the status table when the output is a pipe or a file.
out = Console(highlight=False, width=None if sys.stdout.isatty() else 160)


async def migrate(settings: Settings, *, print_sql: bool = False, roles: bool = False) -> int:
    if print_sql:
        sys.stdout.write(migrations.script())
        if roles:
            sys.stdout.write("\n" + migrations.roles_script())
        return 0
    with database_errors():
        applied = await migrations.migrate(settings.database_url)
        if roles:
            await migrations.create_roles(settings.database_url)
    broker = await connect_broker(settings.amqp_url, name="chronoq-migrate")
    try:
        channel = await broker.channel()
        topology = Topology(settings.namespace, settings.queue_type, settings.delivery_limit)
        await declare_exchanges(channel, topology)
        await declare_submissions(channel, topology)
    finally:
        await broker.close()
    names = ", ".join(f"{m.version:03d}_{m.name}" for m in applied) or "none (up to date)"
    out.print(f"migrations applied: {names}; RabbitMQ exchanges declared under '{settings.namespace}'"
              + ("; roles chronoq_producer, chronoq_timer, chronoq_worker granted" if roles else ""))
    return 0


def _hooks(settings: Settings) -> Hooks | None:
    if settings.metrics_port is None:
        return None
    hooks = PrometheusHooks()
    hooks.serve(settings.metrics_port)
    return hooks


def schema() -> int:
    from chronoq.schemas.submission import json_schema

    print(orjson.dumps(json_schema(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode())
    return 0


async def timer(settings: Settings) -> int:
    await run_until_signalled(Timer(settings, hooks=_hooks(settings)))
    return 0


async def worker(settings: Settings, registry: Worker, queues: list[str] | None) -> int:
    await run_until_signalled(WorkerService(registry, settings, queues=queues, hooks=_hooks(settings)))
    return 0


async def enqueue(settings: Settings, queue: str, payload: Any, **options: Any) -> int:
    async with Producer(settings.database_url) as producer:
        job_id = await producer.enqueue(queue, payload, **options)
    print(job_id)
    return 0


async def status(settings: Settings, window: timedelta, *, as_json: bool, watch: bool = False) -> int:
    from chronoq.cli import queue_table

    async with Producer(settings.database_url) as producer:
        if watch:
            await _watch_status(producer, window)
            return 0
        rows = await producer.status(window)
    if as_json:
        print(orjson.dumps([r.model_dump() for r in rows], option=orjson.OPT_INDENT_2).decode())
    else:
        out.print(queue_table(rows))
    return 0


async def _watch_status(producer: Producer, window: timedelta, every: float = 1.0) -> None:
    """A live view until Ctrl-C: the status table plus throughput over the last 10 seconds."""
    from chronoq.cli import queue_table

    recent = timedelta(seconds=10)
    # Ctrl-C ends the loop between refreshes, so the view and the pool close in order instead of
    # a KeyboardInterrupt landing in the middle of a query.
    quit_requested = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, quit_requested.set)
    try:
        with Live(console=out, refresh_per_second=4, screen=False) as live:
            while not quit_requested.is_set():
                rows = await producer.status(window)
                rates = {r.queue: r.succeeded / recent.total_seconds() for r in await producer.status(recent)}
                table = queue_table(rows, rates=rates)
                table.caption = f"outcomes and lateness over the last {window}; refreshed every {every:g}s (Ctrl-C to quit)"
                live.update(table)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(quit_requested.wait(), every)
    finally:
        loop.remove_signal_handler(signal.SIGINT)


async def show_job(settings: Settings, job_id: int, *, as_json: bool) -> int:
    async with Producer(settings.database_url) as producer:
        job = await producer.get(job_id)
    if as_json:
        print(job.model_dump_json(indent=2))
    else:
        render_job(job)
    return 0


async def schedule(settings: Settings, queue: str, payload: Any, **options: Any) -> int:
    async with Producer(settings.database_url) as producer:
        job_id = await producer.schedule(queue, payload, **options)
    print(job_id)
    return 0


async def change_job(settings: Settings, action: str, job_id: int) -> int:
    """cancel, pause or resume."""
    async with Producer(settings.database_url) as producer:
        changed = await getattr(producer, action)(job_id)
    past = {"cancel": "cancelled", "pause": "paused", "resume": "resumed"}[action]
    other = "paused" if action == "resume" else "active"
    out.print(f"job {job_id} {past}" if changed else f"job {job_id} was not changed (already {past} or not {other})")
    return 0


async def list_jobs(settings: Settings, queue: str | None, state: str | None, limit: int, *, as_json: bool) -> int:
    async with Producer(settings.database_url) as producer:
        jobs = await producer.list_jobs(queue=queue, state=state, limit=limit)
    if as_json:
        print(orjson.dumps([j.model_dump(mode="json") for j in jobs], option=orjson.OPT_INDENT_2).decode())
        return 0
    table = Table(title="chronoq jobs")
    for column in ("id", "queue", "kind", "state", "key", "schedule", "next tick"):
        table.add_column(column)
    for j in jobs:
        when = f"{j.cron} ({j.timezone})" if j.cron else "-"
        table.add_row(str(j.id), j.queue, j.kind, j.state, j.key or "-", when, _time(j.next_fire_at))
    out.print(table)
    return 0


async def show_ticks(settings: Settings, job_id: int, since: datetime | None, limit: int, *, as_json: bool) -> int:
    async with Producer(settings.database_url) as producer:
        ticks = await producer.ticks(job_id, since=since, limit=limit)
    if as_json:
        print(orjson.dumps([t.model_dump(mode="json") for t in ticks], option=orjson.OPT_INDENT_2).decode())
        return 0
    table = Table(title=f"ticks of job {job_id}")
    for column in ("tick", "state", "reason", "attempt", "detail"):
        table.add_column(column)
    for t in ticks:
        table.add_row(_time(t.fire_at), t.state, t.reason or "", str(t.attempt), t.detail or "")
    out.print(table)
    return 0


def render_job(job: JobView) -> None:
    out.print(
        f"[bold]job {job.id}[/bold]  queue={job.queue}  kind={job.kind}  state={job.state}"
        f"  key={job.key or '-'}  max_attempts={job.max_attempts}  timeout={job.timeout_s}s"
        f"  created={_time(job.created_at)}"
    )
    table = Table(show_lines=False)
    for column in ("occurrence", "state", "attempt", "when", "outcome / error"):
        table.add_column(column)
    for occurrence in job.occurrences:
        table.add_row(
            occurrence.occurrence_key, occurrence.state, str(occurrence.attempt),
            _time(occurrence.run_at), occurrence.reason or occurrence.error or "",
        )
        for a in occurrence.attempts:
            table.add_row("", f"  attempt {a.attempt}", "", _time(a.started_at), f"{a.outcome} {a.error or ''}".strip())
    out.print(table)


def _time(value: datetime | None) -> str:
    return "-" if value is None else value.isoformat(timespec="milliseconds")
