"""``chronoq status``: per queue, scheduled, due, in flight, outcomes and lateness; ``--watch``
for a live view."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from datetime import timedelta

from rich.live import Live

from chronoq._runtime.config import Settings
from chronoq.cli import render
from chronoq.cli.arguments import duration
from chronoq.cli.command import Actions, add_command, run_async
from chronoq.cli.errors import EXIT_OK
from chronoq.cli.settings import DATABASE
from chronoq.producer import Producer

#: The look-back of ``--watch``'s throughput column.
RECENT = timedelta(seconds=10)


def add_commands(actions: Actions) -> None:
    status = add_command(actions, "status", "Per queue: scheduled, due, in flight, outcomes and lateness.",
                         settings=DATABASE, run=_status)
    status.add_argument("--window", type=duration("window", positive=True), default=timedelta(minutes=5),
                        help="look-back for outcomes (default 5m)")
    status.add_argument("--json", action="store_true")
    status.add_argument("--watch", action="store_true", help="a live view, refreshed every second, until Ctrl-C")


def _status(args: argparse.Namespace, settings: Settings) -> int:
    try:
        return run_async(status(settings, args.window, as_json=args.json, watch=args.watch))
    except KeyboardInterrupt:
        return EXIT_OK


async def status(settings: Settings, window: timedelta, *, as_json: bool, watch: bool = False) -> int:
    async with Producer(settings.database_url) as producer:
        if watch:
            await _watch(producer, window)
            return 0
        rows = await producer.status(window)
    if as_json:
        render.print_json([r.model_dump() for r in rows])
    else:
        render.out.print(render.queue_table(rows))
    return 0


async def _watch(producer: Producer, window: timedelta, every: float = 1.0) -> None:
    """A live view until Ctrl-C: the status table plus throughput over the last 10 seconds."""
    # Ctrl-C ends the loop between refreshes, so the view and the pool close in order instead of
    # a KeyboardInterrupt landing in the middle of a query.
    quit_requested = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, quit_requested.set)
    try:
        with Live(console=render.out, refresh_per_second=4, screen=False) as live:
            while not quit_requested.is_set():
                rows = await producer.status(window)
                rates = {r.queue: r.succeeded / RECENT.total_seconds() for r in await producer.status(RECENT)}
                table = render.queue_table(rows, rates=rates)
                table.caption = f"outcomes and lateness over the last {window}; refreshed every {every:g}s (Ctrl-C to quit)"
                live.update(table)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(quit_requested.wait(), every)
    finally:
        loop.remove_signal_handler(signal.SIGINT)
