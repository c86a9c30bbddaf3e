"""Running a suspected poison delivery with the rest of the worker process quiet.

A delivery that was started before, counted, and came back without an outcome may be what
killed its last worker. Killing the process takes every job running in its other lanes with
it, and each of those comes back counted too: under a message that keeps killing workers, an
innocent slow job in a neighbouring lane was counted up to the delivery limit and buried as
poison (found by the chaos suite). So a suspect waits until no other group runs in the
process, and runs with new groups held back until it is done. Ordinary groups still run side
by side.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class SuspectGate:
    def __init__(self) -> None:
        self._running = 0  # ordinary groups in progress
        self._suspect = False  # a suspect runs, or waits for the ordinary groups to finish
        self._changed = asyncio.Condition()

    @asynccontextmanager
    async def ordinary(self) -> AsyncIterator[None]:
        async with self._changed:
            await self._changed.wait_for(lambda: not self._suspect)
            self._running += 1
        try:
            yield
        finally:
            async with self._changed:
                self._running -= 1
                self._changed.notify_all()

    @asynccontextmanager
    async def suspect(self) -> AsyncIterator[None]:
        async with self._changed:
            await self._changed.wait_for(lambda: not self._suspect)
            self._suspect = True  # from here on, new ordinary groups wait: no starvation
            try:
                await self._changed.wait_for(lambda: self._running == 0)
            except BaseException:
                self._suspect = False
                self._changed.notify_all()
                raise
        try:
            yield
        finally:
            async with self._changed:
                self._suspect = False
                self._changed.notify_all()
