"""The timer: turns the Postgres timing wheel into confirmed RabbitMQ messages.

It is four parts sharing a process, each in a module of its own, which this one opens, starts and
closes together: the dispatch loop (``dispatch.py``, each batch in ``batch.py``), the NOTIFY
listener that wakes it (``wakeups.py``), the submissions intake (``intake.py``) and the pruner
(``pruning.py``). The pruner and the intake's retries are side tasks
(``_runtime/side_tasks.py``): one that fails stops the timer loudly.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket

import asyncpg

from chronoq._broker.connection import BROKER_ERRORS, BrokerConnection
from chronoq._broker.connection import connect_for as connect_broker
from chronoq._broker.consumer import SubmissionIntake
from chronoq._broker.publisher import ConfirmedPublisher
from chronoq._broker.topology import Topology
from chronoq._runtime.config import Settings
from chronoq._runtime.hooks import Hooks
from chronoq._runtime.service import start_or_close
from chronoq._runtime.side_tasks import SideTasks
from chronoq._store import maintenance
from chronoq._store.connection import CONNECTION_ERRORS, create_pool
from chronoq.timer.batch import Batches
from chronoq.timer.dispatch import DispatchLoop
from chronoq.timer.intake import Ingest, Intake
from chronoq.timer.pruning import Pruner
from chronoq.timer.wakeups import Wakeups

log = logging.getLogger("chronoq.timer")


class Timer:
    def __init__(self, settings: Settings, *, name: str | None = None, hooks: Hooks | None = None) -> None:
        self.settings = settings
        self.hooks = hooks or Hooks()
        self.name = name or f"timer@{socket.gethostname()}:{os.getpid()}"
        self.topology = Topology.for_settings(settings)
        self.ready = asyncio.Event()  # set once connected and listening
        self.side_tasks = SideTasks(self.name, log, on_failure=self.stop)
        self._stopping = asyncio.Event()
        self._wakeups = Wakeups(settings.database_url, f"{self.name}-listen",
                                settings.timer_max_idle.total_seconds(), self.hooks, self._stopping)
        self._pool: asyncpg.Pool | None = None
        self._dispatch_pool: asyncpg.Pool | None = None
        self._broker: BrokerConnection | None = None
        self._publisher: ConfirmedPublisher | None = None
        self._intake: Intake | None = None
        self._batches: Batches | None = None
        self._pruner: Pruner | None = None

    async def start(self) -> None:
        # Only the timer's own statements run on its sessions: no reset on release (OwnSession).
        self._pool = await create_pool(self.settings.database_url, min_size=1, max_size=3, application_name=self.name,
                                       own_sessions=True)
        # The batches commit without waiting for the WAL flush (about half a millisecond here,
        # on every job's way to its worker). A commit lost in a Postgres crash undoes the batch
        # as a timer crash before its commit does: its rows are due again, published again, and
        # the workers' dedup absorbs the copies. Nothing committed later can survive without it:
        # WAL is flushed in order, and a worker's outcome for one of these jobs comes after it
        # (the worker's lock waits for this commit).
        # The same holds across a failover to a synchronous standby. These commits do not wait
        # for the standby either, so the promoted one may lack the last batches: their rows are
        # due again there, as after a crash. But WAL reaches the standby in order, and the
        # worker's outcome (a synchronous commit, which returns only once the standby holds
        # the WAL up to it) comes after this commit, so an outcome the worker saw committed
        # never survives without the dispatch it follows.
        self._dispatch_pool = await create_pool(
            self.settings.database_url, min_size=1, max_size=1, application_name=f"{self.name}-dispatch",
            synchronous_commit=False, planning="keyed", own_sessions=True,
        )
        async with self._pool.acquire() as conn:
            if not await maintenance.autovacuum_enabled(conn):
                # Every dispatch and outcome leaves a dead row in the wheel; without vacuum they
                # pile up in front of the due_at index and every claim slows down.
                log.warning("autovacuum is off on this server: vacuum chronoq.wheel regularly",
                            extra={"action": "autovacuum_off"})
        self._broker = await connect_broker(self.settings, name=self.name)
        self._publisher = ConfirmedPublisher(self._broker, self.topology)
        self._batches = Batches(self._dispatch_pool, self._publisher, self.settings, self.hooks, self.name)
        self._pruner = Pruner(self._pool, self.settings.retention, self._stopping)
        self._intake = Intake(SubmissionIntake(self._broker, self.topology),
                              Ingest(self._pool, self._publisher, self.topology), self._stopping, self.name)
        if not await self._intake.start():
            self.side_tasks.start("intake", self._intake.retry())
        await self._wakeups.listen()

    async def close(self) -> None:
        await self.side_tasks.stop()
        if self._intake is not None:
            await self._intake.close()
            self._intake = None
        await self._wakeups.close()
        if self._publisher is not None:
            await self._publisher.close()
        if self._broker is not None:
            await self._broker.close()
            self._broker = None
        for pool in (self._dispatch_pool, self._pool):
            if pool is not None:
                await pool.close()
        self._dispatch_pool = self._pool = None

    def stop(self) -> None:
        self._stopping.set()
        self._wakeups.interrupt()

    async def run_once(self) -> int:
        """One dispatch batch (batch.py). Returns the rows claimed."""
        assert self._batches is not None, "call start() first"
        return await self._batches.run_once()

    async def prune_once(self) -> dict[str, int] | None:
        """One round of pruning (pruning.py). None: another timer holds the turn."""
        assert self._pruner is not None, "call start() first"
        return await self._pruner.prune_once()

    async def run(self) -> None:
        """Start, turn the wheel until stop(), close. A batch in progress always finishes.
        Raises SideTaskFailed, once closed, if a side task failed."""
        await start_or_close(self.start, self.close, log, unavailable=(*CONNECTION_ERRORS, *BROKER_ERRORS))
        assert self._batches is not None and self._pruner is not None and self._broker is not None
        assert self._dispatch_pool is not None
        self.ready.set()
        log.info("timer started", extra={"action": "timer_started", "timer": self.name})
        self.side_tasks.start("pruner", self._pruner.run())
        loop = DispatchLoop(self._batches, self._wakeups, self._dispatch_pool, self._broker, self._stopping, self.name)
        try:
            await loop.run()
        finally:
            await self.close()
            log.info("timer stopped", extra={"action": "timer_stopped", "timer": self.name})
        self.side_tasks.raise_failure()
