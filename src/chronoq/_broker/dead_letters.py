"""Reading and clearing dead-letter queues (``<ns>.dlq.<queue>``) for ``chronoq dlq``.

Postgres holds the record of every dead occurrence; these queues hold copies of their messages
for operators. Peeking returns messages to the queue; only headers are shown, never payloads.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from aio_pika.abc import AbstractRobustConnection
from aiormq.exceptions import ChannelNotFoundEntity

from chronoq._broker.topology import Topology

#: Most messages looked at when taking replayed copies out of a dead-letter queue.
SCAN_LIMIT = 10_000
SHOWN_HEADERS = ("x-chronoq-job-id", "x-chronoq-idempotency-key", "x-chronoq-attempt", "x-chronoq-reason",
                 "x-chronoq-error", "x-first-death-reason")


async def message_count(connection: AbstractRobustConnection, topology: Topology, queue: str) -> int | None:
    """Messages in the queue's dead-letter queue; None if it does not exist."""
    channel = await connection.channel()
    try:
        declared = await channel.declare_queue(topology.dead_queue_name(queue), passive=True)
        return declared.declaration_result.message_count
    except ChannelNotFoundEntity:
        return None
    finally:
        if not channel.is_closed:
            await channel.close()


async def peek(
    connection: AbstractRobustConnection, topology: Topology, queue: str, limit: int,
) -> list[dict[str, Any]] | None:
    """The headers of the first ``limit`` messages; None if the dead-letter queue does not exist."""
    channel = await connection.channel()
    try:
        try:
            dlq = await channel.declare_queue(topology.dead_queue_name(queue), passive=True)
        except ChannelNotFoundEntity:
            return None
        seen, held = [], []
        for _ in range(limit):
            message = await dlq.get(no_ack=False, fail=False)
            if message is None:
                break
            held.append(message)
            headers = dict(message.headers or {})
            seen.append({h.removeprefix("x-chronoq-"): _text(headers.get(h)) for h in SHOWN_HEADERS if h in headers}
                        | {"message_id": message.message_id})
        for message in held:
            await message.nack(requeue=True)
        return seen
    finally:
        if not channel.is_closed:
            await channel.close()


async def remove(connection: AbstractRobustConnection, topology: Topology, queue: str, keys: Iterable[str]) -> int:
    """Take the copies of these occurrences out of the dead-letter queue (after a replay)."""
    wanted = set(keys)
    channel = await connection.channel()
    removed = 0
    try:
        dlq = await channel.declare_queue(topology.dead_queue_name(queue), passive=True)
        held = []
        for _ in range(SCAN_LIMIT):
            if not wanted:
                break
            message = await dlq.get(no_ack=False, fail=False)
            if message is None:
                break
            key = _text((message.headers or {}).get("x-chronoq-idempotency-key"))
            if key in wanted:
                await message.ack()
                wanted.discard(key)
                removed += 1
            else:
                held.append(message)
        for message in held:
            await message.nack(requeue=True)
        return removed
    except ChannelNotFoundEntity:
        return 0
    finally:
        if not channel.is_closed:
            await channel.close()


async def purge(connection: AbstractRobustConnection, topology: Topology, queue: str) -> int:
    channel = await connection.channel()
    try:
        dlq = await channel.declare_queue(topology.dead_queue_name(queue), passive=True)
        result = await dlq.purge()
        return result.message_count or 0
    except ChannelNotFoundEntity:
        return 0
    finally:
        if not channel.is_closed:
            await channel.close()


def _text(value: Any) -> Any:
    return value.decode(errors="replace") if isinstance(value, bytes) else value
