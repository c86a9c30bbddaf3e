"""How long each queue's handler has recently taken: what a lane uses to size its group.

A group runs its deliveries one after the other, so it should hold as many as fit in a short
time (``GROUP_TIME``): all of a batch for fast handlers, a few for handlers of tens of
milliseconds, one at a time for slow ones, which the other lanes then run side by side. A queue
not seen yet counts as slow until its first delivery has run: a worker never serialises handlers
it knows nothing about.
"""

from __future__ import annotations

import math

from chronoq._broker.consumer import Incoming
from chronoq.schemas.message import PACK_HEADER

#: Handler time a group is filled up to. Handler times are wall times, stretched by everything
#: else running on the machine: with a 10 ms budget, handlers that write a row through ctx.db
#: ran in groups of 5-10 in a burst, each paying its own commit. Handlers of 100 ms and more
#: run one per group.
GROUP_TIME = 0.100
#: Weight of the newest run in the running mean: about the last ten runs count.
_WEIGHT = 0.2


class HandlerTimes:
    def __init__(self) -> None:
        self._mean: dict[str, float] = {}

    def estimate(self, message: Incoming) -> float:
        """Seconds this delivery's handlers should take (a pack runs all of its jobs). Headers
        are whatever the message carries (one re-published by hand, say): a value of an
        unexpected type counts as unknown, and never raises."""
        queue = message.headers.get("x-chronoq-queue")
        mean = self._mean.get(queue, math.inf) if isinstance(queue, str) else math.inf
        jobs = message.headers.get(PACK_HEADER, 1)
        return mean * jobs if type(jobs) is int and jobs > 0 else mean

    def observe(self, queue: str, seconds: float) -> None:
        mean = self._mean.get(queue)
        self._mean[queue] = seconds if mean is None else mean + _WEIGHT * (seconds - mean)
