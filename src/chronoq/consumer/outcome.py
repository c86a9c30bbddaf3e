"""The worker's vocabulary: how a handler's run ended, and what became of a delivery.

``Ending`` is what the handler did (its return or what it raised), the same for a worker and
for ``chronoq.testing.run_inline``. ``Outcome`` is what the worker decided for the delivery, and
each outcome has exactly one ``Settlement``: what the broker is told.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, StrEnum

from chronoq.consumer.context import Cancel, Retry
from chronoq.errors import InvalidJobError


class Ending(StrEnum):
    """How one run of a handler ended."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"  # raised anything else
    TIMEOUT = "timeout"  # ran past its timeout (or raised TimeoutError)
    INVALID_RESULT = "invalid_result"  # returned a value that is not storable JSON
    RETRY = "retry"  # raised Retry
    CANCELLED = "cancelled"  # raised Cancel
    INVALID_PAYLOAD = "invalid_payload"  # the payload did not validate: the handler never ran

    @property
    def recorded(self) -> str:
        """The attempt's ``outcome`` as stored in ``chronoq.attempts``."""
        return _RECORDED.get(self, self.value)


_RECORDED = {Ending.RETRY: "failed", Ending.INVALID_PAYLOAD: "invalid"}


def ending_of(exc: BaseException, *, returned: bool = False) -> Ending:
    """How a run ended that failed with ``exc``: raised by the handler, or (``returned``) by
    keeping what it returned: its value is not storable JSON, or its writes cannot be kept (it
    swallowed a database error and left the transaction aborted)."""
    if returned:
        return Ending.INVALID_RESULT if isinstance(exc, InvalidJobError) else Ending.FAILED
    if isinstance(exc, Cancel):
        return Ending.CANCELLED
    if isinstance(exc, Retry):
        return Ending.RETRY
    if isinstance(exc, TimeoutError):
        return Ending.TIMEOUT
    return Ending.FAILED


class Settlement(Enum):
    ACK = "ack"  # done: acked with the deliveries around it (consumer/acks.py)
    REQUEUE = "requeue"  # handed back: it runs again, as a redelivery
    DEAD_LETTER = "dead_letter"  # the broker moves it to the dead-letter queue


class Outcome(StrEnum):
    """What became of one delivery (a job of a pack included)."""

    SUCCEEDED = "succeeded"
    RETRY = "retry"  # failed; its next attempt is scheduled
    DEAD = "dead"
    CANCELLED = "cancelled"
    DUPLICATE = "duplicate"  # its occurrence had ended, or a copy ran in the same group
    STALE = "stale"  # names no live attempt (a later one is live, or the job is gone)
    REJECTED = "rejected"  # cannot be processed: malformed, a queue without handler, refused at commit
    DEFERRED = "deferred"  # not run: back to the queue, to run alone as a redelivery
    HANDED_BACK = "handed_back"  # nothing recorded (a service or chronoq failed): back to the queue

    @property
    def settlement(self) -> Settlement:
        return _SETTLEMENTS.get(self, Settlement.ACK)


_SETTLEMENTS = {
    Outcome.REJECTED: Settlement.DEAD_LETTER,
    Outcome.DEFERRED: Settlement.REQUEUE,
    Outcome.HANDED_BACK: Settlement.REQUEUE,
}


def pack_settlement(outcomes: list[Outcome]) -> Settlement:
    """A pack is one message: handed back whole if any of its jobs must run again (its finished
    jobs are then duplicates), else acked (a job rejected inside it has no message of its own
    to dead-letter; it was logged)."""
    if any(o.settlement is Settlement.REQUEUE for o in outcomes):
        return Settlement.REQUEUE
    return Settlement.ACK


@dataclass(frozen=True)
class Verdict:
    """What became of one delivery, and, if its handler ran, when and for how long."""

    outcome: Outcome
    lateness_s: float | None = None  # handler start minus due time, by the database's clock
    seconds: float = 0.0  # handler run time
