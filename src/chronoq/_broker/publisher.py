"""Publishing with publisher confirms, many messages in flight.

A message counts as published only when the broker confirmed it: a nack, a ``basic.return``
(the message was unroutable; RabbitMQ still confirms those positively, so ``on_return_raises``
is essential) or a broken channel all count as failures, and the caller leaves that row due.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractRobustConnection

from pamqp.commands import Basic

from chronoq._broker.connection import BROKER_ERRORS, open_channel, while_stopping
from chronoq._broker.topology import Topology, declare_exchanges, declare_queue
from chronoq.errors import TopologyError
from chronoq.schemas.message import APP_ID, CONTENT_TYPE


@dataclass(frozen=True)
class Outgoing:
    routing_key: str  # the job queue name
    body: bytes
    message_id: str
    headers: dict[str, Any] = field(default_factory=dict)
    expiration: float | None = None


def _properties(out: Outgoing, now: datetime) -> Basic.Properties:
    return Basic.Properties(
        content_type=CONTENT_TYPE,
        delivery_mode=2,  # persistent
        message_id=out.message_id,
        timestamp=now,
        app_id=APP_ID,
        headers=out.headers,
    )


class ConfirmedPublisher:
    """Owns one confirm-mode channel and declares each job queue the first time it is used."""

    def __init__(self, connection: AbstractRobustConnection, topology: Topology) -> None:
        self._connection = connection
        self._topology = topology
        self._channel: AbstractChannel | None = None
        self._jobs: AbstractExchange | None = None
        self._dead: AbstractExchange | None = None
        self._declared: set[str] = set()
        # Publishes may run concurrently (a timer batch, dead-letter copies, rejections): only
        # one of them may open and set up the channel.
        self._opening = asyncio.Lock()

    async def _ready(self) -> tuple[AbstractChannel, AbstractExchange, AbstractExchange]:
        async with self._opening:
            if self._channel is None or self._channel.is_closed or self._jobs is None:
                self._jobs = self._dead = None
                self._channel = await open_channel(self._connection, publisher_confirms=True, on_return_raises=True)
                self._jobs, self._dead = await declare_exchanges(self._channel, self._topology)
                self._declared.clear()
        assert self._jobs is not None and self._dead is not None
        return self._channel, self._jobs, self._dead

    async def ensure_queues(self, queues: Sequence[str]) -> None:
        channel, _, _ = await self._ready()
        for queue in queues:
            if queue not in self._declared:
                await declare_queue(channel, self._topology, queue)
                self._declared.add(queue)

    async def _declare_each(self, queues: Sequence[str]) -> dict[str, BaseException]:
        """Declare the queues not yet declared, one by one. A queue RabbitMQ refuses (declared
        elsewhere with other arguments, access refused) fails alone: it must not hold up the
        messages of every other queue."""
        refused: dict[str, BaseException] = {}
        for queue in queues:
            if queue in self._declared:
                continue
            try:
                await self.ensure_queues([queue])
            except TopologyError as exc:
                refused[queue] = exc
                # The broker closed the channel over the refusal. A robust channel would reopen
                # itself in the background and race the fresh one opened next: close it for good.
                closed, self._channel = self._channel, None
                if closed is not None:
                    with contextlib.suppress(*BROKER_ERRORS):
                        await closed.close()
        return refused

    async def publish(self, messages: Sequence[Outgoing], *, dead: bool = False) -> list[BaseException | None]:
        """Publish all at once and wait for every confirm. One entry per message: None if the
        broker confirmed it, else the failure."""
        refused = await self._declare_each(sorted({m.routing_key for m in messages}))
        sendable = [m for m in messages if m.routing_key not in refused]
        channel, _, _ = await self._ready()
        exchange = self._topology.dead_exchange if dead else self._topology.jobs_exchange
        # Straight to the underlying channel: aio-pika's Message and Exchange wrappers cost more
        # CPU per message than the publish itself, at thousands per second.
        underlay = await channel.get_underlay_channel()
        now = datetime.now(UTC)
        sent = iter(await asyncio.gather(
            *(
                underlay.basic_publish(
                    m.body, exchange=exchange, routing_key=m.routing_key, properties=_properties(m, now), mandatory=True
                )
                for m in sendable
            ),
            return_exceptions=True,
        ))
        outcomes = [refused[m.routing_key] if m.routing_key in refused else next(sent) for m in messages]
        failures: list[BaseException | None] = []
        for message, outcome in zip(messages, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                if isinstance(outcome, asyncio.CancelledError):
                    raise outcome
                if isinstance(outcome, aio_pika.exceptions.PublishError):
                    # Returned as unroutable: the queue was deleted behind our back. Declare it
                    # again before the next publish instead of trusting the cache.
                    self._declared.discard(message.routing_key)
                failures.append(outcome)
            elif isinstance(outcome, Basic.Ack):
                failures.append(None)
            else:
                failures.append(RuntimeError(f"broker did not confirm: {type(outcome).__name__}"))
        return failures

    async def publish_to_queue(self, queue_name: str, message: Outgoing) -> BaseException | None:
        """Publish one message straight to a named queue (default exchange), with a confirm."""
        channel, _, _ = await self._ready()
        underlay = await channel.get_underlay_channel()
        try:
            await underlay.basic_publish(
                message.body, exchange="", routing_key=queue_name,
                properties=_properties(message, datetime.now(UTC)), mandatory=True,
            )
        except Exception as exc:  # noqa: BLE001 - reported to the caller like publish() does
            return exc
        return None

    async def close(self) -> None:
        if self._channel is not None and not self._channel.is_closed:
            await while_stopping(self._channel.close())
