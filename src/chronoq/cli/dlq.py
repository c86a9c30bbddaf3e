"""``chronoq dlq ls|show|replay|purge``: dead occurrences (recorded in Postgres) and the copies of
their messages in the dead-letter queues (for the RabbitMQ management UI)."""

from __future__ import annotations

import argparse

from chronoq._broker import dead_letters
from chronoq._broker.connection import connect_for as connect_broker
from chronoq._runtime.config import Settings
from chronoq._store import dead
from chronoq._store.connection import connect, database_errors
from chronoq.cli import render
from chronoq.cli.arguments import limit, occurrence, queue
from chronoq.cli.command import Actions, add_actions, add_command, run_async
from chronoq.cli.settings import BROKER, DATABASE, topology
from chronoq.errors import UnknownQueueError
from chronoq.schemas.rules import short

NAME = "chronoq-dlq"


def add_commands(actions: Actions) -> None:
    dlq = add_actions(add_command(actions, "dlq", "Dead occurrences and their dead-letter queues.", settings=BROKER),
                      "dlq_command")
    ls = add_command(dlq, "ls", "dead occurrences per queue, and dead-letter queue sizes", settings=(*DATABASE, *BROKER),
                     run=_ls)
    ls.add_argument("--queue", type=queue)
    ls.add_argument("--json", action="store_true")
    show = add_command(dlq, "show", "the first dead-letter messages of a queue (headers only)", settings=BROKER,
                       run=_show)
    show.add_argument("--queue", type=queue, required=True)
    show.add_argument("--limit", **limit(20))
    show.add_argument("--json", action="store_true")
    replay = add_command(dlq, "replay", "put dead occurrences back as a fresh attempt", settings=(*DATABASE, *BROKER),
                         run=_replay)
    replay.add_argument("--queue", type=queue, required=True)
    replay.add_argument("--occurrence", type=occurrence, help="only this occurrence (idempotency key)")
    replay.add_argument("--limit", **limit(100))
    purge = add_command(dlq, "purge", "empty a dead-letter queue (Postgres keeps the records)", settings=BROKER,
                        run=_purge)
    purge.add_argument("--queue", type=queue, required=True)


def _ls(args: argparse.Namespace, settings: Settings) -> int:
    return run_async(ls_dead(settings, args.queue, as_json=args.json))


def _show(args: argparse.Namespace, settings: Settings) -> int:
    return run_async(show_dead_letters(settings, args.queue, args.limit, as_json=args.json))


def _replay(args: argparse.Namespace, settings: Settings) -> int:
    return run_async(replay(settings, args.queue, args.occurrence, args.limit))


def _purge(args: argparse.Namespace, settings: Settings) -> int:
    return run_async(purge_dead_letters(settings, args.queue))


async def ls_dead(settings: Settings, queue: str | None, *, as_json: bool) -> int:
    with database_errors():
        conn = await connect(settings.database_url, application_name=NAME)
        try:
            rows = await dead.counts(conn, queue)
        finally:
            await conn.close()
    broker = await connect_broker(settings, name=NAME)
    try:
        listing = [
            {"queue": r["queue"], "dead": r["dead"], "last_dead": r["last_dead"],
             "dead_letter_messages": await dead_letters.message_count(broker, topology(settings), r["queue"])}
            for r in rows
        ]
    finally:
        await broker.close()
    if as_json:
        render.print_json(listing)
    else:
        render.dead_counts(listing)
    return 0


async def show_dead_letters(settings: Settings, queue: str, limit: int, *, as_json: bool) -> int:
    broker = await connect_broker(settings, name=NAME)
    try:
        messages = await dead_letters.peek(broker, topology(settings), queue, limit)
    finally:
        await broker.close()
    if messages is None:
        raise UnknownQueueError(f"RabbitMQ has no dead-letter queue {short(topology(settings).dead_queue_name(queue))}: "
                                "it is declared with the queue, when a timer or worker first uses it")
    if as_json:
        render.print_json(messages)
    else:
        render.dead_letters(queue, limit, messages)
    return 0


async def replay(settings: Settings, queue: str, occurrence: str | None, limit: int) -> int:
    with database_errors():
        conn = await connect(settings.database_url, application_name=NAME)
        try:
            async with conn.transaction():
                keys = await dead.replay(conn, queue, occurrence, limit)
        finally:
            await conn.close()
    broker = await connect_broker(settings, name=NAME)
    try:
        removed = await dead_letters.remove(broker, topology(settings), queue, keys)
    finally:
        await broker.close()
    render.out.print(f"replayed {len(keys)} dead occurrence(s) of {queue} as a fresh attempt; "
                     f"{removed} dead-letter cop{'y' if removed == 1 else 'ies'} removed")
    return 0


async def purge_dead_letters(settings: Settings, queue: str) -> int:
    broker = await connect_broker(settings, name=NAME)
    try:
        purged = await dead_letters.purge(broker, topology(settings), queue)
    finally:
        await broker.close()
    render.out.print(f"purged {purged} message(s) from the dead-letter queue of {queue} "
                     "(the dead records in Postgres are kept)")
    return 0
