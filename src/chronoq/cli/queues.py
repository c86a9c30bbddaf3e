"""``chronoq queues ls|pause|resume|limit``: see and control queues across the fleet."""

from __future__ import annotations

import argparse

from chronoq._runtime.config import Settings
from chronoq.cli import render
from chronoq.cli.arguments import integer, queue, rate
from chronoq.cli.command import Actions, add_actions, add_command, run_async
from chronoq.cli.settings import DATABASE
from chronoq.errors import InvalidJobError
from chronoq.producer import Producer
from chronoq.schemas.limits import MAX_RUNNING_LIMIT


def add_commands(actions: Actions) -> None:
    queues = add_actions(add_command(actions, "queues", "See and control queues: pause, resume, limits.",
                                     settings=DATABASE), "queues_command")
    listing = add_command(queues, "ls", "every queue: paused or not, limits, due, running, deferred",
                          settings=DATABASE, run=_list)
    listing.add_argument("--json", action="store_true")
    for action, text in (("pause", "dispatch nothing more of the queue until resumed; nothing is lost"),
                         ("resume", "dispatch the queue's jobs again, those that came due meanwhile first")):
        change = add_command(queues, action, text, settings=DATABASE, run=_change)
        change.add_argument("queue", type=queue)
    limit = add_command(queues, "limit", "set the queue's limits across every timer and worker (replaces them)",
                        settings=DATABASE, run=_limit)
    limit.add_argument("queue", type=queue)
    limit.add_argument("--max-running", type=integer("max_running", 1, MAX_RUNNING_LIMIT),
                       help="at most N of its jobs between dispatch and outcome at once")
    limit.add_argument("--rate", type=rate, help="at most COUNT dispatches in any window of PERIOD, e.g. 100/1s")
    limit.add_argument("--none", action="store_true", help="lift every limit")


def _list(args: argparse.Namespace, settings: Settings) -> int:
    return run_async(list_queues(settings, as_json=args.json))


def _change(args: argparse.Namespace, settings: Settings) -> int:
    return run_async(change_queue(settings, args.queues_command, args.queue))


def _limit(args: argparse.Namespace, settings: Settings) -> int:
    if args.none == (args.max_running is not None or args.rate is not None):
        raise InvalidJobError("limits", "give --max-running and/or --rate, or --none to lift every limit")
    return run_async(limit_queue(settings, args.queue, args.max_running, args.rate))


async def list_queues(settings: Settings, *, as_json: bool) -> int:
    async with Producer(settings.database_url) as producer:
        rows = await producer.status()
    if as_json:
        render.print_json([{key: getattr(r, key) for key in render.QUEUE_CONTROL_FIELDS} for r in rows])
    else:
        render.out.print(render.queue_controls(rows))
    return 0


async def change_queue(settings: Settings, action: str, name: str) -> int:
    async with Producer(settings.database_url) as producer:
        changed = await (producer.pause_queue(name) if action == "pause" else producer.resume_queue(name))
    past = "paused" if action == "pause" else "resumed"
    render.out.print(f"queue {name} {past}" if changed else
                     f"queue {name} was not changed (already {'paused' if action == 'pause' else 'running'})")
    return 0


async def limit_queue(settings: Settings, name: str, max_running: int | None, rate: object) -> int:
    async with Producer(settings.database_url) as producer:
        await producer.set_queue_limits(name, max_running=max_running, rate=rate)  # type: ignore[arg-type]
    limits = [f"max running {max_running}"] if max_running is not None else []
    limits += [f"rate {rate}"] if rate is not None else []
    render.out.print(f"queue {name}: {', '.join(limits) or 'no limits'}")
    return 0
