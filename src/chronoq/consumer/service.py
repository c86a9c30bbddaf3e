"""The worker service: one channel consumes the job queues into one inbox, and lanes run its
deliveries in groups.

A lane is one database connection and one loop: it takes the next deliveries from the inbox (up
to ``batch_size``, or as many as fit in a short time of handler time), runs them as one group
(one transaction, one commit), and settles them with one ``multiple`` ack once every earlier
delivery is settled too (consumer/acks.py). ``concurrency`` lanes run at once. The prefetch lets
every lane hold a full group with one more buffered; nothing beyond that waits in this process's
memory where another worker could be running it.

Shutdown has two stages: stop receiving, let the groups in progress finish within the grace
period, hand back what was buffered; then cancel what is left (its transaction rolls back and
the broker redelivers).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
from collections import Counter
from collections.abc import Sequence

import asyncpg

from chronoq._broker.connection import BROKER_ERRORS, BrokerConnection
from chronoq._broker.connection import connect_for as connect_broker
from chronoq._broker.consumer import Incoming, Subscription
from chronoq._broker.publisher import ConfirmedPublisher
from chronoq._broker.topology import Topology
from chronoq._runtime.config import Settings
from chronoq._runtime.hooks import Hooks
from chronoq._runtime.service import start_or_close
from chronoq._runtime.side_tasks import SideTasks
from chronoq._store.connection import CONNECTION_ERRORS, create_pool
from chronoq.consumer.acks import ChannelAcks
from chronoq.consumer.delivery import Deliveries
from chronoq.consumer.group import GroupExecutor
from chronoq.consumer.handler_times import GROUP_TIME, HandlerTimes
from chronoq.consumer.registry import Worker
from chronoq.consumer.settle import Settler
from chronoq.consumer.turns import Turns

log = logging.getLogger("chronoq.worker")


class Lane:
    """One loop: it takes the next group from the worker's inbox, runs it, and settles it."""

    def __init__(self, service: WorkerService, number: int) -> None:
        self.service = service
        self.number = number
        self.task: asyncio.Task[None] | None = None
        self.busy = False

    def start(self) -> None:
        self.task = self.service.side_tasks.start(f"lane-{self.number}", self._loop())

    async def _loop(self) -> None:
        s = self.service
        while True:
            # One lane at a time picks the next group, so that deliveries arriving while a
            # group runs gather in one group instead of one held back in each waiting lane.
            async with s.picking:
                first = await s.inbox.get()
                try:
                    await s.turns.wait(functools.partial(s.group_ready, first))
                except asyncio.CancelledError:  # drain() cancels a lane that waits: hand it back
                    await asyncio.shield(s.acks.settle(first, "requeue"))
                    raise
                if s.draining:  # no new group once shutdown began: drain() hands the inbox back
                    s.inbox.put_nowait(first)
                    return
                group = s.take_group(first)
                self.busy = True
                s.turns.started()
                # Registered before the next await, so that drain() waits for it.
                running = s.start_group(group)
            try:
                # Shielded: if the broker closes the channel under it, a group being committed
                # is still committed; its ack then fails harmlessly and redeliveries are
                # deduplicated. Only drain() cancels a group, by cancelling this loop.
                await asyncio.shield(running)
            except asyncio.CancelledError:
                raise
            except Exception:  # a lane must keep consuming whatever one group did
                log.exception("lane failed to settle a group", extra={"action": "lane_error", "lane": self.number})
            finally:
                self.busy = False
                s.turns.ended()
                await asyncio.shield(s.acks.release(group))  # nothing of it is left unsettled


