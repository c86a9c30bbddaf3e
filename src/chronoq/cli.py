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
import functools
import gc
import importlib
import logging
import os
import re
import socket
import sys
from collections.abc import Callable, Coroutine, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar
from urllib.parse import urlsplit

import pydantic_core
from pydantic.fields import FieldInfo
from rich.table import Table

from chronoq._runtime.config import Settings
from chronoq._runtime.durations import parse_duration
from chronoq._runtime.logs import configure as configure_logging
from chronoq._store.connection import translated
from chronoq.errors import (
    ChronoqError,
    ConfigError,
    InvalidJobError,
    JobNotFoundError,
    JobStateError,
    ServiceUnavailableError,
    UnknownQueueError,
)
from chronoq.schemas.job import (
    EARLIEST_RUN_AT,
    LATEST_RUN_AT,
    MAX_ATTEMPTS_LIMIT,
    MAX_DELAY,
    MAX_TIMEOUT,
)
from chronoq.schemas.payload import encode_payload
from chronoq.schemas.rules import (
    ECHO_LENGTH,
    MAX_DURATION,
    MAX_JOB_ID,
    MAX_LIST_LIMIT,
    check_aware_time,
    check_int,
    check_key,
    check_queue_name,
    short,
    to_duration,
)
from chronoq.schemas.schedule import MAX_BACKFILL_LIMIT, parse_schedule
from chronoq.schemas.views import QueueStatus

if TYPE_CHECKING:
    from chronoq.consumer.registry import Worker  # imported when a worker starts: see load_worker

log = logging.getLogger("chronoq.cli")

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_UNAVAILABLE = 0, 1, 2, 3
#: Ctrl-C, as a shell reports a process ended by SIGINT.
EXIT_INTERRUPTED = 130
#: Longest error line printed.
MESSAGE_LENGTH = 280
#: Times ``jobs ticks --since`` may name: every aware time both Python and Postgres hold.
EARLIEST_SINCE = datetime(1, 1, 2, tzinfo=UTC)
LATEST_SINCE = datetime(9999, 12, 31, tzinfo=UTC)
#: Bounds of the bench and demo flags: far beyond any useful run, near enough that no value
#: runs the machine out of memory or time before the run even starts.
MAX_BENCH_JOBS = 10_000_000
MAX_BENCH_RATE = 1_000_000.0
MAX_BENCH_SECONDS = 86_400.0
MAX_PRELOAD = 100_000_000
MAX_PROCESSES = 64
MAX_RUNS = 100
MAX_SIZES = 20
MAX_DEMO_JOBS = 1_000_000
MAX_DEMO_SPREAD = timedelta(hours=1)

_T = TypeVar("_T")
_INTEGER = re.compile(r"[+-]?[0-9]+")
_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]+)?")
#: Digits beyond which an integer is outside every bound here (int() of thousands of digits is
#: slow, and refused past 4300).
_INTEGER_DIGITS = 30


def _argument(convert: Callable[[str], _T]) -> Callable[[str], _T]:
    """``convert`` as an argparse ``type=``: an InvalidJobError becomes argparse's refusal of the
    argument, with the rule's message (which repeats at most a short prefix of the value)."""

    @functools.wraps(convert)
    def checked(text: str) -> _T:
        try:
            return convert(text)
        except InvalidJobError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return checked


def _to_int(text: str, field: str, low: int, high: int) -> int:
    if _INTEGER.fullmatch(text) is None:
        raise InvalidJobError(field, f"{short(text)} is not an integer")
    if len(text.lstrip("+-").lstrip("0")) > _INTEGER_DIGITS:
        raise InvalidJobError(field, f"{text[:ECHO_LENGTH]}... is outside {low}..{high}")
    return check_int(int(text), field, low, high)


def _integer(field: str, low: int, high: int) -> Callable[[str], int]:
    return _argument(functools.partial(_to_int, field=field, low=low, high=high))


def _number(field: str, high: float, *, zero: bool = False) -> Callable[[str], float]:
    """A decimal number (no sign, no exponent) above zero (``zero``: or zero), at most ``high``."""

    @_argument
    def number(text: str) -> float:
        if _DECIMAL.fullmatch(text) is None:
            raise InvalidJobError(field, f"{short(text)} is not a number like 2 or 0.5")
        value = float(text)
        if value == 0 and not zero:
            raise InvalidJobError(field, "must be above 0")
        if value > high:
            raise InvalidJobError(field, f"{short(text)} is more than {high:,.0f}")
        return value

    return number


