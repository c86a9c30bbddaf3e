"""What a handler receives, and the signals it can raise to steer its occurrence."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from chronoq.schemas.rules import to_duration


@dataclass(frozen=True)
class JobContext:
    """The occurrence being run.

    ``db`` is an asyncpg connection inside the transaction that commits this occurrence's
    result (the transaction may carry a group of occurrences): what the handler writes through
    it commits exactly once, or not at all. If the handler fails after using it, its writes are
    undone and its neighbours' kept (the group runs again with a savepoint per handler, calling
    the handlers before it a second time). It is a thin stand-in for ``asyncpg.Connection``
    (every method, ``transaction()``, ``cursor()``), so a handler that never touches the
    database pays nothing. Do not COMMIT or ROLLBACK on it; ``db.transaction()`` nests as a
    savepoint and is fine.
    ``idempotency_key`` is the same for every attempt and redelivery of this occurrence; pass it
    to external systems (payment APIs, mailers) so that they can deduplicate too.
    """

    job_id: int
    queue: str
    fire_at: datetime
    run_at: datetime
    attempt: int
    max_attempts: int
    idempotency_key: str
    db: asyncpg.Connection
    #: This delivery was delivered before (a worker died, or its group was handed back), or a
    #: timer published the occurrence again after its lease ran out: the handler may have run
    #: already, its writes through ``db`` rolled back, but not what it did
    #: elsewhere. Pass ``idempotency_key`` to external systems either way.
    redelivered: bool = False


class JobSignal(Exception):
    """Base of the exceptions a handler raises on purpose to steer its occurrence."""


class Retry(JobSignal):
    """Roll back this attempt and retry after ``delay`` (default: the job's backoff): a
    ``timedelta`` or a number of seconds, as ``enqueue(delay=...)`` takes. Anything else raises
    ``InvalidJobError`` here, where the handler builds the signal. Counts as an attempt; at
    ``max_attempts`` the occurrence ends dead."""

    def __init__(self, reason: str = "retry requested", *, delay: timedelta | float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.delay: timedelta | None = None if delay is None else to_duration(delay, "Retry.delay")


class Cancel(JobSignal):
    """Roll back this attempt and end the occurrence as cancelled: no further attempts."""

    def __init__(self, reason: str = "cancelled by handler") -> None:
        super().__init__(reason)
        self.reason = reason
