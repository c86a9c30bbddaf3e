"""A failed run's outcome: a retry, a burial (the occurrence ends dead), the dead-letter copy.

Everything here writes in the group's transaction, after the handler's writes were undone:
the failure is recorded with the group's commit, or not at all.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from chronoq import errors
from chronoq._broker.publisher import ConfirmedPublisher, Outgoing, fitted_headers
from chronoq._store import outcomes
from chronoq._store.connection import Connection
from chronoq.consumer.context import Cancel, Retry
from chronoq.consumer.delivery import Job
from chronoq.consumer.outcome import Ending, Outcome
from chronoq.errors import ServiceUnavailableError
from chronoq.schemas.job import RetryPolicy

log = logging.getLogger("chronoq.worker")

ERROR_TEXT_LIMIT = 2000
#: Longest wait for the broker to confirm a dead-letter copy.
DEAD_LETTER_TIMEOUT = 10.0


def describe(exc: BaseException) -> str:
    """The error text recorded for an attempt: :func:`chronoq.errors.describe`, bounded."""
    return errors.describe(exc)[:ERROR_TEXT_LIMIT]


@dataclass(frozen=True)
class DeadLetter:
    """A buried job's message, to be copied to its dead-letter queue for operators."""

    job: Job
    reason: str
    error: str


@dataclass(frozen=True)
class Failed:
    """A failure recorded: the outcome, and the dead-letter copy to publish if it was buried."""

    outcome: Outcome
    dead_letter: DeadLetter | None = None


async def record_failure(
    conn: Connection, job: Job, ending: Ending, error: str, started_at: datetime, retry_delay: timedelta | None = None,
) -> Failed:
    """A handler's run failed (its writes rolled back): retry it, or bury it if it has no
    attempts left. ``retry_delay`` (a ``Retry``'s) replaces the job's backoff."""
    attempt = job.attempt
    policy_row = await outcomes.retry_policy(conn, attempt.job_id)
    if policy_row is None:
        return Failed(Outcome.STALE)  # the job was deleted meanwhile
    policy = RetryPolicy(
        max_attempts=policy_row["max_attempts"],
        backoff_base=timedelta(milliseconds=policy_row["backoff_base_ms"]),
        backoff_cap=timedelta(milliseconds=policy_row["backoff_cap_ms"]),
        jitter=policy_row["jitter"],
    )
    if attempt.attempt >= policy.max_attempts:
        return await bury(conn, job, "max_attempts", error, ending.recorded, started_at)
    delay = retry_delay if retry_delay is not None else policy.backoff(attempt.attempt)
    next_run = await outcomes.record_retry(conn, attempt, delay, error, ending.recorded, started_at)
    log.info(
        "job failed; retry scheduled",
        extra={"action": "job_retry_scheduled", "job_id": attempt.job_id, "queue": attempt.queue,
               "occurrence": attempt.occurrence_key, "attempt": attempt.attempt, "outcome": ending.recorded,
               "delay_s": round(delay.total_seconds(), 3)},
    )
    return Failed(Outcome.RETRY if next_run is not None else Outcome.STALE)


async def record_raised(conn: Connection, job: Job, exc: BaseException, ending: Ending, started_at: datetime) -> Failed:
    """The run failed with ``exc`` (``ending``): cancelled, retried or buried, as the handler's
    signal or the job's policy says."""
    if isinstance(exc, Cancel):
        recorded = await outcomes.record_cancelled(conn, job.attempt, exc.reason[:ERROR_TEXT_LIMIT], started_at)
        return Failed(Outcome.CANCELLED if recorded else Outcome.STALE)
    error = "TimeoutError: handler exceeded its timeout" if ending is Ending.TIMEOUT else describe(exc)
    delay = exc.delay if isinstance(exc, Retry) else None
    return await record_failure(conn, job, ending, error, started_at, delay)


async def bury(
    conn: Connection, job: Job, reason: str, error: str, recorded_as: str, started_at: datetime | None,
) -> Failed:
    """End the occurrence dead (in the group's transaction); the dead-letter copy follows, before
    the commit (``copy_dead_letters``)."""
    attempt = job.attempt
    recorded = await outcomes.record_dead(conn, attempt, reason, error, recorded_as, started_at)
    log.warning(
        "job dead",
        extra={"action": "job_dead", "job_id": attempt.job_id, "queue": attempt.queue,
               "occurrence": attempt.occurrence_key, "attempt": attempt.attempt, "reason": reason},
    )
    return Failed(Outcome.DEAD, DeadLetter(job, reason, error)) if recorded else Failed(Outcome.STALE)


async def bury_unprocessable(conn: Connection, job: Job, error: str) -> bool:
    """Record in Postgres that a delivery can never be processed (the broker dead-letters the
    message itself), so the wheel does not dispatch it again when its lease expires."""
    try:
        async with conn.transaction():
            return await outcomes.record_dead(conn, job.attempt, "unprocessable", error, "failed", None)
    except asyncpg.PostgresError:
        return False  # its own values are what Postgres refuses: the lease will bring it back


async def copy_dead_letters(publisher: ConfirmedPublisher, dead: list[DeadLetter]) -> None:
    """Copies of dead occurrences' messages for operators, published and confirmed before the
    group commits their dead records: if the broker cannot take them, the group rolls back
    and comes back later, so no dead occurrence lacks its copy. (A commit that fails after
    the copies went out leaves a stray copy; its message id, ``<key>#dead``, tells.)"""
    if not dead:
        return
    copies = []
    for d in dead:
        message = d.job.message
        headers = fitted_headers(message.headers(), {"x-chronoq-reason": d.reason, "x-chronoq-error": d.error[:500]},
                                 publisher.frame_max())
        copies.append(Outgoing(message.queue, message.body(), f"{message.occurrence_key}#dead", headers))
    try:
        failures = await asyncio.wait_for(publisher.publish(copies, dead=True), DEAD_LETTER_TIMEOUT)
    except Exception as exc:  # any failure means the same: not published
        failures = [exc] * len(copies)
    failed = [(c, f) for c, f in zip(copies, failures, strict=True) if f is not None]
    if failed:
        copy, failure = failed[0]
        log.warning("dead-letter copy not published; the group rolls back",
                    extra={"action": "dead_letter_failed", "occurrence": copy.headers["x-chronoq-idempotency-key"],
                           "error": type(failure).__name__, "count": len(failed)})
        raise DeadLetterNotPublished(f"{len(failed)} dead-letter copies not confirmed: {type(failure).__name__}")


class DeadLetterNotPublished(ServiceUnavailableError):
    """The broker did not confirm a dead occurrence's dead-letter copy."""
