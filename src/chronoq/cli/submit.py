"""``chronoq enqueue`` and ``chronoq schedule``: submit a one-shot or a recurring job."""

from __future__ import annotations

import argparse
from typing import Any

from chronoq._runtime.config import Settings
from chronoq.cli.arguments import (
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
from chronoq.producer import Producer
from chronoq.schemas.job import EARLIEST_RUN_AT, LATEST_RUN_AT, MAX_ATTEMPTS_LIMIT, MAX_DELAY, MAX_TIMEOUT
from chronoq.schemas.schedule import MAX_BACKFILL_LIMIT


def add_commands(actions: Actions) -> None:
    enqueue = add_command(actions, "enqueue", "Enqueue a one-shot job; prints its id.", settings=DATABASE, run=_enqueue)
    enqueue.add_argument("queue", type=queue)
    when = enqueue.add_mutually_exclusive_group()
    when.add_argument("--delay", type=duration("delay", maximum=MAX_DELAY), help="run after this long, e.g. 30s")
    when.add_argument("--at", dest="run_at", type=time("run_at", earliest=EARLIEST_RUN_AT, latest=LATEST_RUN_AT),
                      help="run at this ISO 8601 time (with offset)")
    _add_job_options(enqueue, "idempotency key: the same key on the same queue enqueues once")

    schedule = add_command(actions, "schedule", "Schedule a recurring (cron) job; prints its id.", settings=DATABASE,
                           run=_schedule)
    schedule.add_argument("queue", type=queue)
    schedule.add_argument("--cron", type=cron, required=True, help="5 fields, or 6 with seconds last; @hourly, @daily, ...")
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
                             **_job_options(args)))


def _schedule(args: argparse.Namespace, settings: Settings) -> int:
    return run_async(_submit(settings, "schedule", args.queue, args.payload, cron=args.cron, timezone=args.timezone,
                             misfire=args.misfire, misfire_grace=args.misfire_grace, max_backfill=args.max_backfill,
                             overlap=args.overlap, **_job_options(args)))


async def _submit(settings: Settings, method: str, queue: str, payload: Any, **options: Any) -> int:
    """``Producer.enqueue`` or ``Producer.schedule``; prints the job's id."""
    async with Producer(settings.database_url) as producer:
        job_id = await getattr(producer, method)(queue, payload, **options)
    print(job_id)
    return 0
