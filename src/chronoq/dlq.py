"""``chronoq dlq ls|show|replay|purge``: dead occurrences (recorded in Postgres) and the copies of
their messages in the dead-letter queues (for the RabbitMQ management UI)."""

from __future__ import annotations

import orjson
from rich.table import Table

from chronoq._broker import dead_letters
from chronoq._broker.connection import connect as connect_broker
from chronoq._broker.topology import Topology
from chronoq._runtime.config import Settings
from chronoq._store import dead
from chronoq._store.connection import connect, database_errors
from chronoq.commands import out
from chronoq.errors import UnknownQueueError
from chronoq.schemas.rules import short


def _topology(settings: Settings) -> Topology:
    return Topology(settings.namespace, settings.queue_type, settings.delivery_limit)


async def ls(settings: Settings, queue: str | None, *, as_json: bool) -> int:
    with database_errors():
        conn = await connect(settings.database_url, application_name="chronoq-dlq")
        try:
            rows = await dead.counts(conn, queue)
        finally:
            await conn.close()
    broker = await connect_broker(settings.amqp_url, name="chronoq-dlq")
    try:
        listing = [
            {"queue": r["queue"], "dead": r["dead"], "last_dead": r["last_dead"],
             "dead_letter_messages": await dead_letters.message_count(broker, _topology(settings), r["queue"])}
            for r in rows
        ]
    finally:
        await broker.close()
    if as_json:
        print(orjson.dumps(listing, option=orjson.OPT_INDENT_2).decode())
        return 0
    table = Table(title="dead occurrences")
    for column in ("queue", "dead (Postgres)", "messages in dead-letter queue", "last dead"):
        table.add_column(column)
    for item in listing:
        table.add_row(item["queue"], str(item["dead"]), str(item["dead_letter_messages"]), item["last_dead"].isoformat())
    out.print(table)
    return 0


async def show(settings: Settings, queue: str, limit: int, *, as_json: bool) -> int:
    topology = _topology(settings)
    broker = await connect_broker(settings.amqp_url, name="chronoq-dlq")
    try:
        messages = await dead_letters.peek(broker, topology, queue, limit)
    finally:
        await broker.close()
    if messages is None:
        raise UnknownQueueError(f"RabbitMQ has no dead-letter queue {short(topology.dead_queue_name(queue))}: "
                                "it is declared with the queue, when a timer or worker first uses it")
    if as_json:
        print(orjson.dumps(messages, option=orjson.OPT_INDENT_2).decode())
        return 0
    table = Table(title=f"dead-letter queue of {queue} (first {limit})")
    for column in ("job", "occurrence", "attempt", "reason", "error"):
        table.add_column(column)
    for m in messages:
        table.add_row(str(m.get("job-id", "")), str(m.get("idempotency-key", "")), str(m.get("attempt", "")),
                      str(m.get("reason") or m.get("x-first-death-reason") or ""), str(m.get("error", "")))
    out.print(table)
    return 0


async def replay(settings: Settings, queue: str, occurrence: str | None, limit: int) -> int:
    with database_errors():
        conn = await connect(settings.database_url, application_name="chronoq-dlq")
        try:
            async with conn.transaction():
                keys = await dead.replay(conn, queue, occurrence, limit)
        finally:
            await conn.close()
    broker = await connect_broker(settings.amqp_url, name="chronoq-dlq")
    try:
        removed = await dead_letters.remove(broker, _topology(settings), queue, keys)
    finally:
        await broker.close()
    out.print(f"replayed {len(keys)} dead occurrence(s) of {queue} as a fresh attempt; "
              f"{removed} dead-letter cop{'y' if removed == 1 else 'ies'} removed")
    return 0


async def purge(settings: Settings, queue: str) -> int:
    broker = await connect_broker(settings.amqp_url, name="chronoq-dlq")
    try:
        purged = await dead_letters.purge(broker, _topology(settings), queue)
    finally:
        await broker.close()
    out.print(f"purged {purged} message(s) from the dead-letter queue of {queue} "
              "(the dead records in Postgres are kept)")
    return 0
