"""``chronoq jobs show|ls|ticks|cancel|pause|resume|trigger``: inspect or change jobs."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from chronoq._runtime.config import Settings
from chronoq._store import reads
from chronoq._store.connection import database_errors
from chronoq.cli import render
from chronoq.cli.arguments import EARLIEST_SINCE, LATEST_SINCE, job_id, limit, one_of, queue, time
from chronoq.cli.command import Actions, add_actions, add_command, run_async
from chronoq.cli.settings import DATABASE
from chronoq.producer import Producer

CHANGES = {
    "cancel": ("cancel a job and its pending occurrences", "cancelled"),
    "pause": ("pause a job: its ticks are skipped (recorded) until resumed", "paused"),
    "resume": ("resume a paused job from its next tick", "resumed"),
}


def add_commands(actions: Actions) -> None:
    jobs = add_actions(add_command(actions, "jobs", "Inspect or change jobs.", settings=DATABASE), "jobs_command")
    show = add_command(jobs, "show", "a job with every occurrence, attempt and error", settings=DATABASE, run=_show)
    show.add_argument("job_id", type=job_id)
    show.add_argument("--json", action="store_true")
    for action, (text, _) in CHANGES.items():
        change = add_command(jobs, action, text, settings=DATABASE, run=_change)
        change.add_argument("job_id", type=job_id)
    trigger = add_command(jobs, "trigger", "run a recurring job once now (a manual run in its ledger); its schedule "
                                           "goes on unchanged", settings=DATABASE, run=_trigger)
    trigger.add_argument("job_id", type=job_id)
    listing = add_command(jobs, "ls", "list jobs, newest first, with what happened to each last", settings=DATABASE,
                          run=_list)
    listing.add_argument("--queue", type=queue)
    listing.add_argument("--state", **one_of("state", "active", "paused", "cancelled"))
    listing.add_argument("--limit", **limit(100))
    listing.add_argument("--json", action="store_true")
    ticks = add_command(jobs, "ticks", "every nominal tick of a job and what happened to it", settings=DATABASE,
                        run=_ticks)
    ticks.add_argument("job_id", type=job_id)
    ticks.add_argument("--since", type=time("since", earliest=EARLIEST_SINCE, latest=LATEST_SINCE),
                       help="ISO 8601 time with offset")
    ticks.add_argument("--limit", **limit(1000))
    ticks.add_argument("--json", action="store_true")


def _show(args: argparse.Namespace, settings: Settings) -> int:
    return run_async(show_job(settings, args.job_id, as_json=args.json))


def _change(args: argparse.Namespace, settings: Settings) -> int:
    return run_async(change_job(settings, args.jobs_command, args.job_id))


def _trigger(args: argparse.Namespace, settings: Settings) -> int:
    return run_async(trigger_job(settings, args.job_id))


def _list(args: argparse.Namespace, settings: Settings) -> int:
    return run_async(list_jobs(settings, args.queue, args.state, args.limit, as_json=args.json))


def _ticks(args: argparse.Namespace, settings: Settings) -> int:
    return run_async(show_ticks(settings, args.job_id, args.since, args.limit, as_json=args.json))


async def show_job(settings: Settings, job_id: int, *, as_json: bool) -> int:
    async with Producer(settings.database_url) as producer:
        job = await producer.get(job_id)
    if as_json:
        print(job.model_dump_json(indent=2))
    else:
        render.job(job)
    return 0


async def change_job(settings: Settings, action: str, job_id: int) -> int:
    """cancel, pause or resume."""
    async with Producer(settings.database_url) as producer:
        changed = await getattr(producer, action)(job_id)
    past = CHANGES[action][1]
    other = "paused" if action == "resume" else "active"
    render.out.print(f"job {job_id} {past}" if changed else f"job {job_id} was not changed (already {past} or not {other})")
    return 0


async def trigger_job(settings: Settings, job_id: int) -> int:
    async with Producer(settings.database_url) as producer:
        key = await producer.trigger(job_id)
    render.out.print(f"job {job_id} triggered: manual run {key}")
    return 0


async def list_jobs(settings: Settings, queue: str | None, state: str | None, limit: int, *, as_json: bool) -> int:
    """The jobs, each with the outcome of its latest finished occurrence (``last_outcome``)."""
    async with Producer(settings.database_url) as producer:
        jobs = await producer.list_jobs(queue=queue, state=state, limit=limit)
        with database_errors():
            async with producer.pool.acquire() as conn:
                outcomes = await reads.last_outcomes(conn, [j.id for j in jobs])
    if as_json:
        render.print_json([{**j.model_dump(mode="json"), "last_outcome": _outcome(outcomes.get(j.id))} for j in jobs])
    else:
        render.jobs(jobs, outcomes)
    return 0


def _outcome(record: Mapping[str, Any] | None) -> dict[str, object] | None:
    if record is None:
        return None
    return {"state": record["state"], "reason": record["reason"], "finished_at": record["finished_at"].isoformat()}


async def show_ticks(settings: Settings, job_id: int, since: datetime | None, limit: int, *, as_json: bool) -> int:
    async with Producer(settings.database_url) as producer:
        ticks = await producer.ticks(job_id, since=since, limit=limit)
    if as_json:
        render.print_json([t.model_dump(mode="json") for t in ticks])
    else:
        render.ticks(job_id, ticks)
    return 0