class WorkerService:
    def __init__(
        self,
        worker: Worker,
        settings: Settings,
        *,
        queues: Sequence[str] | None = None,
        concurrency: int | None = None,
        name: str | None = None,
        hooks: Hooks | None = None,
    ) -> None:
        self.hooks = hooks or Hooks()
        self.worker = worker
        self.settings = settings
        self.queues = worker.select(queues)
        self.concurrency = concurrency or settings.concurrency
        self.batch_size = settings.batch_size
        self.turns = Turns()
        self.times = HandlerTimes()
        # One channel feeds one inbox; the lanes take their groups from it (Lane._loop).
        self.inbox: asyncio.Queue[Incoming] = asyncio.Queue()
        self.acks = ChannelAcks()
        self.picking = asyncio.Lock()
        self._subscription: Subscription | None = None
        self.name = name or f"worker@{socket.gethostname()}:{os.getpid()}"
        # The lanes: one that ends with an exception stops the worker (_runtime/side_tasks.py).
        self.side_tasks = SideTasks(self.name, log, on_failure=self.stop)
        self.topology = Topology.for_settings(settings)
        self._pool: asyncpg.Pool | None = None
        self._broker: BrokerConnection | None = None
        self._publisher: ConfirmedPublisher | None = None
        self._settler: Settler | None = None
        self._lanes: list[Lane] = []
        self._groups: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self.draining = False
        self.ready = asyncio.Event()
        self.outcomes: Counter[str] = Counter()  # deliveries settled, by outcome (consumer/outcome.py)

    async def start(self) -> None:
        self._pool = await create_pool(
            self.settings.database_url, min_size=1, max_size=self.concurrency + 1, application_name=self.name,
            planning="keyed", own_sessions=True,  # reset on release only after a handler used it (job_connection.py)
        )
        self._broker = await connect_broker(self.settings, name=self.name)
        self._publisher = ConfirmedPublisher(self._broker, self.topology)
        executor = GroupExecutor(self._publisher, self.name, redispatch_after=self.settings.redispatch_after,
                                 delivery_limit=self.settings.delivery_limit)
        self._settler = Settler(self._pool, executor, Deliveries(self.worker, self.name), self.acks, self.times,
                                self.hooks, self.outcomes)
        self._lanes = [Lane(self, n) for n in range(self.concurrency)]
        for lane in self._lanes:
            lane.start()
        self._subscription = Subscription(self._broker, self.topology)
        # Enough for every lane to run a full batch with one more buffered: nothing beyond that
        # waits in this process's memory where another worker could be running it. (Per
        # consumer, so per queue consumed: RabbitMQ's prefetch without `global`.) A broker that
        # goes away meanwhile makes the start unavailable (run(): start_or_close).
        await self._subscription.start(self.queues, self.batch_size * (self.concurrency + 1), self._receive)
        self.ready.set()
        log.info(
            "worker started",
            extra={"action": "worker_started", "worker": self.name, "queues": self.queues,
                   "concurrency": self.concurrency, "batch_size": self.batch_size},
        )

    async def _receive(self, message: Incoming) -> None:
        self.acks.received(message)
        self.inbox.put_nowait(message)
        self.turns.wake()  # the lane waiting for its turn judges again (group_ready)

    def group_ready(self, first: Incoming) -> bool:
        """Whether a group starting with ``first`` is as large as it should be: a full batch is
        there, or enough to fill the group's handler time (consumer/handler_times.py), judged
        by ``first``'s queue."""
        # The delivery the picking lane holds counts: it left the inbox.
        waiting = self.inbox.qsize() + 1
        return waiting >= self.batch_size or self.times.estimate(first) * waiting >= GROUP_TIME

    def take_group(self, first: Incoming) -> list[Incoming]:
        """``first`` and what follows it in the inbox, up to a batch or the group's time."""
        group = [first]
        planned = self.times.estimate(first)
        while len(group) < self.batch_size and planned < GROUP_TIME and not self.inbox.empty():
            message = self.inbox.get_nowait()
            group.append(message)
            planned += self.times.estimate(message)
        return group

    def start_group(self, group: list[Incoming]) -> asyncio.Task[None]:
        assert self._settler is not None
        task = asyncio.create_task(self._settler.settle(group))
        self._groups.add(task)
        task.add_done_callback(self._groups.discard)
        return task

    def stop(self) -> None:
        self._stopping.set()

    async def drain(self) -> None:
        if self._subscription is not None:
            await self._subscription.cancel()
        self.draining = True
        for lane in self._lanes:  # idle lanes wait for a delivery that will not come
            if lane.task is not None and not lane.busy:
                lane.task.cancel()
        # Busy lanes finish their group, then stop (see Lane._loop). A group that began between
        # a lane's last check and the flag is in _groups too: wait for whatever is there.
        deadline = asyncio.get_running_loop().time() + self.settings.shutdown_grace.total_seconds()
        still: set[asyncio.Task[None]] = set(self._groups)
        while still and (remaining := deadline - asyncio.get_running_loop().time()) > 0:
            await asyncio.wait(still, timeout=remaining)
            still = set(self._groups)
        for lane in self._lanes:
            if lane.task is not None:
                lane.task.cancel()
        for task in still:
            task.cancel()
        if still:
            await asyncio.wait(still, timeout=5)
            log.warning("cancelled unfinished jobs", extra={"action": "worker_cancelled_jobs", "count": len(still)})
        while not self.inbox.empty():
            await self.acks.settle(self.inbox.get_nowait(), "requeue")

    async def close(self) -> None:
        await self.side_tasks.stop()
        if self._subscription is not None:
            await self._subscription.close()
        if self._publisher is not None:
            await self._publisher.close()
        if self._broker is not None:
            await self._broker.close()
        if self._pool is not None:
            await self._pool.close()

    async def run(self) -> None:
        await start_or_close(self.start, self.close, log, unavailable=(*CONNECTION_ERRORS, *BROKER_ERRORS))
        try:
            await self._stopping.wait()
            await self.drain()
        finally:
            await self.close()
            log.info("worker stopped", extra={"action": "worker_stopped", "worker": self.name,
                                              "processed": sum(self.outcomes.values())})
        self.side_tasks.raise_failure()
