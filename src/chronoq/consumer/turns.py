"""Lanes take turns while handlers are fast, so that a burst runs in few, large groups.

A lane that started a group with whatever the inbox held the moment it was free ran small
groups: lanes split the inflow, 15 jobs a group on average in a burst where 32 fit, and every
group paid a transaction, two statements, a commit and an ack.

So a lane with a partial group waits while another lane's group runs, until one of: no group
runs, the inbox holds a full batch, or ``linger`` has passed since it began waiting. Fast
handlers then take turns in large groups; slow handlers, which run one per group
(consumer/handler_times.py), do not wait and run side by side, ``concurrency`` at once; and an
idle worker starts a delivery at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

#: Longest a delivery waits for another lane's group before its own group starts anyway.
DEFAULT_LINGER = 0.010


class Turns:
    def __init__(self, linger: float = DEFAULT_LINGER) -> None:
        self.linger = linger
        self.running = 0  # groups in progress, over all lanes
        self._waiters: list[asyncio.Future[None]] = []

    async def wait(self, full: Callable[[], bool]) -> None:
        """Return when the caller's group should start: ``full()`` says the group is as large as
        it should be. The caller calls :meth:`started` before its next ``await``."""
        if not self.running or full():
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.linger
        while self.running and not full():
            waiter = loop.create_future()
            self._waiters.append(waiter)
            try:
                async with asyncio.timeout_at(deadline):
                    await waiter
            except TimeoutError:
                return
            finally:
                self._waiters.remove(waiter)

    def started(self) -> None:
        self.running += 1

    def ended(self) -> None:
        self.running -= 1
        self.wake()

    def wake(self) -> None:
        """Something a waiting lane checks has changed: each looks again."""
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
