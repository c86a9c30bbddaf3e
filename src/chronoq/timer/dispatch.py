"""The dispatch loop: one batch after another until the timer stops, sleeping until the next due
time when the wheel has nothing more, waiting (claiming nothing) while the broker is away, and
outliving whatever one batch throws: an outage is retried, any other failure is narrowed down to
the one row that causes it, which is held aside."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import asyncpg

from chronoq._broker.connection import BrokerConnection
from chronoq._runtime.availability import unavailable
from chronoq._runtime.service import pause
from chronoq._store import wheel
from chronoq.schemas.rules import short
from chronoq.timer.batch import Batches, Look
from chronoq.timer.wakeups import Wakeups, earliest

log = logging.getLogger("chronoq.timer")

#: Pause after the database or broker failed, before trying again.
FAILURE_PAUSE = 1.0
#: How long a row whose one-row batch failed for an unknown reason waits before it is tried
#: again, out of the way of every other row.
HOLD_PAUSE = timedelta(seconds=30)


class DispatchLoop:
    def __init__(self, batches: Batches, wakeups: Wakeups, pool: asyncpg.Pool, broker: BrokerConnection,
                 stopping: asyncio.Event, timer: str) -> None:
        self.batches = batches
        self.wakeups = wakeups
        self.pool = pool
        self.broker = broker
        self.stopping = stopping
        self.timer = timer

    async def run(self) -> None:
        """Turn the wheel until stopped. A batch in progress always finishes."""
        claim_batch = self.batches.settings.claim_batch
        while not self.stopping.is_set():
            if not await self._broker_reachable():
                break
            try:
                self.wakeups.look_begins()
                handled = await self.batches.run_once(controls=self.wakeups.controls_due())
                if (look := self.batches.look) is not None:
                    # After every batch, full or not: a burst of free rows must not keep a
                    # limited queue waiting.
                    self.wakeups.controls_seen(look.controls_due_in, look.seen_at)
            except Exception as exc:  # a timer must outlive anything one batch can throw
                if unavailable(exc):
                    await self._recover(exc, expected=True)
                else:
                    await self._isolate(exc)
                continue
            if handled < claim_batch and not self.batches.one_at_a_time and not self.stopping.is_set():
                try:
                    await self._sleep(self.batches.look)
                except Exception as exc:  # no row's fault: looking at the wheel failed
                    await self._recover(exc, expected=unavailable(exc))

    async def _sleep(self, look: Look | None) -> None:
        """After a batch that did not fill: sleep until the next due row, or until a limited
        queue may have work. The claim saw when that is; the wheel is asked again (next_due) only
        if the claim got nothing, left due rows to others, or the backlog is to be counted, and
        after a sleep of the whole ``timer_max_idle`` (wakeups.py)."""
        if look is None or look.others_due or self.wakeups.backlog_due():
            await self.wakeups.sleep_until_due(self.pool, claimed_nothing=look is None)
            return
        if await self.wakeups.sleep_as_seen(look.db_now, earliest(look.due_in, look.controls_due_in), look.seen_at):
            await self.wakeups.sleep_until_due(self.pool, claimed_nothing=False)

    async def _broker_reachable(self) -> bool:
        """Wait, claiming nothing, while the broker connection is down; False if stopped first.
        A claimed batch would wait for a publish that cannot happen with its rows locked, out of
        reach of the timers that can still publish, and would delay a SIGTERM by its timeout."""
        if self.broker.connected.is_set():
            return True
        log.warning("waiting for the broker", extra={"action": "timer_waiting_for_broker", "timer": self.timer})
        back = asyncio.ensure_future(self.broker.connected.wait())
        stopping = asyncio.ensure_future(self.stopping.wait())
        try:
            await asyncio.wait({back, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in (back, stopping):
                waiter.cancel()
        return not self.stopping.is_set()  # the connection logs its own restoration

    async def _isolate(self, exc: Exception) -> None:
        """A batch failed, and not because a service is unavailable: something in one of its rows
        breaks it. Its rows are due again (the batch rolled back); claim them one at a time, and
        hold the one whose own batch fails, so that no single row stops the others."""
        keys = self.batches.claimed_keys
        if not keys:  # it failed before claiming: no row to find, only to wait and try again
            await self._recover(exc, expected=False)
            return
        if len(keys) == 1:
            log.error("dispatch of one occurrence failed; it is held and tried again later",
                      extra={"action": "occurrence_held", "occurrence": short(keys[0]),
                             "error": type(exc).__name__, "pause_s": HOLD_PAUSE.total_seconds()}, exc_info=exc)
            try:
                async with self.pool.acquire() as conn:
                    await wheel.hold(conn, keys[0], HOLD_PAUSE, f"dispatch failed: {type(exc).__name__}: {exc}"[:500])
            except Exception as hold_failed:  # the next round finds it again
                await self._recover(hold_failed, expected=unavailable(hold_failed))
            return
        log.error("dispatch failed; claiming one row at a time to find the cause",
                  extra={"action": "timer_isolating", "rows": len(keys), "error": type(exc).__name__}, exc_info=exc)
        self.batches.one_at_a_time = len(keys)

    async def _recover(self, exc: Exception, *, expected: bool) -> None:
        """A batch failed (it rolled back: its rows stay due) or a look at the wheel did: wait a
        moment and carry on."""
        log.log(
            logging.WARNING if expected else logging.ERROR,
            "dispatch failed; retrying",
            extra={"action": "timer_retry", "error": f"{type(exc).__name__}: {exc}"[:300]},
            exc_info=not expected,
        )
        await pause(self.stopping, FAILURE_PAUSE)
        await self.wakeups.listen_again_if_lost()