def _duration(
    field: str, *, maximum: timedelta = MAX_DURATION, positive: bool = False,
) -> Callable[[str], timedelta]:
    @_argument
    def duration(text: str) -> timedelta:
        try:
            value = parse_duration(text)
        except ValueError as exc:  # its message quotes a short prefix of the text
            raise InvalidJobError(field, str(exc)) from None
        return to_duration(value, field, maximum=maximum, positive=positive)

    return duration


def _time(field: str, *, earliest: datetime, latest: datetime) -> Callable[[str], datetime]:
    @_argument
    def time(text: str) -> datetime:
        try:
            value = datetime.fromisoformat(text.upper())  # RFC 3339 allows a lower-case t and z
        except ValueError:
            raise InvalidJobError(field, f"{short(text)} is not an ISO 8601 time like 2030-01-01T09:00:00+01:00") from None
        if value.tzinfo is None:
            raise InvalidJobError(field, f"{short(text)} is a naive time: add its UTC offset, e.g. +01:00 or Z")
        return check_aware_time(value, field, earliest=earliest, latest=latest)

    return time


@_argument
def _payload(text: str) -> object:
    """JSON, parsed with integers kept exact, and refused unless it can be stored as it was given."""
    try:
        payload = pydantic_core.from_json(text, allow_inf_nan=False)
    except ValueError as exc:
        raise InvalidJobError("payload", f"not valid JSON: {exc}") from None
    encode_payload(payload)
    return payload


@_argument
def _cron(text: str) -> str:
    parse_schedule(text, "UTC")
    return text


@_argument
def _timezone(text: str) -> str:
    parse_schedule("* * * * *", text)  # the zone, checked as a schedule checks it
    return text


_queue = _argument(check_queue_name)
_key = _argument(check_key)
_occurrence = _argument(functools.partial(check_key, field="occurrence"))
_job_id = _integer("job_id", 1, MAX_JOB_ID)


def _one_of(field: str, *names: str) -> dict[str, Any]:
    """``add_argument`` options for a value among ``names``. argparse's own ``choices`` would quote
    a refused value in full."""

    @_argument
    def name(text: str) -> str:
        if text not in names:
            raise InvalidJobError(field, f"{short(text)} is not one of {', '.join(names)}")
        return text

    return {"type": name, "metavar": "{" + ",".join(names) + "}"}


def _limit(default: int) -> dict[str, Any]:
    return {"type": _integer("limit", 1, MAX_LIST_LIMIT), "default": default,
            "help": f"at most this many (1-{MAX_LIST_LIMIT}, default {default})"}


def _naptime(text: str) -> timedelta:
    naptime = _duration("autovacuum_naptime")(text)
    if not timedelta(seconds=1) <= naptime <= timedelta(days=24):  # Postgres's range for the setting
        raise argparse.ArgumentTypeError(f"autovacuum_naptime: must be between 1s and 24d, not {short(text)}")
    return naptime


