"""When the timer looks at the wheel again: at the next due time the database reports, at the
latest after ``timer_max_idle``, or sooner when a NOTIFY announces an earlier due time.

The producer's NOTIFY carries the due time in database epoch milliseconds. The timer compares it
with the time it plans to wake, in its host's monotonic clock, through the offset between the
two measured at every look at the wheel (the claim and ``next_due`` return the database's
clock): no host wall clock is involved. Without the listener (its connection failed) the timer still works, only with up to
``timer_max_idle`` of lateness for a job enqueued while it sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time

import asyncpg

from chronoq._runtime.hooks import Hooks
from chronoq._store import wheel
from chronoq._store.connection import Connection, connect

log = logging.getLogger("chronoq.timer")

NOTIFY_CHANNEL = "chronoq_due"
#: Pause when due rows exist but are all locked by other timers' batches.
LOCKED_ROWS_PAUSE = 0.05
#: Seconds between counts of the due backlog (the chronoq_due_backlog gauge): see next_due.
BACKLOG_INTERVAL = 1.0


class Wakeups:
    def __init__(self, database_url: str, application_name: str, max_idle: float, hooks: Hooks,
                 stopping: asyncio.Event) -> None:
        self.database_url = database_url
        self.application_name = application_name
        self.max_idle = max_idle
        self.hooks = hooks
        self.stopping = stopping
        self._listener: asyncpg.Connection | None = None
        self._wake = asyncio.Event()
        # Host monotonic time at which the timer plans to look again; a NOTIFY for an earlier
        # due time wakes it sooner. `_clock_offset` maps database epoch to host monotonic time.
        self._planned_wake = 0.0
        self._clock_offset = 0.0
        self._claimed_nothing_while_due = False
        self._backlog_due = 0.0  # host monotonic time of the next backlog count
        self._listen_due = 0.0  # host monotonic time before which a lost listener is not reopened
        self._controls_due = math.inf  # host monotonic time at which a limited queue may have work

    async def listen(self) -> None:
        """Listen for NOTIFYs on a connection of its own; logged, not raised, if that fails."""
        try:
            self._listener = await connect(self.database_url, application_name=self.application_name)
            await self._listener.add_listener(NOTIFY_CHANNEL, self._on_notify)
        except Exception:  # the timer still works without NOTIFY, only with max-idle lateness
            log.warning("notify listener unavailable", extra={"action": "timer_listen_failed"}, exc_info=True)
            self._listener = None

    async def listen_again_if_lost(self) -> None:
        """Open the listener again if its connection is gone (a restart, a failover: the new
        connection goes wherever the URL's writable host is now), at most once per max_idle."""
        if self._listener is not None and not self._listener.is_closed():
            return
        now = time.monotonic()
        if now >= self._listen_due:
            self._listen_due = now + self.max_idle
            await self.listen()

    def _on_notify(self, _conn: Connection, _pid: int, _channel: str, payload: object) -> None:
        try:
            due_host = int(str(payload)) / 1000 - self._clock_offset
        except ValueError:
            return
        if due_host < self._planned_wake:
            self._wake.set()

    def interrupt(self) -> None:
        """End the current sleep at once (the timer is stopping)."""
        self._wake.set()

    def look_begins(self) -> None:
        """The wheel is about to be read (a claim, or next_due): until the new wake time is
        known, any NOTIFY must wake the timer. Clear first, never after."""
        self._planned_wake = math.inf
        self._wake.clear()

    def controls_due(self) -> bool:
        """Whether the next batch should also dispatch limited queues' rows: the last look at
        the wheel said one may have work by now."""
        return time.monotonic() >= self._controls_due

    def controls_seen(self, due_in: float | None, seen_at: float) -> None:
        """What a look at the wheel said of the limited queues: seconds from ``seen_at`` (host
        monotonic) until one may have work; None: none will without a NOTIFY."""
        self._controls_due = math.inf if due_in is None else seen_at + due_in

    def backlog_due(self) -> bool:
        """Whether the due backlog is to be counted now (next_due, at most once a second)."""
        return time.monotonic() >= self._backlog_due

    async def sleep_until_due(self, pool: asyncpg.Pool, claimed_nothing: bool) -> None:
        """Ask the wheel when the next row is due, and sleep until then. After a sleep of the
        whole ``max_idle`` (the safety net for a lost NOTIFY) it asks again instead of
        returning, so that only a row that may be due leads to a claim: an idle timer sends one
        statement per ``max_idle``, where a claim would take three (BEGIN, the claim, COMMIT)."""
        while True:
            self.look_begins()
            count_backlog = self.backlog_due()
            async with pool.acquire() as conn:
                seen = await wheel.next_due(conn, count_backlog=count_backlog)
            asked_at = time.monotonic()  # the statement's now() on this host's clock, or just after
            if seen.backlog is not None:
                self.hooks.due_backlog(seen.backlog)
                self._backlog_due = time.monotonic() + BACKLOG_INTERVAL
            self.controls_seen(seen.controls_due_in, asked_at)
            due_in = earliest(seen.due_in, seen.controls_due_in)
            if not await self.sleep_as_seen(seen.db_now, due_in, asked_at, claimed_nothing=claimed_nothing):
                return
            claimed_nothing = False

    async def sleep_as_seen(self, db_now: float, due_in: float | None, seen_at: float, *,
                            claimed_nothing: bool = False) -> bool:
        """Sleep until the next due row, as the last look at the wheel (begun with
        ``look_begins``) saw it: ``db_now`` its database epoch, ``due_in`` seconds from then to
        the first row due (None: none), ``seen_at`` this host's monotonic time at ``db_now``
        (a claim's batch takes milliseconds after its look: the sleep counts from the look).
        True if it slept the whole ``max_idle`` with nothing due before its end: the wheel is
        to be looked at again before anything is claimed."""
        # The database answered: a listener lost meanwhile is reopened before the sleep.
        await self.listen_again_if_lost()
        self._clock_offset = db_now - seen_at
        host_now = time.monotonic()
        wait = self._wait(None if due_in is None else due_in - (host_now - seen_at), claimed_nothing)
        self._planned_wake = host_now + wait
        # The event loop's timers may fire a fraction of a millisecond early (they count in
        # whole milliseconds from the loop's cached time); a claim sent before the due time finds
        # nothing and costs a next_due and a claim more. So the sleep goes on until the planned
        # time has come by this host's clock.
        while (left := self._planned_wake - time.monotonic()) > 0:
            if self._wake.is_set() or self.stopping.is_set():
                return False  # a NOTIFY of an earlier due time, or the timer is stopping
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=left)
        return wait >= self.max_idle and not self._wake.is_set() and not self.stopping.is_set()

    def _wait(self, due_in: float | None, claimed_nothing: bool) -> float:
        """Seconds until the next look, given the next due time (None: nothing is due)."""
        if due_in is None:
            return self.max_idle
        if claimed_nothing and due_in <= 0:
            # Due rows that the claim did not get: either one just became due (claim again at
            # once) or, if that happens twice running, another timer holds them mid-batch (pause
            # instead of spinning on them).
            wait = LOCKED_ROWS_PAUSE if self._claimed_nothing_while_due else 0.0
            self._claimed_nothing_while_due = True
            return wait
        self._claimed_nothing_while_due = False
        return min(max(due_in, 0.0), self.max_idle)

    async def close(self) -> None:
        if self._listener is not None:
            await self._listener.close()
            self._listener = None


def earliest(first: float | None, second: float | None) -> float | None:
    """The sooner of two optional delays (None: never)."""
    if first is None:
        return second
    return first if second is None else min(first, second)
