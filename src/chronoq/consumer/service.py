"""The worker service: consume job queues with prefetch, run deliveries concurrently, ack
after the outcome is committed, stop in two stages."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections import Counter
from collections.abc import Sequence

import asyncpg

from chronoq._broker.connection import BROKER_ERRORS
from chronoq._broker.connection import connect as connect_broker
from chronoq._broker.consumer import Incoming, Subscription
from chronoq._broker.publisher import ConfirmedPublisher
from chronoq._broker.topology import Topology
from chronoq._runtime.config import Settings
from chronoq._runtime.failpoints import failpoint
from chronoq._store.connection import CONNECTION_ERRORS, create_pool
from chronoq.consumer.execute import Delivery, Executor, Outcome
from chronoq.consumer.registry import Worker

log = logging.getLogger("chronoq.worker")

#: Pause before a delivery that hit an unavailable database is handed back to the broker, so
#: an outage does not turn into a hot redelivery loop.
UNAVAILABLE_PAUSE = 1.0
#: Errors that mean "this message can never be processed", not "try again later".
DETERMINISTIC_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.DataError,
    asyncpg.IntegrityConstraintViolationError,
    ValueError,
    OverflowError,
    TypeError,
)


class WorkerService:
    def __init__(
        self,
        worker: Worker,
        settings: Settings,
        *,
        queues: Sequence[str] | None = None,
        concurrency: int | None = None,
        name: str | None = None,
    ) -> None:
        self.worker = worker
        self.settings = settings
        self.queues = worker.select(queues)
        self.concurrency = concurrency or settings.concurrency
        self.name = name or f"worker@{socket.gethostname()}:{os.getpid()}"
        self.topology = Topology(settings.namespace, settings.queue_type, settings.delivery_limit)
        self._pool: asyncpg.Pool | None = None
        self._broker = None
        self._subscription: Subscription | None = None
        self._publisher: ConfirmedPublisher | None = None
        self._executor: Executor | None = None
        self._in_flight: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self.ready = asyncio.Event()
        self.outcomes: Counter[str] = Counter()  # deliveries settled, by outcome action

    async def start(self) -> None:
        self._pool = await create_pool(
            self.settings.database_url, min_size=1, max_size=self.concurrency + 1, application_name=self.name
        )
        self._broker = await connect_broker(self.settings.amqp_url, name=self.name)
        self._publisher = ConfirmedPublisher(self._broker, self.topology)
        self._executor = Executor(
            self.worker, self._pool, self._publisher, self.name,
            redispatch_after=self.settings.redispatch_after, delivery_limit=self.settings.delivery_limit,
        )
        self._subscription = Subscription(self._broker, self.topology)
        # Prefetch bounds the unacked deliveries to what can run at once: nothing waits in
        # this process's memory that another worker could be running.
        await self._subscription.start(self.queues, self.concurrency, self._on_message)
        self.ready.set()
        log.info(
            "worker started",
            extra={"action": "worker_started", "worker": self.name, "queues": self.queues, "concurrency": self.concurrency},
        )

    async def _on_message(self, message: Incoming) -> None:
        # Each delivery runs in a task of its own that only drain() may cancel: if the broker
        # closes the channel (and aio-pika cancels this callback), an outcome being committed
        # is still committed; its ack then fails harmlessly and the redelivery is deduplicated.
        task = asyncio.create_task(self._process(message))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)
        await asyncio.shield(task)

    async def _process(self, message: Incoming) -> None:
        assert self._executor is not None
        delivery = Delivery(message.body, message.headers, message.redelivered)
        settled = False
        try:
            outcome = await self._executor.execute(delivery)
            failpoint("consumer.after_commit")
            if outcome.action == "rejected":
                # Unparseable, or for a queue without handler: the broker moves it to the
                # dead-letter queue (x-dead-letter-exchange), where an operator can read it.
                await message.dead_letter()
            else:
                await message.ack()
            settled = True
            self.outcomes[outcome.action] += 1
            log.debug("delivery settled", extra={"action": "delivery_settled", "outcome": outcome.action})
        except DETERMINISTIC_ERRORS as exc:
            # The same message would fail the same way again: requeueing it would loop.
            log.error("delivery rejected: it cannot be processed",
                      extra={"action": "delivery_rejected", "error": type(exc).__name__}, exc_info=True)
            await message.dead_letter()
            settled = True
            self.outcomes["rejected"] += 1
        except Exception as exc:  # a worker must outlive anything one delivery can throw
            # The outcome was not recorded (the database or broker is unavailable): give the
            # delivery back for another try, after a pause so an outage is not a hot loop.
            expected = isinstance(exc, (*CONNECTION_ERRORS, *BROKER_ERRORS, asyncpg.PostgresError))
            log.log(
                logging.WARNING if expected else logging.ERROR,
                "delivery not processed; returned to the queue",
                extra={"action": "delivery_requeued", "error": type(exc).__name__},
                exc_info=not expected,
            )
            await asyncio.sleep(UNAVAILABLE_PAUSE)
            await message.requeue()
            settled = True
        finally:
            if not settled:  # cancelled by drain(): hand the delivery back now
                await asyncio.shield(message.requeue())

    def stop(self) -> None:
        self._stopping.set()

    async def drain(self) -> None:
        """Stage one: stop taking deliveries, let in-flight ones finish within the grace period.
        Stage two: cancel what is left; its transactions roll back and the broker redelivers."""
        if self._subscription is not None:
            await self._subscription.cancel()
        pending = set(self._in_flight)
        if pending:
            _, still = await asyncio.wait(pending, timeout=self.settings.shutdown_grace.total_seconds())
            for task in still:
                task.cancel()
            if still:
                await asyncio.wait(still, timeout=5)
                log.warning("cancelled unfinished jobs", extra={"action": "worker_cancelled_jobs", "count": len(still)})

    async def close(self) -> None:
        if self._subscription is not None:
            await self._subscription.close()
        if self._publisher is not None:
            await self._publisher.close()
        if self._broker is not None:
            await self._broker.close()
        if self._pool is not None:
            await self._pool.close()

    async def run(self) -> None:
        await self.start()
        try:
            await self._stopping.wait()
            await self.drain()
        finally:
            await self.close()
            log.info("worker stopped", extra={"action": "worker_stopped", "worker": self.name,
                                              "processed": sum(self.outcomes.values())})


__all__ = ["Outcome", "WorkerService"]
