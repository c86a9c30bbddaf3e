"""Exchange and queue names, and their declaration.

Names read well in the RabbitMQ management UI and never collide between roles:
``<ns>.jobs`` (direct exchange) routes a job queue's messages to ``<ns>.q.<queue>``; failed
and poison messages go through ``<ns>.dead`` to ``<ns>.dlq.<queue>``. ``<ns>`` is the
``namespace`` setting (``chronoq`` by default), so several deployments or test runs can share
one broker.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue
from aiormq.exceptions import ChannelAccessRefused, ChannelPreconditionFailed
from pamqp.common import FieldTable

from chronoq.errors import TopologyError

if TYPE_CHECKING:
    from chronoq._runtime.config import Settings

log = logging.getLogger("chronoq.broker")

#: The broker's x-delivery-limit is this many times the workers' own `delivery_limit`.
BROKER_LIMIT_FACTOR = 4


@dataclass(frozen=True)
class Topology:
    namespace: str
    queue_type: str = "quorum"
    delivery_limit: int = 10
    replicas: int = 3

    @classmethod
    def for_settings(cls, settings: Settings) -> Topology:
        """The names and queue arguments a service with these settings declares and uses."""
        return cls(settings.namespace, settings.queue_type, settings.delivery_limit, settings.quorum_replicas)

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

    @property
    def broker_delivery_limit(self) -> int:
        return self.delivery_limit * BROKER_LIMIT_FACTOR

    def dead_queue_name(self, queue: str) -> str:
        return f"{self.namespace}.dlq.{queue}"

    def placement(self) -> FieldTable:
        """Arguments of every queue: its type and, for a quorum queue, its members. RabbitMQ
        places at most one member a node, so a cluster smaller than ``replicas`` (a single node
        too) gets a member on each node; leaders are balanced over the nodes instead of landing
        on the node of the connection that declared the queue."""
        arguments: FieldTable = {"x-queue-type": self.queue_type}
        if self.queue_type == "quorum":
            arguments["x-quorum-initial-group-size"] = self.replicas
            arguments["x-queue-leader-locator"] = "balanced"
        return arguments

    def queue_arguments(self, queue: str) -> FieldTable:
        arguments: FieldTable = {
            **self.placement(),
            # The broker dead-letters a message it could not get processed (rejected, or past
            # the delivery limit) instead of dropping it.
            "x-dead-letter-exchange": self.dead_exchange,
            "x-dead-letter-routing-key": queue,
        }
        if self.queue_type == "quorum":
            # RabbitMQ 3.10 has no limit unless asked: a message that kills every worker would
            # be redelivered forever. Workers enforce `delivery_limit` themselves, on the starts
            # counted in Postgres, and record the death; the broker's count also grows with
            # every hand-back that is not the message's fault (an outage, a shutdown, a group
            # out of time), so its limit is only the backstop, set well above.
            arguments["x-delivery-limit"] = self.broker_delivery_limit
        return arguments


async def declare_exchanges(channel: AbstractChannel, topology: Topology) -> tuple[AbstractExchange, AbstractExchange]:
    jobs = await channel.declare_exchange(topology.jobs_exchange, aio_pika.ExchangeType.DIRECT, durable=True)
    dead = await channel.declare_exchange(topology.dead_exchange, aio_pika.ExchangeType.DIRECT, durable=True)
    return jobs, dead


#: Arguments whose value changed between chronoq versions or with a setting. A queue declared by
#: an earlier version or with other settings keeps working with its old value (RabbitMQ refuses
#: to change a queue's arguments); any other difference, such as the queue type, is refused.
TOLERATED_ARGUMENTS = ("x-delivery-limit", "x-dead-letter-exchange", "x-dead-letter-routing-key")
#: Arguments that only place a quorum queue's members and leader when it is created. An existing
#: queue keeps its members; an operator changes them with ``rabbitmq-queues grow`` / ``shrink``
#: or ``add_member`` / ``delete_member``, which RabbitMQ does not record in these arguments.
PLACEMENT_ARGUMENTS = ("x-quorum-initial-group-size", "x-queue-leader-locator")
# "received '40' but current is '10'", "... but current is the value 'x' of type 'longstr'",
# "... but current is none"
_INEQUIVALENT = re.compile(r"inequivalent arg '([^']+)'.*but current is (none|the value '([^']*)' of type '(\w+)'|'([^']*)')")


async def _declare(channel: AbstractChannel, name: str, arguments: FieldTable) -> AbstractQueue:
    """Declare a queue; where it exists with an older value of a tolerated argument, declare it
    with the value it has (so that every other argument, the type first, is still checked)."""
    wanted = await _arguments_accepted(channel, name, arguments)
    return await channel.declare_queue(name, durable=True, arguments=wanted)


async def _arguments_accepted(channel: AbstractChannel, name: str, arguments: FieldTable) -> FieldTable:
    """The arguments RabbitMQ takes for this queue: ours, with the value the queue already has
    for each tolerated one that differs. Found on throwaway channels of the same connection: a
    refusal closes the channel it came on, and ``channel`` (robust, restoring itself in the
    background when the broker closes it) must only see the declaration that succeeds, which is
    also the one it repeats after a reconnection."""
    connection = (await channel.get_underlay_channel()).connection
    wanted = dict(arguments)
    for _ in (*TOLERATED_ARGUMENTS, *PLACEMENT_ARGUMENTS):
        probe = await connection.channel()
        try:
            await probe.queue_declare(name, durable=True, arguments=wanted)
        except ChannelPreconditionFailed as exc:
            found = _INEQUIVALENT.search(str(exc))
            if found is None or found.group(1) not in (*TOLERATED_ARGUMENTS, *PLACEMENT_ARGUMENTS):
                raise
            argument, kind = found.group(1), found.group(4)
            value = found.group(3) if found.group(3) is not None else found.group(5)
            if argument in PLACEMENT_ARGUMENTS:
                log.info("queue %s was created with another %s; it keeps its members (rabbitmq-queues grow or "
                         "shrink changes them)", name, argument, extra={"action": "queue_placement_differs", "queue": name})
            else:
                log.warning("queue %s exists with another %s; using it as it is (delete it to get the new value)",
                            name, argument, extra={"action": "queue_arguments_differ", "queue": name})
            if value is None:
                wanted.pop(argument, None)
            else:
                wanted[argument] = int(value) if kind != "longstr" and value.isdigit() else value
        else:
            await probe.close()
            return wanted
    return wanted


async def declare_queue(channel: AbstractChannel, topology: Topology, queue: str) -> AbstractQueue:
    """Declare a job queue and its dead-letter queue, bound to their exchanges. Idempotent."""
    jobs, dead = await declare_exchanges(channel, topology)
    try:
        dlq = await _declare(channel, topology.dead_queue_name(queue), topology.placement())
        await dlq.bind(dead, routing_key=queue)
        declared = await _declare(channel, topology.queue_name(queue), topology.queue_arguments(queue))
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
    arguments = topology.placement()
    await _declare(channel, topology.rejected_submissions_queue, arguments)
    # A submission the timers keep handing back (one that breaks the timer that reads it) ends
    # in the rejected queue through the default exchange instead of looping forever.
    intake = {**arguments, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": topology.rejected_submissions_queue}
    if topology.queue_type == "quorum":
        intake["x-delivery-limit"] = topology.broker_delivery_limit
    queue = await _declare(channel, topology.submissions_queue, intake)
    await queue.bind(exchange)
    return queue
