"""The ``chronoq`` command line. Command and flag names are a contract other tools drive.

Every setting of :class:`Settings` is also a flag on every command (``--database-url``,
``--amqp-url``, ...), generated from the model so that the two cannot drift apart.

Every value is checked while the arguments are parsed, by the rules the Python API and AMQP
submissions obey (``schemas/rules.py``). Whatever goes wrong, a refused argument, a database or
broker that is unreachable, missing or misconfigured, ends the command with one line on stderr
and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import logging
import os
import sys
from collections.abc import Callable, Coroutine, Iterable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlsplit

from pydantic.fields import FieldInfo
from rich.table import Table

from chronoq._runtime.config import Settings
from chronoq._runtime.logs import configure as configure_logging
from chronoq.cli_arguments import (
    EARLIEST_SINCE,
    LATEST_SINCE,
    MAX_BENCH_JOBS,
    MAX_BENCH_RATE,
    MAX_BENCH_SECONDS,
    MAX_DEMO_JOBS,
    MAX_DEMO_SPREAD,
    MAX_PRELOAD,
    MAX_PROCESSES,
    MAX_RUNS,
    counts,
    cron,
    duration,
    integer,
    job_id,
    key,
    limit,
    naptime,
    number,
    occurrence,
    one_of,
    payload,
    queue,
    time,
    timezone,
)
from chronoq.cli_errors import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    MESSAGE_LENGTH,
    exit_with,
    reported,
)
from chronoq.errors import (
    ConfigError,
    InvalidJobError,
)
from chronoq.schemas.job import (
    EARLIEST_RUN_AT,
    LATEST_RUN_AT,
    MAX_ATTEMPTS_LIMIT,
    MAX_DELAY,
    MAX_TIMEOUT,
)
from chronoq.schemas.rules import (
    MAX_LIST_LIMIT,
    short,
)
from chronoq.schemas.schedule import MAX_BACKFILL_LIMIT
from chronoq.schemas.views import QueueStatus

if TYPE_CHECKING:
    from chronoq.consumer.registry import Worker  # imported when a worker starts: see load_worker

log = logging.getLogger("chronoq.cli")

def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


class _Refused(SystemExit):
    """A command line the parser refused: exit 2, with a message ``main`` prints on one line. A
    SystemExit, as argparse's own refusal is, for callers of ``build_parser`` other than main."""

    def __init__(self, message: str) -> None:
        super().__init__(EXIT_USAGE)
        self.message = message


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # argparse would print the whole usage (a screenful, with every settings flag) and quote
        # a value it refuses in full; main() prints one bounded line instead.
        raise _Refused(f"{self.prog}: error: {message[:MESSAGE_LENGTH]} (see {self.prog} --help)")


def _setting_type(name: str, field: FieldInfo) -> Callable[[str], Any]:
    """Integers are checked against the setting's bounds here; every other rule is the one
    Settings applies to the environment too. Messages name the CHRONOQ_ variable either way."""
    variable = f"CHRONOQ_{name.upper()}"
    if field.annotation in (int, int | None):
        low, high = -(2**63), 2**63 - 1
        for rule in field.metadata:
            low, high = getattr(rule, "ge", low), getattr(rule, "le", high)
        return integer(variable, low, high)
    if field.annotation is timedelta:
        return duration(variable)
    return str


def _settings_parser() -> _Parser:
    parent = _Parser(add_help=False)
    group = parent.add_argument_group("settings (also CHRONOQ_* environment variables)")
    for name, field in Settings.model_fields.items():
        assert isinstance(field, FieldInfo)
        group.add_argument(
            _flag(name), dest=f"setting_{name}", type=_setting_type(name, field), default=argparse.SUPPRESS,
            metavar=name.upper(), help=f"{field.description} [env CHRONOQ_{name.upper()}]",
        )
    group.add_argument("--log-level", default="INFO", **one_of("log_level", "DEBUG", "INFO", "WARNING", "ERROR"))
    return parent