@_argument
def _counts(text: str) -> list[int]:
    """Counts separated by commas."""
    parts = text.split(",", MAX_SIZES)
    if len(parts) > MAX_SIZES:
        raise InvalidJobError("sizes", f"at most {MAX_SIZES} counts")
    return [_to_int(part, "sizes", 1, MAX_PRELOAD) for part in parts]


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
        return _integer(variable, low, high)
    if field.annotation is timedelta:
        return _duration(variable)
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
    group.add_argument("--log-level", default="INFO", **_one_of("log_level", "DEBUG", "INFO", "WARNING", "ERROR"))
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
    worker.add_argument("--queue", action="append", dest="queues", metavar="Q", type=_queue,
                        help="consume only this queue (repeatable)")

    enqueue = command("enqueue", "Enqueue a one-shot job; prints its id.")
    enqueue.add_argument("queue", type=_queue)
    enqueue.add_argument("--payload", type=_payload, default=None, help="the payload, as JSON (default null)")
    when = enqueue.add_mutually_exclusive_group()
    when.add_argument("--delay", type=_duration("delay", maximum=MAX_DELAY), help="run after this long, e.g. 30s")
    when.add_argument("--at", dest="run_at", type=_time("run_at", earliest=EARLIEST_RUN_AT, latest=LATEST_RUN_AT),
                      help="run at this ISO 8601 time (with offset)")
    enqueue.add_argument("--key", type=_key, help="idempotency key: the same key on the same queue enqueues once")
    enqueue.add_argument("--max-attempts", type=_integer("max_attempts", 1, MAX_ATTEMPTS_LIMIT))
    enqueue.add_argument("--timeout", type=_duration("timeout", maximum=MAX_TIMEOUT, positive=True),
                         help="handler timeout, e.g. 60s")

    schedule = command("schedule", "Schedule a recurring (cron) job; prints its id.")
    schedule.add_argument("queue", type=_queue)
    schedule.add_argument("--cron", type=_cron, required=True, help="5 fields, or 6 with seconds last; @hourly, @daily, ...")
    schedule.add_argument("--tz", dest="timezone", type=_timezone, default="UTC",
                          help="IANA time zone of the cron expression (default UTC)")
    schedule.add_argument("--misfire", **_one_of("misfire", "skip", "run_once", "backfill"), default="run_once",
                          help="what to do with ticks missed by more than --misfire-grace (default run_once)")
    schedule.add_argument("--misfire-grace", type=_duration("misfire_grace"),
                          help="lateness still counted as on time (default 5m)")
    schedule.add_argument("--max-backfill", type=_integer("max_backfill", 0, MAX_BACKFILL_LIMIT),
                          help="backfill: most missed ticks run per outage (default 100)")
    schedule.add_argument("--overlap", **_one_of("overlap", "allow", "skip"), default="allow",
                          help="skip: a tick is skipped while the previous occurrence still runs")
    schedule.add_argument("--payload", type=_payload, default=None, help="the payload, as JSON (default null)")
    schedule.add_argument("--key", type=_key, help="idempotency key: declaring the same key again updates the schedule")
    schedule.add_argument("--max-attempts", type=_integer("max_attempts", 1, MAX_ATTEMPTS_LIMIT))
    schedule.add_argument("--timeout", type=_duration("timeout", maximum=MAX_TIMEOUT, positive=True),
                          help="handler timeout, e.g. 60s")

    status = command("status", "Per queue: scheduled, due, in flight, outcomes and lateness.")
    status.add_argument("--window", type=_duration("window", positive=True), default=timedelta(minutes=5),
                        help="look-back for outcomes (default 5m)")
    status.add_argument("--json", action="store_true")
    status.add_argument("--watch", action="store_true", help="a live view, refreshed every second, until Ctrl-C")

    jobs = command("jobs", "Inspect or change jobs.")
    job_commands = jobs.add_subparsers(dest="jobs_command", required=True, metavar="ACTION")
    show = job_commands.add_parser("show", help="a job with every occurrence, attempt and error", parents=[settings])
    show.add_argument("job_id", type=_job_id)
    show.add_argument("--json", action="store_true")
    for action, text in (("cancel", "cancel a job and its pending occurrences"),
                         ("pause", "pause a job: its ticks are skipped (recorded) until resumed"),
                         ("resume", "resume a paused job from its next tick")):
        sub = job_commands.add_parser(action, help=text, parents=[settings])
        sub.add_argument("job_id", type=_job_id)
    listing = job_commands.add_parser("ls", help="list jobs, newest first", parents=[settings])
    listing.add_argument("--queue", type=_queue)
    listing.add_argument("--state", **_one_of("state", "active", "paused", "cancelled"))
    listing.add_argument("--limit", **_limit(100))
    listing.add_argument("--json", action="store_true")
    ticks = job_commands.add_parser("ticks", help="every nominal tick of a job and what happened to it", parents=[settings])
    ticks.add_argument("job_id", type=_job_id)
    ticks.add_argument("--since", type=_time("since", earliest=EARLIEST_SINCE, latest=LATEST_SINCE),
                       help="ISO 8601 time with offset")
    ticks.add_argument("--limit", **_limit(1000))
    ticks.add_argument("--json", action="store_true")

    dlq = command("dlq", "Dead occurrences and their dead-letter queues.")
    dlq_commands = dlq.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")
    dlq_ls = dlq_commands.add_parser("ls", help="dead occurrences per queue, and dead-letter queue sizes", parents=[settings])
    dlq_ls.add_argument("--queue", type=_queue)
    dlq_ls.add_argument("--json", action="store_true")
    dlq_show = dlq_commands.add_parser("show", help="the first dead-letter messages of a queue (headers only)",
                                       parents=[settings])
    dlq_show.add_argument("--queue", type=_queue, required=True)
    dlq_show.add_argument("--limit", **_limit(20))
    dlq_show.add_argument("--json", action="store_true")
    dlq_replay = dlq_commands.add_parser("replay", help="put dead occurrences back as a fresh attempt", parents=[settings])
    dlq_replay.add_argument("--queue", type=_queue, required=True)
    dlq_replay.add_argument("--occurrence", type=_occurrence, help="only this occurrence (idempotency key)")
    dlq_replay.add_argument("--limit", **_limit(100))
    dlq_purge = dlq_commands.add_parser("purge", help="empty a dead-letter queue (Postgres keeps the records)",
                                        parents=[settings])
    dlq_purge.add_argument("--queue", type=_queue, required=True)

    bench = command("bench", "Measure this deployment: burst, steady, enqueue, scale, churn, memory (tables, JSON "
                             "with versions); plot: lateness against offered rate from steady results.")
    bench.add_argument("scenario", **_one_of("scenario", "burst", "steady", "enqueue", "scale", "churn", "memory", "plot"))
    bench.add_argument("inputs", nargs="*", metavar="JSON", help="plot: steady result files or folders")
    bench.add_argument("--jobs", type=_integer("jobs", 1, MAX_BENCH_JOBS),
                       help="jobs per run: burst/enqueue/memory's burst (default 20000), churn (default 1000000)")
    bench.add_argument("--rate", type=_number("rate", MAX_BENCH_RATE), default=200.0, help="steady: offered jobs/s (default 200)")
    bench.add_argument("--duration", type=_number("duration", MAX_BENCH_SECONDS), default=10.0,
                       help="steady: seconds (default 10)")
    bench.add_argument("--find-max", action="store_true", help="steady: search the highest rate with p99 under 100 ms")
    bench.add_argument("--handler", **_one_of("handler", "noop", "db"), default="db",
                       help="noop, or db: one row written through ctx.db per job (default)")
    bench.add_argument("--workers", type=_integer("workers", 1, MAX_PROCESSES), default=1, help="worker processes (default 1)")
    bench.add_argument("--timers", type=_integer("timers", 1, MAX_PROCESSES), default=1, help="timer processes (default 1)")
    bench.add_argument("--runs", type=_integer("runs", 1, MAX_RUNS), default=3,
                       help="repetitions; medians are reported (default 3)")
    bench.add_argument("--warmup", type=_number("warmup", MAX_BENCH_SECONDS, zero=True), default=2.0,
                       help="burst/steady/scale: a run whose figures are dropped comes first, so that pools, "
                            "channels and queues are open: steady and scale's lateness run SECONDS at the offered rate, "
                            "burst drains SECONDS x 1,000 jobs (default 2; 0: none)")
    bench.add_argument("--out", default="bench-results", help="folder for the JSON results")
    bench.add_argument("--sizes", type=_counts, default=[10_000, 1_000_000, 10_000_000],
                       help="scale: scheduled jobs preloaded at each step (default 10000,1000000,10000000)")
    bench.add_argument("--claim-batches", type=_integer("claim_batches", 1, MAX_LIST_LIMIT), default=40,
                       help="scale: claim batches timed per size (default 40)")
    bench.add_argument("--preload", type=_integer("preload", 0, MAX_PRELOAD), default=1_000_000,
                       help="churn/memory: future jobs preloaded (default 1000000)")
    bench.add_argument("--autovacuum", **_one_of("autovacuum", "server", "on"), default="server",
                       help="churn: 'on' switches autovacuum on for the run (ALTER SYSTEM, superuser), reset after")
    bench.add_argument("--autovacuum-naptime", type=_naptime, default=None,
                       help="churn: autovacuum on with this launcher naptime for the run, e.g. 5s (ALTER SYSTEM, "
                            "superuser; the server's default is 60s), reset after")
    bench.add_argument("--settle", type=_number("settle", MAX_BENCH_SECONDS, zero=True), default=6.0,
                       help="memory: seconds idle before reading RSS (default 6)")
    bench.add_argument("--keep", action="store_true", help="scale/churn/memory: keep the preloaded jobs")
    bench.add_argument("--output", default="bench-lateness.png", help="plot: the PNG to write")

    demo = command("demo", "Run the whole pipeline on the local services and check nothing was lost.")
    demo.add_argument("--jobs", type=_integer("jobs", 1, MAX_DEMO_JOBS), default=3000, help="jobs to enqueue (default 3000)")
    demo.add_argument("--spread", type=_duration("spread", maximum=MAX_DEMO_SPREAD, positive=True),
                      default=timedelta(seconds=5), help="spread of due times (default 5s)")
    demo.add_argument("--workers", type=_integer("workers", 1, MAX_PROCESSES), default=2, help="worker processes (default 2)")
    demo.add_argument("--timers", type=_integer("timers", 1, MAX_PROCESSES), default=1, help="timer processes (default 1)")
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
        _exit(EXIT_USAGE, exc.message, inputs)
    configure_logging(args.log_level)
    logging_off = logging.root.manager.disable
    try:
        code = dispatch(args, load_settings(args))
    except KeyboardInterrupt:
        failure = EXIT_INTERRUPTED, "interrupted"
        logging.disable(logging.CRITICAL)
    except Exception as exc:  # every failure ends as one line, never a traceback
        failure = _reported(exc)
        logging.disable(logging.CRITICAL)
    else:
        sys.exit(code)
    # The line is the whole report. What the failed command left (a future of a cancelled
    # connection that nobody retrieved) is collected while logging is off: asyncio would report
    # it as it goes, a second line that only repeats the failure.
    gc.collect()
    logging.disable(logging_off)
    _exit(*failure, inputs)


