"""The ``chronoq`` command line. Command and flag names are a contract other tools drive.

Every setting of :class:`Settings` is also a flag on every command (``--database-url``,
``--amqp-url``, ...), generated from the model so that the two cannot drift apart.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
from collections.abc import Callable, Coroutine, Sequence
from datetime import datetime, timedelta
from typing import Any

import orjson
from pydantic.fields import FieldInfo
from rich.console import Console
from rich.table import Table

from chronoq._runtime.config import Settings
from chronoq._runtime.durations import parse_duration
from chronoq._runtime.logs import configure as configure_logging
from chronoq.errors import (
    ChronoqError,
    ConfigError,
    InvalidJobError,
    JobNotFoundError,
    JobStateError,
    ServiceUnavailableError,
    UnknownQueueError,
)

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_UNAVAILABLE = 0, 1, 2, 3


def _duration(text: str) -> timedelta:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _naptime(text: str) -> timedelta:
    naptime = _duration(text)
    if not timedelta(seconds=1) <= naptime <= timedelta(days=24):  # Postgres's range for the setting
        raise argparse.ArgumentTypeError(f"autovacuum naptime must be between 1s and 24d, got {text!r}")
    return naptime


def _counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected counts separated by commas, got {text!r}") from None
    if min(counts) < 1:
        raise argparse.ArgumentTypeError("counts must be positive")
    return counts


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _settings_parser() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("settings (also CHRONOQ_* environment variables)")
    for name, field in Settings.model_fields.items():
        assert isinstance(field, FieldInfo)
        kind: Callable[[str], Any] = str
        if field.annotation is int:
            kind = int
        elif field.annotation is timedelta:
            kind = _duration
        group.add_argument(
            _flag(name), dest=f"setting_{name}", type=kind, default=argparse.SUPPRESS,
            metavar=name.upper(), help=f"{field.description} [env CHRONOQ_{name.upper()}]",
        )
    group.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parent


def build_parser() -> argparse.ArgumentParser:
    settings = _settings_parser()
    parser = argparse.ArgumentParser(prog="chronoq", description=__doc__.splitlines()[0] if __doc__ else None)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help_text, description=help_text, parents=[settings])

    migrate = command("migrate", "Create the database if missing, apply the schema migrations, declare RabbitMQ exchanges.")
    migrate.add_argument("--print", action="store_true", dest="print_sql", help="print the SQL instead of applying it")
    migrate.add_argument("--roles", action="store_true",
                         help="also create least-privilege roles chronoq_producer, chronoq_timer, chronoq_worker")

    command("timer", "Run one timer. Any number may run at once.")
    command("schema", "Print the JSON Schema of job submissions over AMQP (for services in other languages).")

    worker = command("worker", "Run the Worker found at MODULE:ATTR.")
    worker.add_argument("target", metavar="MODULE:ATTR")
    worker.add_argument("--queue", action="append", dest="queues", metavar="Q", help="consume only this queue (repeatable)")

    enqueue = command("enqueue", "Enqueue a one-shot job; prints its id.")
    enqueue.add_argument("queue")
    enqueue.add_argument("--payload", default="null", help="the payload, as JSON")
    when = enqueue.add_mutually_exclusive_group()
    when.add_argument("--delay", type=_duration, help="run after this long, e.g. 30s")
    when.add_argument("--at", dest="run_at", type=datetime.fromisoformat, help="run at this ISO 8601 time (with offset)")
    enqueue.add_argument("--key", help="idempotency key: the same key on the same queue enqueues once")
    enqueue.add_argument("--max-attempts", type=int)
    enqueue.add_argument("--timeout", type=_duration, help="handler timeout, e.g. 60s")

    schedule = command("schedule", "Schedule a recurring (cron) job; prints its id.")
    schedule.add_argument("queue")
    schedule.add_argument("--cron", required=True, help="5 fields, or 6 with seconds last; @hourly, @daily, ...")
    schedule.add_argument("--tz", dest="timezone", default="UTC", help="IANA time zone of the cron expression (default UTC)")
    schedule.add_argument("--misfire", choices=["skip", "run_once", "backfill"], default="run_once",
                          help="what to do with ticks missed by more than --misfire-grace (default run_once)")
    schedule.add_argument("--misfire-grace", type=_duration, help="lateness still counted as on time (default 5m)")
    schedule.add_argument("--max-backfill", type=int, help="backfill: most missed ticks run per outage (default 100)")
    schedule.add_argument("--overlap", choices=["allow", "skip"], default="allow",
                          help="skip: a tick is skipped while the previous occurrence still runs")
    schedule.add_argument("--payload", default="null", help="the payload, as JSON")
    schedule.add_argument("--key", help="idempotency key: declaring the same key again updates the schedule")
    schedule.add_argument("--max-attempts", type=int)
    schedule.add_argument("--timeout", type=_duration, help="handler timeout, e.g. 60s")

    status = command("status", "Per queue: scheduled, due, in flight, outcomes and lateness.")
    status.add_argument("--window", type=_duration, default=timedelta(minutes=5), help="look-back for outcomes (default 5m)")
    status.add_argument("--json", action="store_true")
    status.add_argument("--watch", action="store_true", help="a live view, refreshed every second, until Ctrl-C")

    jobs = command("jobs", "Inspect or change jobs.")
    job_commands = jobs.add_subparsers(dest="jobs_command", required=True, metavar="ACTION")
    show = job_commands.add_parser("show", help="a job with every occurrence, attempt and error", parents=[settings])
    show.add_argument("job_id", type=int)
    show.add_argument("--json", action="store_true")
    for action, text in (("cancel", "cancel a job and its pending occurrences"),
                         ("pause", "pause a job: its ticks are skipped (recorded) until resumed"),
                         ("resume", "resume a paused job from its next tick")):
        sub = job_commands.add_parser(action, help=text, parents=[settings])
        sub.add_argument("job_id", type=int)
    listing = job_commands.add_parser("ls", help="list jobs, newest first", parents=[settings])
    listing.add_argument("--queue")
    listing.add_argument("--state", choices=["active", "paused", "cancelled"])
    listing.add_argument("--limit", type=int, default=100)
    listing.add_argument("--json", action="store_true")
    ticks = job_commands.add_parser("ticks", help="every nominal tick of a job and what happened to it", parents=[settings])
    ticks.add_argument("job_id", type=int)
    ticks.add_argument("--since", type=_aware_time, help="ISO 8601 time with offset")
    ticks.add_argument("--limit", type=int, default=1000)
    ticks.add_argument("--json", action="store_true")

    dlq = command("dlq", "Dead occurrences and their dead-letter queues.")
    dlq_commands = dlq.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")
    dlq_ls = dlq_commands.add_parser("ls", help="dead occurrences per queue, and dead-letter queue sizes", parents=[settings])
    dlq_ls.add_argument("--queue")
    dlq_ls.add_argument("--json", action="store_true")
    dlq_show = dlq_commands.add_parser("show", help="the first dead-letter messages of a queue (headers only)", parents=[settings])
    dlq_show.add_argument("--queue", required=True)
    dlq_show.add_argument("--limit", type=int, default=20)
    dlq_show.add_argument("--json", action="store_true")
    dlq_replay = dlq_commands.add_parser("replay", help="put dead occurrences back as a fresh attempt", parents=[settings])
    dlq_replay.add_argument("--queue", required=True)
    dlq_replay.add_argument("--occurrence", help="only this occurrence (idempotency key)")
    dlq_replay.add_argument("--limit", type=int, default=100)
    dlq_purge = dlq_commands.add_parser("purge", help="empty a dead-letter queue (Postgres keeps the records)", parents=[settings])
    dlq_purge.add_argument("--queue", required=True)

    bench = command("bench", "Measure this deployment: burst, steady, enqueue, scale, churn, memory (tables, JSON "
                             "with versions); plot: lateness against offered rate from steady results.")
    bench.add_argument("scenario", choices=["burst", "steady", "enqueue", "scale", "churn", "memory", "plot"])
    bench.add_argument("inputs", nargs="*", metavar="JSON", help="plot: steady result files or folders")
    bench.add_argument("--jobs", type=int, help="jobs per run: burst/enqueue/memory's burst (default 20000), "
                                                "churn (default 1000000)")
    bench.add_argument("--rate", type=float, default=200.0, help="steady: offered jobs/s (default 200)")
    bench.add_argument("--duration", type=float, default=10.0, help="steady: seconds (default 10)")
    bench.add_argument("--find-max", action="store_true", help="steady: search the highest rate with p99 under 100 ms")
    bench.add_argument("--handler", choices=["noop", "db"], default="db",
                       help="noop, or db: one row written through ctx.db per job (default)")
    bench.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    bench.add_argument("--timers", type=int, default=1, help="timer processes (default 1)")
    bench.add_argument("--runs", type=int, default=3, help="repetitions; medians are reported (default 3)")
    bench.add_argument("--warmup", type=float, default=2.0,
                       help="burst/steady/scale: a run whose figures are dropped comes first, so that pools, "
                            "channels and queues are open: steady and scale's lateness run SECONDS at the offered rate, "
                            "burst drains SECONDS x 1,000 jobs (default 2; 0: none)")
    bench.add_argument("--out", default="bench-results", help="folder for the JSON results")
    bench.add_argument("--sizes", type=_counts, default=[10_000, 1_000_000, 10_000_000],
                       help="scale: scheduled jobs preloaded at each step (default 10000,1000000,10000000)")
    bench.add_argument("--claim-batches", type=int, default=40, help="scale: claim batches timed per size (default 40)")
    bench.add_argument("--preload", type=int, default=1_000_000,
                       help="churn/memory: future jobs preloaded (default 1000000)")
    bench.add_argument("--autovacuum", choices=["server", "on"], default="server",
                       help="churn: 'on' switches autovacuum on for the run (ALTER SYSTEM, superuser), reset after")
    bench.add_argument("--autovacuum-naptime", type=_naptime, default=None,
                       help="churn: autovacuum on with this launcher naptime for the run, e.g. 5s (ALTER SYSTEM, "
                            "superuser; the server's default is 60s), reset after")
    bench.add_argument("--settle", type=float, default=6.0, help="memory: seconds idle before reading RSS (default 6)")
    bench.add_argument("--keep", action="store_true", help="scale/churn/memory: keep the preloaded jobs")
    bench.add_argument("--output", default="bench-lateness.png", help="plot: the PNG to write")

    demo = command("demo", "Run the whole pipeline on the local services and check nothing was lost.")
    demo.add_argument("--jobs", type=int, default=3000, help="jobs to enqueue (default 3000)")
    demo.add_argument("--spread", type=_duration, default=timedelta(seconds=5), help="spread of due times (default 5s)")
    demo.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    demo.add_argument("--timers", type=int, default=1, help="timer processes (default 1)")
    demo.add_argument("--external", action="store_true",
                      help="start no processes: use timers and workers already running (docker compose)")

    return parser


def load_settings(args: argparse.Namespace) -> Settings:
    overrides = {k.removeprefix("setting_"): v for k, v in vars(args).items() if k.startswith("setting_")}
    return Settings.load(**overrides)


def _run(coro: Coroutine[Any, Any, int], *, fast_loop: bool = False) -> int:
    if fast_loop:
        try:
            import uvloop
        except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
            return asyncio.run(coro)
        return uvloop.run(coro)
    return asyncio.run(coro)


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    err = Console(stderr=True)
    try:
        settings = load_settings(args)
        sys.exit(dispatch(args, settings))
    except (ConfigError, InvalidJobError, JobNotFoundError, JobStateError, UnknownQueueError) as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False, markup=True)
        sys.exit(EXIT_USAGE)
    except ServiceUnavailableError as exc:
        err.print(f"[red]unavailable:[/red] {exc}", highlight=False)
        sys.exit(EXIT_UNAVAILABLE)
    except ChronoqError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        sys.exit(EXIT_FAILURE)


def dispatch(args: argparse.Namespace, settings: Settings) -> int:
    from chronoq import commands

    match args.command:
        case "migrate":
            return _run(commands.migrate(settings, print_sql=args.print_sql, roles=args.roles))
        case "schema":
            return commands.schema()
        case "timer":
            return _run(commands.timer(settings), fast_loop=True)
        case "worker":
            worker = load_worker(args.target)
            return _run(commands.worker(settings, worker, args.queues), fast_loop=True)
        case "enqueue":
            return _run(commands.enqueue(settings, args.queue, _payload(args.payload), delay=args.delay, run_at=args.run_at,
                                         key=args.key, max_attempts=args.max_attempts, timeout=args.timeout))
        case "schedule":
            return _run(commands.schedule(settings, args.queue, _payload(args.payload), cron=args.cron,
                                          timezone=args.timezone, misfire=args.misfire,
                                          misfire_grace=args.misfire_grace, max_backfill=args.max_backfill,
                                          overlap=args.overlap, key=args.key, max_attempts=args.max_attempts,
                                          timeout=args.timeout))
        case "status":
            try:
                return _run(commands.status(settings, args.window, as_json=args.json, watch=args.watch))
            except KeyboardInterrupt:
                return EXIT_OK
        case "jobs":
            match args.jobs_command:
                case "show":
                    return _run(commands.show_job(settings, args.job_id, as_json=args.json))
                case "ls":
                    return _run(commands.list_jobs(settings, args.queue, args.state, args.limit, as_json=args.json))
                case "ticks":
                    return _run(commands.show_ticks(settings, args.job_id, args.since, args.limit, as_json=args.json))
                case action:
                    return _run(commands.change_job(settings, action, args.job_id))
        case "dlq":
            from chronoq import dlq

            match args.dlq_command:
                case "ls":
                    return _run(dlq.ls(settings, args.queue, as_json=args.json))
                case "show":
                    return _run(dlq.show(settings, args.queue, args.limit, as_json=args.json))
                case "replay":
                    return _run(dlq.replay(settings, args.queue, args.occurrence, args.limit))
                case _:
                    return _run(dlq.purge(settings, args.queue))
        case "bench":
            from chronoq.bench.command import run_bench

            options = {k: getattr(args, k) for k in ("jobs", "rate", "duration", "find_max", "handler", "workers",
                                                     "timers", "runs", "warmup", "out", "sizes", "claim_batches", "preload",
                                                     "autovacuum", "autovacuum_naptime", "settle", "keep", "inputs",
                                                     "output")}
            if options["jobs"] is None:
                options["jobs"] = 1_000_000 if args.scenario == "churn" else 20_000
            options["concurrency"] = settings.concurrency
            return _run(run_bench(settings, args.scenario, options), fast_loop=True)
        case "demo":
            from chronoq.demo import run_demo

            return _run(run_demo(settings, jobs=args.jobs, spread=args.spread,
                                workers=0 if args.external else args.workers,
                                timers=0 if args.external else args.timers))
    raise AssertionError(args.command)


def _payload(text: str) -> object:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InvalidJobError("payload", f"not valid JSON: {exc}") from None


def _aware_time(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no UTC offset")
    return value


def load_worker(target: str):
    """Import ``module:attr`` and check it is a Worker: handlers come only from a registry the
    operator named, never from anything a message says."""
    from chronoq.consumer.registry import Worker

    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"worker target {target!r} must look like package.module:attribute")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import {module_name!r}: {exc}") from None
    worker = getattr(module, attr, None)
    if not isinstance(worker, Worker):
        raise ConfigError(f"{target!r} is not a chronoq.Worker (found {type(worker).__name__})")
    return worker


def queue_table(rows, *, rates: dict[str, float] | None = None) -> Table:
    """The status table; with ``rates``, a throughput column (jobs/s per queue)."""
    table = Table(title="chronoq queues")
    columns = ["queue", "scheduled", "due", "in flight", "succeeded", "failed", "dead", "skipped", "cancelled",
               "p50 ms", "p99 ms"] + (["jobs/s (10 s)"] if rates is not None else [])
    for column in columns:
        table.add_column(column, justify="left" if column == "queue" else "right")
    for r in rows:
        cells = [r.queue, *(str(v) for v in (r.scheduled, r.due, r.in_flight, r.succeeded, r.failed, r.dead,
                                              r.skipped, r.cancelled)), _ms(r.lateness_p50_s), _ms(r.lateness_p99_s)]
        if rates is not None:
            cells.append(f"{rates.get(r.queue, 0.0):.1f}")
        table.add_row(*cells)
    return table


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}"
