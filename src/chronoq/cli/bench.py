"""``chronoq bench SCENARIO``: the flags of the benchmarks, and the checks made before a run."""

from __future__ import annotations

import argparse
from typing import Any

from chronoq._runtime.config import Settings
from chronoq.cli.arguments import (
    MAX_BENCH_JOBS,
    MAX_BENCH_RATE,
    MAX_BENCH_SECONDS,
    MAX_PRELOAD,
    MAX_PROCESSES,
    MAX_RUNS,
    counts,
    integer,
    naptime,
    number,
    one_of,
)
from chronoq.cli.command import Actions, add_command, run_async
from chronoq.cli.settings import FLEET
from chronoq.errors import ConfigError, InvalidJobError
from chronoq.schemas.rules import MAX_LIST_LIMIT

SCENARIOS = ("burst", "steady", "enqueue", "scale", "churn", "memory", "idle", "plot")
DESCRIPTION = ("Measure this deployment: burst, steady, enqueue, scale, churn, memory, idle (CPU and Postgres "
               "wake-ups of a timer and a worker with nothing due) as tables and JSON with versions; plot: lateness "
               "against offered rate from steady results. With pg_stat_statements in the database, burst, steady and "
               "idle list the statements Postgres spent its time on. Server settings are left as they are unless "
               "--tune-server is given.")
#: Defaults that differ by scenario: (the scenario's, every other's).
IDLE_DURATION, DURATION = 30.0, 10.0
IDLE_PRELOAD, PRELOAD = 1_000, 1_000_000
#: Every option the scenarios read, by its ``dest``.
OPTIONS = ("jobs", "rate", "duration", "find_max", "handler", "workers", "timers", "runs", "warmup", "out", "sizes",
           "claim_batches", "preload", "autovacuum", "autovacuum_naptime", "settle", "keep", "inputs", "output",
           "tune_server")


def add_commands(actions: Actions) -> None:
    bench = add_command(actions, "bench", DESCRIPTION, settings=FLEET, run=_bench)
    bench.add_argument("scenario", **one_of("scenario", *SCENARIOS))
    bench.add_argument("inputs", nargs="*", metavar="JSON", help="plot: steady result files or folders")
    bench.add_argument("--jobs", type=integer("jobs", 1, MAX_BENCH_JOBS),
                       help="jobs per run: burst/enqueue/memory's burst (default 20000), churn (default 1000000)")
    bench.add_argument("--rate", type=number("rate", MAX_BENCH_RATE), default=200.0, help="steady: offered jobs/s (default 200)")
    bench.add_argument("--duration", type=number("duration", MAX_BENCH_SECONDS),
                       help="steady: seconds (default 10); idle: seconds measured per run (default 30)")
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
    _add_preload_options(bench)
    bench.add_argument("--output", default="bench-lateness.png", help="plot: the PNG to write")


def _add_preload_options(bench: argparse.ArgumentParser) -> None:
    """The options of the scenarios that preload the wheel (scale, churn, memory)."""
    bench.add_argument("--sizes", type=counts, default=[10_000, 1_000_000, 10_000_000],
                       help="scale: scheduled jobs preloaded at each step (default 10000,1000000,10000000)")
    bench.add_argument("--claim-batches", type=integer("claim_batches", 1, MAX_LIST_LIMIT), default=40,
                       help="scale: claim batches timed per size (default 40)")
    bench.add_argument("--preload", type=integer("preload", 0, MAX_PRELOAD),
                       help="churn/memory: future jobs preloaded (default 1000000); idle: jobs scheduled far ahead, "
                            "none due (default 1000)")
    bench.add_argument("--tune-server", action="store_true",
                       help="allow the run to act on the whole Postgres server (superuser): scale runs a CHECKPOINT "
                            "after each preload; churn's --autovacuum on and --autovacuum-naptime change settings "
                            "with ALTER SYSTEM for the run and reset them after. Without it nothing server-wide is "
                            "changed, and the report says what was not done")
    bench.add_argument("--autovacuum", **one_of("autovacuum", "server", "on"), default="server",
                       help="churn: 'on' switches autovacuum on for the run (needs --tune-server)")
    bench.add_argument("--autovacuum-naptime", type=naptime, default=None,
                       help="churn: autovacuum on with this launcher naptime for the run, e.g. 5s (needs "
                            "--tune-server; the server's default is 60s)")
    bench.add_argument("--settle", type=number("settle", MAX_BENCH_SECONDS, zero=True), default=6.0,
                       help="memory: seconds idle before reading RSS (default 6)")
    bench.add_argument("--keep", action="store_true", help="scale/churn/memory/idle: keep the preloaded jobs")


def _bench(args: argparse.Namespace, settings: Settings) -> int:
    from chronoq.bench.command import run_bench

    _fill_defaults(args)
    _check_load(args)
    _check_server_changes(args)
    options: dict[str, Any] = {name: getattr(args, name) for name in OPTIONS}
    options["concurrency"] = settings.concurrency
    return run_async(run_bench(settings, args.scenario, options), fast_loop=True)


def _fill_defaults(args: argparse.Namespace) -> None:
    """The defaults that depend on the scenario."""
    idle = args.scenario == "idle"
    if args.jobs is None:
        args.jobs = 1_000_000 if args.scenario == "churn" else 20_000
    if args.duration is None:
        args.duration = IDLE_DURATION if idle else DURATION
    if args.preload is None:
        args.preload = IDLE_PRELOAD if idle else PRELOAD


def _check_load(args: argparse.Namespace) -> None:
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


def _check_server_changes(args: argparse.Namespace) -> None:
    """A flag that asks for a server setting to change needs --tune-server as well."""
    asked = [flag for flag, given in (("--autovacuum on", args.autovacuum == "on"),
                                      ("--autovacuum-naptime", args.autovacuum_naptime is not None)) if given]
    if asked and not args.tune_server:
        raise ConfigError(f"{' and '.join(asked)} change the server's settings (ALTER SYSTEM): add --tune-server "
                          "to allow it")