def build_parser() -> argparse.ArgumentParser:
    settings = _settings_parser()
    parser = _Parser(prog="chronoq", description=__doc__.splitlines()[0] if __doc__ else None)
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
    worker.add_argument("--queue", action="append", dest="queues", metavar="Q", type=queue,
                        help="consume only this queue (repeatable)")

    enqueue = command("enqueue", "Enqueue a one-shot job; prints its id.")
    enqueue.add_argument("queue", type=queue)
    enqueue.add_argument("--payload", type=payload, default=None, help="the payload, as JSON (default null)")
    when = enqueue.add_mutually_exclusive_group()
    when.add_argument("--delay", type=duration("delay", maximum=MAX_DELAY), help="run after this long, e.g. 30s")
    when.add_argument("--at", dest="run_at", type=time("run_at", earliest=EARLIEST_RUN_AT, latest=LATEST_RUN_AT),
                      help="run at this ISO 8601 time (with offset)")
    enqueue.add_argument("--key", type=key, help="idempotency key: the same key on the same queue enqueues once")
    enqueue.add_argument("--max-attempts", type=integer("max_attempts", 1, MAX_ATTEMPTS_LIMIT))
    enqueue.add_argument("--timeout", type=duration("timeout", maximum=MAX_TIMEOUT, positive=True),
                         help="handler timeout, e.g. 60s")

    schedule = command("schedule", "Schedule a recurring (cron) job; prints its id.")
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
    schedule.add_argument("--payload", type=payload, default=None, help="the payload, as JSON (default null)")
    schedule.add_argument("--key", type=key, help="idempotency key: declaring the same key again updates the schedule")
    schedule.add_argument("--max-attempts", type=integer("max_attempts", 1, MAX_ATTEMPTS_LIMIT))
    schedule.add_argument("--timeout", type=duration("timeout", maximum=MAX_TIMEOUT, positive=True),
                          help="handler timeout, e.g. 60s")

    status = command("status", "Per queue: scheduled, due, in flight, outcomes and lateness.")
    status.add_argument("--window", type=duration("window", positive=True), default=timedelta(minutes=5),
                        help="look-back for outcomes (default 5m)")
    status.add_argument("--json", action="store_true")
    status.add_argument("--watch", action="store_true", help="a live view, refreshed every second, until Ctrl-C")

    jobs = command("jobs", "Inspect or change jobs.")
    job_commands = jobs.add_subparsers(dest="jobs_command", required=True, metavar="ACTION")
    show = job_commands.add_parser("show", help="a job with every occurrence, attempt and error", parents=[settings])
    show.add_argument("job_id", type=job_id)
    show.add_argument("--json", action="store_true")
    for action, text in (("cancel", "cancel a job and its pending occurrences"),
                         ("pause", "pause a job: its ticks are skipped (recorded) until resumed"),
                         ("resume", "resume a paused job from its next tick")):
        sub = job_commands.add_parser(action, help=text, parents=[settings])
        sub.add_argument("job_id", type=job_id)
    listing = job_commands.add_parser("ls", help="list jobs, newest first", parents=[settings])
    listing.add_argument("--queue", type=queue)
    listing.add_argument("--state", **one_of("state", "active", "paused", "cancelled"))
    listing.add_argument("--limit", **limit(100))
    listing.add_argument("--json", action="store_true")
    ticks = job_commands.add_parser("ticks", help="every nominal tick of a job and what happened to it", parents=[settings])
    ticks.add_argument("job_id", type=job_id)
    ticks.add_argument("--since", type=time("since", earliest=EARLIEST_SINCE, latest=LATEST_SINCE),
                       help="ISO 8601 time with offset")
    ticks.add_argument("--limit", **limit(1000))
    ticks.add_argument("--json", action="store_true")

    dlq = command("dlq", "Dead occurrences and their dead-letter queues.")
    dlq_commands = dlq.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")
    dlq_ls = dlq_commands.add_parser("ls", help="dead occurrences per queue, and dead-letter queue sizes", parents=[settings])
    dlq_ls.add_argument("--queue", type=queue)
    dlq_ls.add_argument("--json", action="store_true")
    dlq_show = dlq_commands.add_parser("show", help="the first dead-letter messages of a queue (headers only)",
                                       parents=[settings])
    dlq_show.add_argument("--queue", type=queue, required=True)
    dlq_show.add_argument("--limit", **limit(20))
    dlq_show.add_argument("--json", action="store_true")
    dlq_replay = dlq_commands.add_parser("replay", help="put dead occurrences back as a fresh attempt", parents=[settings])
    dlq_replay.add_argument("--queue", type=queue, required=True)
    dlq_replay.add_argument("--occurrence", type=occurrence, help="only this occurrence (idempotency key)")
    dlq_replay.add_argument("--limit", **limit(100))
    dlq_purge = dlq_commands.add_parser("purge", help="empty a dead-letter queue (Postgres keeps the records)",
                                        parents=[settings])
    dlq_purge.add_argument("--queue", type=queue, required=True)

    bench = command("bench", "Measure this deployment: burst, steady, enqueue, scale, churn, memory (tables, JSON "
                             "with versions); plot: lateness against offered rate from steady results.")
    bench.add_argument("scenario", **one_of("scenario", "burst", "steady", "enqueue", "scale", "churn", "memory", "plot"))
    bench.add_argument("inputs", nargs="*", metavar="JSON", help="plot: steady result files or folders")
    bench.add_argument("--jobs", type=integer("jobs", 1, MAX_BENCH_JOBS),
                       help="jobs per run: burst/enqueue/memory's burst (default 20000), churn (default 1000000)")
    bench.add_argument("--rate", type=number("rate", MAX_BENCH_RATE), default=200.0, help="steady: offered jobs/s (default 200)")
    bench.add_argument("--duration", type=number("duration", MAX_BENCH_SECONDS), default=10.0,
                       help="steady: seconds (default 10)")
    bench.add_argument("--find-max", action="store_true", help="steady: search the highest rate with p99 under 100 ms")
    bench.add_argument("--handler", **one_of("handler", "noop", "db"), default="db",
                       help="noop, or db: one row written through ctx.db per job (default)")
    bench.add_argument("--workers", type=integer("workers", 1, MAX_PROCESSES), default=1, help="worker processes (default 1)")
    bench.add_argument("--timers", type=integer("timers", 1, MAX_PROCESSES), default=1, help="timer processes (default 1)")
    bench.add_argument("--runs", type=integer("runs", 1, MAX_RUNS), default=3,
                       help="repetitions; medians are reported (default 3)")
    bench.add_argument("--warmup", type=number("warmup", MAX_BENCH_SECONDS, zero=True), default=2.0,
                       help="burst/steady/scale: a run whose figures are dropped comes first, so that pools, "
                            "channels and queues are open: steady and scale's lateness run SECONDS at the offered rate, "
                            "burst drains SECONDS x 1,000 jobs (default 2; 0: none)")
    bench.add_argument("--out", default="bench-results", help="folder for the JSON results")
    bench.add_argument("--sizes", type=counts, default=[10_000, 1_000_000, 10_000_000],
                       help="scale: scheduled jobs preloaded at each step (default 10000,1000000,10000000)")
    bench.add_argument("--claim-batches", type=integer("claim_batches", 1, MAX_LIST_LIMIT), default=40,
                       help="scale: claim batches timed per size (default 40)")
    bench.add_argument("--preload", type=integer("preload", 0, MAX_PRELOAD), default=1_000_000,
                       help="churn/memory: future jobs preloaded (default 1000000)")
    bench.add_argument("--autovacuum", **one_of("autovacuum", "server", "on"), default="server",
                       help="churn: 'on' switches autovacuum on for the run (ALTER SYSTEM, superuser), reset after")
    bench.add_argument("--autovacuum-naptime", type=naptime, default=None,
                       help="churn: autovacuum on with this launcher naptime for the run, e.g. 5s (ALTER SYSTEM, "
                            "superuser; the server's default is 60s), reset after")
    bench.add_argument("--settle", type=number("settle", MAX_BENCH_SECONDS, zero=True), default=6.0,
                       help="memory: seconds idle before reading RSS (default 6)")
    bench.add_argument("--keep", action="store_true", help="scale/churn/memory: keep the preloaded jobs")
    bench.add_argument("--output", default="bench-lateness.png", help="plot: the PNG to write")

    demo = command("demo", "Run the whole pipeline on the local services and check nothing was lost.")
    demo.add_argument("--jobs", type=integer("jobs", 1, MAX_DEMO_JOBS), default=3000, help="jobs to enqueue (default 3000)")
    demo.add_argument("--spread", type=duration("spread", maximum=MAX_DEMO_SPREAD, positive=True),
                      default=timedelta(seconds=5), help="spread of due times (default 5s)")
    demo.add_argument("--workers", type=integer("workers", 1, MAX_PROCESSES), default=2, help="worker processes (default 2)")
    demo.add_argument("--timers", type=integer("timers", 1, MAX_PROCESSES), default=1, help="timer processes (default 1)")
    demo.add_argument("--external", action="store_true",
                      help="start no processes: use timers and workers already running (docker compose)")

    return parser


