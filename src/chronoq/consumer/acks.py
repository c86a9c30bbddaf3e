"""Settling one channel's deliveries in delivery order, with one ``multiple`` ack for as many of
them as are done.

The lanes of a worker take their groups from one inbox fed by one channel, so groups that run
side by side hold deliveries of the same channel, and a group may end before an earlier one. An
ack with ``multiple`` settles every earlier unsettled delivery of the channel, so it is sent
only for the longest run of deliveries, from the oldest unsettled one, that are all done or
already settled otherwise. A done delivery behind one still running waits for it: its outcome
is committed, so a crash meanwhile only redelivers it and the dedup absorbs the copy.

One delivery that runs long (a handler of minutes) must not hold back the acks of everything
after it until the prefetch window is full of finished deliveries and the broker stops sending:
once the oldest unsettled delivery has waited ``HOLD_LIMIT``, deliveries that are done behind it
are acked each on its own.

Requeues and dead-letterings go out at once, each on its own. The lock keeps the frames in the
order they are decided in, so a ``multiple`` ack never overtakes the requeue of a delivery it
covers (an ack would settle it as done, and the job would wait for its lease to be published
again). A delivery counts as settled only once its frame is out: a settle cancelled half-way
(shutdown) leaves it to be handed back again.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Iterable
from typing import Literal

from chronoq._broker.consumer import Incoming

_RUNNING, _DONE, _SETTLED = 0, 1, 2
#: Seconds the oldest unsettled delivery may hold back the acks of finished ones behind it.
HOLD_LIMIT = 1.0


class ChannelAcks:
    def __init__(self) -> None:
        self._order: deque[Incoming] = deque()  # unsettled deliveries, oldest first
        self._state: dict[int, int] = {}  # by id() of each delivery in _order
        self._received: dict[int, float] = {}  # monotonic time, by id()
        self._channel: object | None = None
        self._lock = asyncio.Lock()

    def received(self, message: Incoming) -> None:
        if message.channel is not self._channel:
            # A channel opened again after a reconnect: the old one's deliveries went back to
            # the queue when it closed, and their tags mean nothing on the new one.
            self._order.clear()
            self._state.clear()
            self._received.clear()
            self._channel = message.channel
        self._order.append(message)
        self._state[id(message)] = _RUNNING
        self._received[id(message)] = time.monotonic()

    async def done(self, messages: Iterable[Incoming]) -> None:
        """These deliveries' outcomes are committed: ack them as soon as nothing before them
        is still running."""
        async with self._lock:
            for message in messages:
                if self._state.get(id(message)) == _RUNNING:
                    self._state[id(message)] = _DONE
            await self._ack_settled_prefix()
            if self._order and time.monotonic() - self._received[id(self._order[0])] > HOLD_LIMIT:
                for message in [m for m in self._order if self._state[id(m)] == _DONE]:
                    await message.ack()
                    self._state[id(message)] = _SETTLED

    async def settle(self, message: Incoming, how: Literal["requeue", "dead_letter", "ack"]) -> None:
        """Settle one delivery on its own, now. A delivery settled already is left as it is,
        and so is one of a channel since replaced (the broker requeued it when that closed)."""
        async with self._lock:
            if self._state.get(id(message)) != _RUNNING:
                return
            await getattr(message, how)()
            if id(message) in self._state:  # (not forgotten meanwhile with its channel)
                self._state[id(message)] = _SETTLED
            await self._ack_settled_prefix()

    async def release(self, messages: Iterable[Incoming]) -> None:
        """Requeue whatever of these is neither done nor settled (a group that failed half-way):
        one delivery left running would hold back the acks of every later one."""
        for message in messages:
            if self._state.get(id(message)) == _RUNNING:  # settle() checks again, under the lock
                await self.settle(message, "requeue")

    async def _ack_settled_prefix(self) -> None:
        last_done = None
        while self._order and self._state[id(self._order[0])] != _RUNNING:
            message = self._order.popleft()
            del self._received[id(message)]
            if self._state.pop(id(message)) == _DONE:
                last_done = message
        if last_done is not None:
            # Shielded: these deliveries are no longer tracked, so the frame must go out even if
            # this task is cancelled (shutdown). Any frame sent after it concerns later tags.
            await asyncio.shield(last_done.ack(multiple=True))
