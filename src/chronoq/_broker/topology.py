"""Exchange and queue names, and their declaration.

Names read well in the RabbitMQ management UI and never collide between roles:
``<ns>.jobs`` (direct exchange) routes a job queue's messages to ``<ns>.q.<queue>``; failed
and poison messages go through ``<ns>.dead`` to ``<ns>.dlq.<queue>``. ``<ns>`` is the
``namespace`` setting (``chronoq`` by default), so several deployments or test runs can share
one broker.
"""

from __future__ import annotations

from dataclasses import dataclass

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue
from aiormq.exceptions import ChannelAccessRefused, ChannelPreconditionFailed

from chronoq.errors import TopologyError


@dataclass(frozen=True)
class Topology:
    namespace: str
    queue_type: str = "quorum"
    delivery_limit: int = 10

    @property
    def jobs_exchange(self) -> str:
        return f"{self.namespace}.jobs"

    @property
    def dead_exchange(self) -> str:
        return f"{self.namespace}.dead"

    @property
    def submit_exchange(self) -> str:
        """Where services in any language publish JSON job submissions (fanout)."""
        return f"{self.namespace}.submit"

    @property
    def submissions_queue(self) -> str:
        return f"{self.namespace}.submissions"

    @property
    def rejected_submissions_queue(self) -> str:
        return f"{self.namespace}.submissions.rejected"

    def queue_name(self, queue: str) -> str:
        return f"{self.namespace}.q.{queue}"

    def dead_queue_name(self, queue: str) -> str:
        return f"{self.namespace}.dlq.{queue}"

    def queue_arguments(self, queue: str) -> dict[str, object]:
        arguments: dict[str, object] = {
            "x-queue-type": self.queue_type,
            # The broker dead-letters a message it could not get processed (rejected, or past
            # the delivery limit) instead of dropping it.
            "x-dead-letter-exchange": self.dead_exchange,
            "x-dead-letter-routing-key": queue,
        }
        if self.queue_type == "quorum":
            # RabbitMQ 3.10 has no limit unless asked: a message that kills every worker would
            # be redelivered forever.
            arguments["x-delivery-limit"] = self.delivery_limit
        return arguments


async def declare_exchanges(channel: AbstractChannel, topology: Topology) -> tuple[AbstractExchange, AbstractExchange]:
    jobs = await channel.declare_exchange(topology.jobs_exchange, aio_pika.ExchangeType.DIRECT, durable=True)
    dead = await channel.declare_exchange(topology.dead_exchange, aio_pika.ExchangeType.DIRECT, durable=True)
    return jobs, dead


async def declare_queue(channel: AbstractChannel, topology: Topology, queue: str) -> AbstractQueue:
    """Declare a job queue and its dead-letter queue, bound to their exchanges. Idempotent."""
    jobs, dead = await declare_exchanges(channel, topology)
    try:
        dlq = await channel.declare_queue(
            topology.dead_queue_name(queue), durable=True, arguments={"x-queue-type": topology.queue_type}
        )
        await dlq.bind(dead, routing_key=queue)
        declared = await channel.declare_queue(
            topology.queue_name(queue), durable=True, arguments=topology.queue_arguments(queue)
        )
    except ChannelPreconditionFailed as exc:
        raise TopologyError(
            f"RabbitMQ queue for {queue!r} exists with other arguments ({exc}); "
            "delete it or use the queue type it was created with"
        ) from exc
    except ChannelAccessRefused as exc:
        raise TopologyError(f"RabbitMQ refused access to the queues of {queue!r}: {exc}") from exc
    await declared.bind(jobs, routing_key=queue)
    return declared


async def declare_submissions(channel: AbstractChannel, topology: Topology) -> AbstractQueue:
    """The submission exchange, the queue timers ingest from, and the queue for rejected ones."""
    exchange = await channel.declare_exchange(topology.submit_exchange, aio_pika.ExchangeType.FANOUT, durable=True)
    arguments = {"x-queue-type": topology.queue_type}
    await channel.declare_queue(topology.rejected_submissions_queue, durable=True, arguments=arguments)
    queue = await channel.declare_queue(topology.submissions_queue, durable=True, arguments=arguments)
    await queue.bind(exchange)
    return queue
