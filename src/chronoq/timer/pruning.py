"""Pruning: history older than the retention period leaves the database, in bounded batches.

Every timer runs a pruner beside its dispatch loop; one timer at a time holds the pruning lock
(``wheel.prune``), the others skip their round.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import asyncpg

from chronoq._runtime.service import pause
from chronoq._store import wheel

log = logging.getLogger("chronoq.timer")

#: How often a timer prunes history older than the retention period, and rows per batch.
PRUNE_INTERVAL = 60.0
PRUNE_BATCH = 10_000
#: Pause between batches while a table still has more than a batch to prune.
BUSY_PAUSE = 0.1


class Pruner:
    def __init__(self, pool: asyncpg.Pool, retention: timedelta, stopping: asyncio.Event) -> None:
        self.pool = pool
        self.retention = retention
        self.stopping = stopping

    async def prune_once(self) -> dict[str, int] | None:
        """Delete one batch of expired history per table. None: another timer holds the turn."""
        async with self.pool.acquire() as conn:
            counts = await wheel.prune(conn, self.retention, PRUNE_BATCH)
        if counts and any(counts.values()):
            log.info("pruned history", extra={"action": "history_pruned", **counts})
        return counts

    async def run(self) -> None:
        """Side task: prune in batches, with a pause between rounds, until stopped. Errors are
        logged and retried next round; pruning never stops dispatching."""
        while not self.stopping.is_set():
            try:
                counts = await self.prune_once()
                busy = counts is not None and any(n >= PRUNE_BATCH for n in counts.values())
            except Exception as exc:  # next round tries again
                log.warning("pruning failed", extra={"action": "prune_failed", "error": type(exc).__name__})
                busy = False
            await pause(self.stopping, BUSY_PAUSE if busy else PRUNE_INTERVAL)
