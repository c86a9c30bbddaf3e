"""Publishing with publisher confirms, many messages in flight.

A message counts as published only when the broker confirmed it: a nack, a ``basic.return``
(the message was unroutable; RabbitMQ still confirms those positively, so ``on_return_raises``
is essential) or a broken channel all count as failures, and the caller leaves that row due.

A message that can never be published as it is (a name the client library refuses, headers
larger than the connection's frame) fails alone as :class:`Unpublishable`, before anything is
sent: it must not break the channel or the connection that every other message uses.
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
from pamqp import encode
from pamqp.commands import Basic

from chronoq._broker.connection import BROKER_ERRORS, open_channel, while_stopping
from chronoq._broker.topology import Topology, declare_exchanges, declare_queue
from chronoq.errors import ChronoqError, TopologyError
from chronoq.schemas.message import APP_ID, CONTENT_TYPE

#: RabbitMQ's default frame size, used until a connection says what it negotiated.
DEFAULT_FRAME_MAX = 131_072
#: Room in a content header frame for everything but the headers table: frame and class
#: header, body size, flags and the other properties (message id, content type, app id ...).
PROPERTIES_ROOM = 1024
#: Header a copy carries instead of original headers that did not fit: how many were left out.
DROPPED_HEADERS = "x-chronoq-headers-dropped"


#: What aio-pika and pamqp raise for a value they cannot put in a frame, before sending it.
CLIENT_REFUSALS: tuple[type[BaseException], ...] = (ValueError, TypeError, UnicodeError, OverflowError)


class Unpublishable(ChronoqError):
    """This message can never be published as it is; publishing it again would fail again."""


def headers_budget(frame_max: int) -> int:
    """Bytes an encoded headers table may take in a connection with this frame size."""
    return max(frame_max - PROPERTIES_ROOM, 0)


def _encoded_size_at_most(headers: dict[str, Any], limit: int) -> bool:
    """Whether the encoded table fits in ``limit`` bytes, without encoding it when a bound on
    its size already says so (every header of a job message: short strings and integers)."""
    bound = 4
    for key, value in headers.items():
        bound += 1 + len(key) * 4 + 1  # a key is a short string; UTF-8 takes at most 4 bytes a character
        if isinstance(value, str):
            bound += 4 + len(value) * 4
        elif isinstance(value, (bool, int, float)) or value is None:
            bound += 9
        else:
            bound = limit + 1  # a nested table, a list, bytes: measure it
            break
        if bound > limit:
            break
    if bound <= limit:
        return True
    try:
        return len(encode.field_table(headers)) <= limit
    except Exception:  # what pamqp cannot encode does not fit anywhere
        return False


def fitted_headers(original: dict[str, Any], own: dict[str, Any], frame_max: int) -> dict[str, Any]:
    """Headers for a copy of a message (a rejected submission, a dead letter): the original ones
    with ``own`` added, or, where together they would not fit in one frame, ``own`` alone with
    the number of originals left out. Keeps a copy from breaking the connection it is sent on
    (RabbitMQ closes a connection over a frame larger than it negotiated)."""
    merged = {**original, **own}
    budget = headers_budget(frame_max)
    if _encoded_size_at_most(merged, budget):
        return merged
    fitted = {**own, DROPPED_HEADERS: len(original)}
    if _encoded_size_at_most(fitted, budget):
        return fitted
    # Our own headers are bounded (ids, a reason, an error cut short): only a tiny frame is left.
    return {DROPPED_HEADERS: len(original)}


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
        """Declare the queues not yet declared, one by one. A queue that cannot be declared fails
        alone: it must not hold up the messages of every other queue. RabbitMQ's refusal (declared
        elsewhere with other arguments, access refused) is a TopologyError, which an operator can
        resolve; a name the client library refuses before sending is Unpublishable."""
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
            except CLIENT_REFUSALS as exc:
                # Raised by aio-pika or pamqp while building the frame: nothing was sent.
                refused[queue] = Unpublishable(f"queue name refused by the AMQP client: {type(exc).__name__}")
        return refused

    def frame_max(self) -> int:
        """The frame size of the connection, as negotiated (the default before it connected)."""
        transport = getattr(self._connection, "transport", None)
        tune = getattr(getattr(transport, "connection", None), "connection_tune", None)
        frame_max = getattr(tune, "frame_max", None)
        return frame_max if isinstance(frame_max, int) and frame_max > 0 else DEFAULT_FRAME_MAX

    def _unpublishable(self, message: Outgoing) -> Unpublishable | None:
        """Why this message cannot be sent as it is, found before anything is sent."""
        if not _encoded_size_at_most(message.headers, headers_budget(self.frame_max())):
            return Unpublishable("message headers larger than the broker's frame size")
        return None

    async def publish(self, messages: Sequence[Outgoing], *, dead: bool = False) -> list[BaseException | None]:
        """Publish all at once and wait for every confirm. One entry per message: None if the
        broker confirmed it, else the failure: :class:`Unpublishable` for a message that will
        never go (the caller sets it aside), anything else for one the broker refused or could
        not take now. Raises only if the broker is unavailable before anything was sent."""
        refused = await self._declare_each(sorted({m.routing_key for m in messages}))
        unfit = {id(m): problem for m in messages if (problem := self._unpublishable(m)) is not None}
        sendable = [m for m in messages if m.routing_key not in refused and id(m) not in unfit]
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
        outcomes = [
            refused[m.routing_key] if m.routing_key in refused else unfit[id(m)] if id(m) in unfit else next(sent)
            for m in messages
        ]
        failures: list[BaseException | None] = []
        for message, outcome in zip(messages, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                if isinstance(outcome, asyncio.CancelledError):
                    outcome = _unconfirmed(outcome)
                if isinstance(outcome, CLIENT_REFUSALS):
                    # The client library refused to encode it (a value pamqp cannot write),
                    # before sending: the same message would be refused again.
                    outcome = Unpublishable(f"the client library refused the message: {type(outcome).__name__}")
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
        problem = self._unpublishable(message)
        if problem is not None:
            return problem
        try:
            await underlay.basic_publish(
                message.body, exchange="", routing_key=queue_name,
                properties=_properties(message, datetime.now(UTC)), mandatory=True,
            )
        except asyncio.CancelledError as exc:
            return _unconfirmed(exc)
        except Exception as exc:  # reported to the caller like publish() does
            return exc
        return None

    async def close(self) -> None:
        if self._channel is not None and not self._channel.is_closed:
            await while_stopping(self._channel.close())


def _unconfirmed(cancelled: asyncio.CancelledError) -> BaseException:
    """A publish whose confirm was cancelled: aiormq cancels the confirms it still awaits when
    the connection closes (its node died or hung), which leaves the message unconfirmed like any
    publish on a broken connection. Re-raised only if this task itself is being cancelled."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise cancelled
    return aio_pika.exceptions.AMQPConnectionError("the connection closed before the broker confirmed")