def _reported(exc: Exception) -> tuple[int, str]:
    """The exit code and the line that report ``exc``."""
    if _raised_by(exc, "asyncpg"):  # a path that reached Postgres without the store's translation
        exc = translated(exc)
    elif isinstance(exc, (ValueError, OverflowError)) and not isinstance(exc, ChronoqError) and (
        setting := _refused_setting(exc)
    ):
        return EXIT_USAGE, f"error: invalid setting: CHRONOQ_{setting.upper()}: {type(exc).__name__}: {exc}"
    if isinstance(exc, (ConfigError, InvalidJobError, JobNotFoundError, JobStateError, UnknownQueueError)):
        return EXIT_USAGE, f"error: {exc}"
    if isinstance(exc, ServiceUnavailableError):
        return EXIT_UNAVAILABLE, f"unavailable: {exc}"
    if isinstance(exc, ChronoqError):
        return EXIT_FAILURE, f"error: {exc}"
    if _raised_by(exc, "aio_pika", "aiormq", "pamqp"):
        # Connection errors are translated by the broker package; what is left is a refusal,
        # most often of the virtual host or of the user's permissions.
        return EXIT_FAILURE, f"error: RabbitMQ refused: {type(exc).__name__} (check the amqp_url: user, password, virtual host)"
    if isinstance(exc, (ConnectionError, socket.gaierror, TimeoutError)):
        return EXIT_UNAVAILABLE, f"unavailable: {type(exc).__name__}: {exc}"
    if isinstance(exc, OSError):
        return EXIT_FAILURE, f"error: {type(exc).__name__}: {exc}"
    log.debug("internal error", exc_info=exc, extra={"action": "cli_internal_error"})
    return EXIT_FAILURE, f"error: internal error: {type(exc).__name__} (rerun with --log-level DEBUG for the traceback)"


