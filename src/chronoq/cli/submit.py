"""``chronoq enqueue`` and ``chronoq schedule``: submit a one-shot or a recurring job, or preview
a schedule's ticks (``schedule --preview N``), storing nothing."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from typing import Any

from chronoq._runtime.config import Settings
from chronoq.cli import render
from chronoq.cli.arguments import (
    EARLIEST_SINCE,
    LATEST_SINCE,
    cron,
    duration,
    integer,
    key,
    one_of,
    payload,
    queue,
    time,
    timezone,
)
from chronoq.cli.command import Actions, add_command, run_async
from chronoq.cli.settings import DATABASE
from chronoq.errors import InvalidJobError
from chronoq.producer import Producer
from chronoq.producer.client import MAX_PREVIEW
from chronoq.schemas.job import EARLIEST_RUN_AT, LATEST_RUN_AT, MAX_ATTEMPTS_LIMIT, MAX_DELAY, MAX_TIMEOUT
from chronoq.schemas.schedule import MAX_BACKFILL_LIMIT


def add_commands(actions: Actions) -> None:
    enqueue = add_command(actions, "enqueue", "Enqueue a one-shot job; prints its id.", settings=DATABASE, run=_enqueue)
    enqueue.add_argument("queue", type=queue)
    when = enqueue.add_mutually_exclusive_group()
    when.add_argument("--delay", type=duration("delay", maximum=MAX_DELAY), help="run after this long, e.g. 30s")
    when.add_argument("--at", dest="run_at", type=time("run_at", earliest=EARLIEST_RUN_AT, latest=LATEST_RUN_AT),
                      help="run at this ISO 8601 time (with offset)")
    when.add_argument("--debounce", type=duration("debounce", maximum=MAX_DELAY, positive=True),
                      help="with --key: every enqueue of the key pushes its pending run out to now + this")
    enqueue.add_argument("--max-wait", type=duration("max_wait", maximum=MAX_DELAY, positive=True),
                         help="with --debounce: the pending run is never pushed past this after its first "
                              "enqueue (default 10 x --debounce)")
    enqueue.add_argument("--on-conflict", **one_of("on_conflict", "keep", "replace"),
                         help="a key already stored: keep its job as it is (default), or replace its payload "
                              "and the time of its pending run (a new run if it has already run)")
    _add_job_options(enqueue, "idempotency key: the same key on the same queue enqueues once")

    schedule = add_command(actions, "schedule", "Schedule a recurring (cron) job; prints its id (its next three ticks "
                                                "go to stderr). With --preview N, prints the next N ticks and stores "
                                                "nothing.", settings=DATABASE, run=_schedule)
    schedule.add_argument("queue", type=queue, nargs="?", help="the job's queue (not needed with --preview)")
    schedule.add_argument("--cron", type=cron, required=True,
                          help="5 fields, or 6 with seconds first; @hourly, @daily, ...; @every 5s (1s-24h)")
    schedule.add_argument("--tz", dest="timezone", type=timezone, default="UTC",
                          help="IANA time zone of the cron expression (default UTC)")
    schedule.add_argument("--misfire", **one_of("misfire", "skip", "run_once", "backfill"), default="run_once",
                          help="what to do with ticks missed by more than --misfire-grace (default run_once)")
    schedule.add_argument("--misfire-grace", type=duration("misfire_grace"),
                          help="lateness still counted as on time (default 5m)")
    schedule.add_argument("--max-backfill", type=integer("max_backfill", 0, MAX_BACKFILL_LIMIT),
                          help="backfill: most missed ticks run per outage (default 100)")
    schedule.add_argument("--overlap", **one_of("overlap", "allow", "skip"), default="allow",
                          help="skip: a tick is skipped while the previous occurrence still runs")
    schedule.add_argument("--jitter", type=duration("jitter"),
                          help="each tick is due up to this long after its time (a fixed offset per job and tick), "
                               "e.g. 30s; at most the shortest interval between two ticks")
    schedule.add_argument("--preview", type=integer("preview", 1, MAX_PREVIEW), metavar="N",
                          help="print the next N ticks in UTC and local time, with DST marks; store nothing")
    schedule.add_argument("--after", type=time("after", earliest=EARLIEST_SINCE, latest=LATEST_SINCE),
                          help="--preview: the ticks after this ISO 8601 time with offset (default now)")
    _add_job_options(schedule, "idempotency key: declaring the same key again updates the schedule")


def _add_job_options(parser: argparse.ArgumentParser, key_help: str) -> None:
    parser.add_argument("--payload", type=payload, default=None, help="the payload, as JSON (default null)")
    parser.add_argument("--key", type=key, help=key_help)
    parser.add_argument("--max-attempts", type=integer("max_attempts", 1, MAX_ATTEMPTS_LIMIT))
    parser.add_argument("--timeout", type=duration("timeout", maximum=MAX_TIMEOUT, positive=True),
                        help="handler timeout, e.g. 60s")


def _job_options(args: argparse.Namespace) -> dict[str, Any]:
    return {"key": args.key, "max_attempts": args.max_attempts, "timeout": args.timeout}


def _enqueue(args: argparse.Namespace, settings: Settings) -> int:
    return run_async(_submit(settings, "enqueue", args.queue, args.payload, delay=args.delay, run_at=args.run_at,
                             on_conflict=args.on_conflict, debounce=args.debounce, max_wait=args.max_wait,
                             **_job_options(args)))


def _schedule(args: argparse.Namespace, settings: Settings) -> int:
    if args.preview is not None:
        return run_async(_preview(settings, args.cron, args.timezone, args.preview, args.after))
    if args.after is not None:
        raise InvalidJobError("after", "only with --preview")
    if args.queue is None:
        raise InvalidJobError("queue", "a queue is required to schedule a job (only --preview goes without one)")
    return run_async(_submit(settings, "schedule", args.queue, args.payload, cron=args.cron, timezone=args.timezone,
                             misfire=args.misfire, misfire_grace=args.misfire_grace, max_backfill=args.max_backfill,
                             overlap=args.overlap, jitter=args.jitter, **_job_options(args)))


async def _submit(settings: Settings, method: str, queue: str, payload: Any, **options: Any) -> int:
    """``Producer.enqueue`` or ``Producer.schedule``; prints the job's id, and for a schedule its
    next ticks on stderr (stdout stays the id alone, for scripts)."""
    async with Producer(settings.database_url) as producer:
        job_id = await getattr(producer, method)(queue, payload, **options)
    print(job_id)
    if method == "schedule":
        print(f"next ticks of job {job_id}:", file=sys.stderr)
        for line in render.cron_ticks(job_id.next_ticks):
            print(f"  {line}", file=sys.stderr)
    return 0


async def _preview(settings: Settings, expression: str, zone: str, count: int, after: datetime | None) -> int:
    async with Producer(settings.database_url) as producer:
        ticks = await producer.preview(expression, zone, count, after)
    for line in render.cron_ticks(ticks):
        print(line)
    return 0