def load_settings(args: argparse.Namespace) -> Settings:
    overrides = {k.removeprefix("setting_"): v for k, v in vars(args).items() if k.startswith("setting_")}
    settings = Settings.load(**overrides)
    for name in ("database_url", "amqp_url"):
        _check_host(name, getattr(settings, name))
    return settings


def _check_host(name: str, url: str) -> None:
    """Refuse a host name no resolver takes (a label over 63 characters, an empty one) before a
    driver tries it: aio-pika's robust connection retries such a URL for ever."""
    try:
        host = urlsplit(url).hostname
        if host:
            host.encode("idna")
    except ValueError:  # UnicodeError is one
        raise ConfigError(f"invalid setting: CHRONOQ_{name.upper()}: the host is not a valid host name") from None


def _run(coro: Coroutine[Any, Any, int], *, fast_loop: bool = False) -> int:
    if fast_loop:
        try:
            import uvloop
        except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
            return asyncio.run(coro)
        return uvloop.run(coro)
    return asyncio.run(coro)


def main(argv: Sequence[str] | None = None) -> None:
    arguments = list(sys.argv[1:] if argv is None else argv)
    # What an error line may quote: the arguments and the settings from the environment.
    inputs = [*arguments, *(value for name, value in os.environ.items() if name.startswith("CHRONOQ_"))]
    try:
        args = build_parser().parse_args(arguments)
    except _Refused as exc:
        exit_with(EXIT_USAGE, exc.message, inputs)
    configure_logging(args.log_level)
    logging_off = logging.root.manager.disable
    try:
        code = dispatch(args, load_settings(args))
    except KeyboardInterrupt:
        failure = EXIT_INTERRUPTED, "interrupted"
        logging.disable(logging.CRITICAL)
    except Exception as exc:  # every failure ends as one line, never a traceback
        failure = reported(exc)
        logging.disable(logging.CRITICAL)
    else:
        sys.exit(code)
    # The line is the whole report. What the failed command left (a future of a cancelled
    # connection that nobody retrieved) is collected while logging is off: asyncio would report
    # it as it goes, a second line that only repeats the failure.
    gc.collect()
    logging.disable(logging_off)
    exit_with(*failure, inputs)


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
            return _run(commands.enqueue(settings, args.queue, args.payload, delay=args.delay, run_at=args.run_at,
                                         key=args.key, max_attempts=args.max_attempts, timeout=args.timeout))
        case "schedule":
            return _run(commands.schedule(settings, args.queue, args.payload, cron=args.cron,
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

            _check_bench_load(args)
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


def _check_bench_load(args: argparse.Namespace) -> None:
    """Refuse a run of more than MAX_BENCH_JOBS jobs: steady and scale offer rate x seconds (up
    to ten times the rate with --find-max), a burst's warm-up drains 1,000 per second."""
    if args.scenario in ("steady", "scale"):
        jobs, flags = args.rate * (10 if args.find_max else 1) * max(args.duration, args.warmup), "--rate x --duration"
    elif args.scenario == "burst":
        jobs, flags = args.warmup * 1000, "--warmup"
    else:
        return
    if jobs > MAX_BENCH_JOBS:
        raise InvalidJobError("bench", f"{flags} makes a run of {jobs:,.0f} jobs, more than {MAX_BENCH_JOBS:,}")


def load_worker(target: str) -> Worker:
    """Import ``module:attr`` and check it is a Worker: handlers come only from a registry the
    operator named, never from anything a message says."""
    from chronoq.consumer.registry import Worker

    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"worker target {short(target)} must look like package.module:attribute")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # the operator's module may fail in any way as it loads
        raise ConfigError(f"cannot import {short(module_name)}: {type(exc).__name__}: {exc}") from None
    worker = getattr(module, attr, None)
    if not isinstance(worker, Worker):
        raise ConfigError(f"{short(target)} is not a chronoq.Worker (found {type(worker).__name__})")
    return worker


def queue_table(rows: Iterable[QueueStatus], *, rates: dict[str, float] | None = None) -> Table:
    """The status table; with ``rates``, a throughput column (jobs/s per queue)."""
    table = Table(title="chronoq queues")
    columns = ["queue", "scheduled", "due", "in flight", "held", "succeeded", "failed", "dead", "skipped", "cancelled",
               "p50 ms", "p99 ms"] + (["jobs/s (10 s)"] if rates is not None else [])
    for column in columns:
        table.add_column(column, justify="left" if column == "queue" else "right")
    for r in rows:
        cells = [r.queue, *(str(v) for v in (r.scheduled, r.due, r.in_flight, r.held, r.succeeded, r.failed, r.dead,
                                              r.skipped, r.cancelled)), _ms(r.lateness_p50_s), _ms(r.lateness_p99_s)]
        if rates is not None:
            cells.append(f"{rates.get(r.queue, 0.0):.1f}")
        table.add_row(*cells)
    return table


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}"