def _refused_setting(exc: BaseException) -> str | None:
    """``database_url`` or ``amqp_url`` if ``exc`` (a bad value) was raised while the driver for
    it was running: the driver found the URL unusable (a port out of range, say)."""
    tb = exc.__traceback__
    while tb is not None:
        module = tb.tb_frame.f_globals.get("__name__", "").partition(".")[0]
        if module == "asyncpg":
            return "database_url"
        if module in ("aio_pika", "aiormq", "yarl"):
            return "amqp_url"
        tb = tb.tb_next
    return None


def _raised_by(exc: BaseException, *packages: str) -> bool:
    """True if ``exc`` is an exception of one of these packages. Drivers are recognised by name:
    the CLI does not import aio-pika (only ``_broker`` does)."""
    return type(exc).__module__.partition(".")[0] in packages


def _exit(code: int, message: str, inputs: Iterable[str]) -> NoReturn:
    sys.stderr.write(bounded(message, inputs) + "\n")
    sys.exit(code)


def bounded(message: str, inputs: Iterable[str]) -> str:
    """``message`` as one printable line of at most MESSAGE_LENGTH characters that repeats no
    more than ECHO_LENGTH consecutive characters of any of ``inputs``, whatever produced it:
    argparse quotes a refused choice in full, Postgres names the database that is missing."""
    line = _printable(message)[: 4 * MESSAGE_LENGTH]
    sources = [_printable(text) for text in inputs if len(text) > ECHO_LENGTH]

    def echoed(start: int) -> bool:
        window = line[start : start + ECHO_LENGTH + 1]
        return len(window) > ECHO_LENGTH and any(window in source for source in sources)

    kept, start, i = [], 0, 0
    while i + ECHO_LENGTH < len(line):
        if not echoed(i):
            i += 1
            continue
        end = i + 1
        while echoed(end):
            end += 1
        kept.append(line[start : i + ECHO_LENGTH] + "...")
        start = i = end + ECHO_LENGTH
    kept.append(line[start:])
    text = "".join(kept)
    return text if len(text) <= MESSAGE_LENGTH else text[: MESSAGE_LENGTH - 3] + "..."


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else " " for c in text)


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
