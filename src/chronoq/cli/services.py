"""The services and their set-up: ``chronoq migrate``, ``timer``, ``worker`` and ``schema``."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

import orjson

from chronoq._broker.connection import connect_for as connect_broker
from chronoq._broker.topology import declare_exchanges, declare_submissions
from chronoq._runtime.config import Settings
from chronoq._runtime.hooks import Hooks, PrometheusHooks
from chronoq._runtime.service import run_until_signalled
from chronoq._store import migrate as migrations
from chronoq._store.connection import database_errors
from chronoq.cli import render
from chronoq.cli.arguments import queue
from chronoq.cli.command import Actions, add_command, run_async
from chronoq.cli.settings import BROKER, DATABASE, TIMER, WORKER, topology
from chronoq.consumer.registry import Worker
from chronoq.consumer.service import WorkerService
from chronoq.errors import ConfigError
from chronoq.schemas.rules import short
from chronoq.timer import Timer

ROLES = "chronoq_producer, chronoq_timer, chronoq_worker"


def add_commands(actions: Actions) -> None:
    migrate = add_command(actions, "migrate", "Create the database if missing, apply the schema migrations, declare "
                          "RabbitMQ exchanges.", settings=(*DATABASE, *BROKER), run=_migrate)
    migrate.add_argument("--print", action="store_true", dest="print_sql", help="print the SQL instead of applying it")
    migrate.add_argument("--roles", action="store_true", help=f"also create least-privilege roles {ROLES}")
    add_command(actions, "timer", "Run one timer. Any number may run at once.", settings=TIMER, run=_timer)
    add_command(actions, "schema", "Print the JSON Schema of job submissions over AMQP (for services in other "
                "languages).", run=_schema)
    worker = add_command(actions, "worker", "Run the Worker found at MODULE:ATTR.", settings=WORKER, run=_worker)
    worker.add_argument("target", metavar="MODULE:ATTR")
    worker.add_argument("--queue", action="append", dest="queues", metavar="Q", type=queue,
                        help="consume only this queue (repeatable)")
    worker.add_argument("--app-dir", default=".", metavar="DIR",
                        help="look for MODULE in this folder first (default: the current folder)")


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    if args.print_sql:
        sys.stdout.write(migrations.script())
        if args.roles:
            sys.stdout.write("\n" + migrations.roles_script())
        return 0
    applied = run_async(migrate(settings, roles=args.roles))
    render.out.print(f"migrations applied: {applied}; RabbitMQ exchanges declared under '{settings.namespace}'"
                     + (f"; roles {ROLES} granted" if args.roles else ""))
    return 0


async def migrate(settings: Settings, *, roles: bool = False) -> str:
    """Apply the migrations, declare the exchanges; returns the migrations applied, named."""
    with database_errors():
        applied = await migrations.migrate(settings.database_url)
        if roles:
            await migrations.create_roles(settings.database_url)
    broker = await connect_broker(settings, name="chronoq-migrate")
    try:
        channel = await broker.channel()
        await declare_exchanges(channel, topology(settings))
        await declare_submissions(channel, topology(settings))
    finally:
        await broker.close()
    return ", ".join(f"{m.version:03d}_{m.name}" for m in applied) or "none (up to date)"


def _schema(args: argparse.Namespace, settings: Settings) -> int:
    from chronoq.schemas.submission import json_schema

    print(orjson.dumps(json_schema(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode())
    return 0


def _hooks(settings: Settings) -> Hooks | None:
    if settings.metrics_port is None:
        return None
    hooks = PrometheusHooks()
    hooks.serve(settings.metrics_port)
    return hooks


def _timer(args: argparse.Namespace, settings: Settings) -> int:
    async def timer() -> None:
        await run_until_signalled(Timer(settings, hooks=_hooks(settings)))

    run_async(timer(), fast_loop=True)
    return 0


def _worker(args: argparse.Namespace, settings: Settings) -> int:
    registry = load_worker(args.target, app_dir=args.app_dir)

    async def worker() -> None:
        await run_until_signalled(WorkerService(registry, settings, queues=args.queues, hooks=_hooks(settings)))

    run_async(worker(), fast_loop=True)
    return 0


def load_worker(target: str, *, app_dir: str | None = None) -> Worker:
    """Import ``module:attr`` and check it is a Worker: handlers come only from a registry the
    operator named, never from anything a message says. ``app_dir`` goes first on the import
    path (a console script, unlike ``python -m``, does not put the current folder there)."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"worker target {short(target)} must look like package.module:attribute")
    if app_dir is not None:
        sys.path.insert(0, os.path.abspath(app_dir))
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # the operator's module may fail in any way as it loads
        raise ConfigError(f"cannot import {short(module_name)}: {type(exc).__name__}: {exc}") from None
    worker = getattr(module, attr, None)
    if not isinstance(worker, Worker):
        raise ConfigError(f"{short(target)} is not a chronoq.Worker (found {type(worker).__name__})")
    return worker
