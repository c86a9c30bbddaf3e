"""How long each queue's handler has recently taken: what a lane uses to size its group.

A group runs its deliveries one after the other, so it should hold as many as fit in a short
time (``GROUP_TIME``): all of a batch for fast handlers, one at a time for slow ones, which the
other lanes then run side by side. A queue not seen yet counts as slow until its first
delivery has run: a worker never serialises handlers it knows nothing about.
"""

from __future__ import annotations

import math

from chronoq._broker.consumer import Incoming
from chronoq.schemas.message import PACK_HEADER

#: Handler time a group is filled up to: the same as the turns' linger, the longest a partial
#: group waits for another lane's group (consumer/turns.py).
GROUP_TIME = 0.010
#: Weight of the newest run in the running mean: about the last ten runs count.
_WEIGHT = 0.2


class HandlerTimes:
    def __init__(self) -> None:
        self._mean: dict[str, float] = {}

    def estimate(self, message: Incoming) -> float:
        """Seconds this delivery's handlers should take (a pack runs all of its jobs)."""
        mean = self._mean.get(message.headers.get("x-chronoq-queue"), math.inf)  # type: ignore[arg-type]
        return mean * message.headers.get(PACK_HEADER, 1)

    def observe(self, queue: str, seconds: float) -> None:
        mean = self._mean.get(queue)
        self._mean[queue] = seconds if mean is None else mean + _WEIGHT * (seconds - mean)
