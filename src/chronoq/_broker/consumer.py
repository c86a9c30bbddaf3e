"""Consuming job queues: a prefetch-bounded subscription that hands each delivery to a
callback as a driver-free :class:`Incoming`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from aio_pika.exceptions import MessageProcessError

from chronoq._broker.connection import BROKER_ERRORS, open_channel, while_stopping
from chronoq._broker.topology import Topology, declare_queue, declare_submissions


@dataclass(frozen=True)
class Incoming:
    """One delivery. Settle it exactly once with ack, requeue or dead_letter; if the channel is
    gone by then, the broker requeues the delivery by itself, so settling never raises."""

    body: bytes
    headers: dict[str, Any]
    redelivered: bool
    _message: AbstractIncomingMessage
    #: The channel it came on (a robust channel is a new one after a reconnect): its delivery
    #: tag means something only there.
    channel: object = None

    @property
    def message_id(self) -> str | None:
        return self._message.message_id

    async def ack(self, *, multiple: bool = False) -> None:
        """With ``multiple``, also settles every earlier unsettled delivery on the channel."""
        await _settle(self._message.ack(multiple=multiple))

    async def requeue(self) -> None:
        await _settle(self._message.nack(requeue=True))

    async def dead_letter(self) -> None:
        """Reject without requeue: the queue's dead-letter exchange takes it."""
        await _settle(self._message.reject(requeue=False))


#: A settlement that raises these has nothing left to do: the delivery went with its channel, or
#: it was settled already.
_SETTLED_ERRORS: tuple[type[BaseException], ...] = (*BROKER_ERRORS, RuntimeError, MessageProcessError)


async def _settle(action: Awaitable[None]) -> None:
    with contextlib.suppress(*_SETTLED_ERRORS):
        await action


class Subscription:
    """Consumers on a set of job queues over one channel with a shared prefetch window."""

    def __init__(self, connection: AbstractRobustConnection, topology: Topology) -> None:
        self._connection = connection
        self._topology = topology
        self._channel: AbstractChannel | None = None
        self._consumers: list[tuple[AbstractQueue, str]] = []

    async def start(self, queues: Sequence[str], prefetch: int, callback: Callable[[Incoming], Awaitable[None]]) -> None:
        self._channel = await open_channel(self._connection)
        await self._channel.set_qos(prefetch_count=prefetch)

        async def deliver(message: AbstractIncomingMessage) -> None:
            await callback(Incoming(message.body, dict(message.headers or {}), bool(message.redelivered), message,
                                    message.channel))

        for queue in queues:
            declared = await declare_queue(self._channel, self._topology, queue)
            tag = await declared.consume(deliver)
            self._consumers.append((declared, tag))

    async def cancel(self) -> None:
        """Stop receiving new deliveries; those already received can still be settled."""
        consumers, self._consumers = self._consumers, []
        if self._connection.connected.is_set():  # else the broker dropped them with the connection
            await asyncio.gather(*(while_stopping(queue.cancel(tag)) for queue, tag in consumers))

    async def close(self) -> None:
        if self._channel is not None and not self._channel.is_closed:
            await while_stopping(self._channel.close())


class SubmissionIntake:
    """The timers' consumer of JSON job submissions (``<ns>.submissions``)."""

    def __init__(self, connection: AbstractRobustConnection, topology: Topology) -> None:
        self._connection = connection
        self._topology = topology
        self._channel: AbstractChannel | None = None
        self._consumer: tuple[AbstractQueue, str] | None = None

    async def start(self, prefetch: int, callback: Callable[[Incoming], Awaitable[None]]) -> None:
        self._channel = await open_channel(self._connection)
        await self._channel.set_qos(prefetch_count=prefetch)
        queue = await declare_submissions(self._channel, self._topology)

        async def deliver(message: AbstractIncomingMessage) -> None:
            await callback(Incoming(message.body, dict(message.headers or {}), bool(message.redelivered), message))

        self._consumer = (queue, await queue.consume(deliver))

    async def close(self) -> None:
        """Also after a failed start, so that a retry opens a fresh channel."""
        consumer, self._consumer = self._consumer, None
        channel, self._channel = self._channel, None
        if consumer is not None:
            queue, tag = consumer
            await while_stopping(queue.cancel(tag))
        if channel is not None and not channel.is_closed:
            await while_stopping(channel.close())
