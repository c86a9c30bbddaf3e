"""Running one delivery: dedup, run the handler in a transaction, commit, then ack.

The order is the guarantee. The result row and the handler's own writes commit together, and
the message is acked only after that commit; a crash at any point before the ack means a
redelivery, which finds the result row and is acked without running again. A failure rolls
the handler's writes back, then a separate transaction records the attempt and either moves
the occurrence to its next attempt (back into the wheel, never an unacked message waiting for
time) or ends it dead.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from pydantic import ValidationError

from chronoq._broker.publisher import ConfirmedPublisher, Outgoing
from chronoq._runtime.failpoints import failpoint
from chronoq._store import outcomes
from chronoq._store.connection import RawJson
from chronoq.consumer.context import Cancel, JobContext, Retry
from chronoq.consumer.registry import Worker
from chronoq.errors import InvalidJobError
from chronoq.schemas.job import RetryPolicy
from chronoq.schemas.message import JobMessage
from chronoq.schemas.payload import encode_payload

log = logging.getLogger("chronoq.worker")

ERROR_TEXT_LIMIT = 2000
#: Longest wait for the broker to confirm a dead-letter copy.
DEAD_LETTER_TIMEOUT = 10.0


@dataclass(frozen=True)
class Delivery:
    """What execute() needs from an AMQP delivery, independent of aio-pika."""

    body: bytes
    headers: dict[str, Any]
    redelivered: bool


@dataclass(frozen=True)
class Outcome:
    action: str  # succeeded | duplicate | stale | retry | dead | cancelled | rejected
    detail: str = ""


def describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text[:ERROR_TEXT_LIMIT]


class Executor:
    def __init__(
        self, worker: Worker, pool: asyncpg.Pool, publisher: ConfirmedPublisher, name: str, *,
        redispatch_after: timedelta, delivery_limit: int,
    ) -> None:
        self.worker = worker
        self.pool = pool
        self.publisher = publisher
        self.name = name
        self.redispatch_after = redispatch_after
        self.delivery_limit = delivery_limit

    async def execute(self, delivery: Delivery) -> Outcome:
        """Process one delivery to the point where it may be acked. Raises only if the
        database or broker is unavailable (then the delivery must not be acked)."""
        try:
            message = JobMessage.model_validate_json(delivery.body)
        except ValidationError as exc:
            # Field locations and error types only: the message text would quote the payload.
            problems = [(".".join(map(str, e["loc"])), e["type"]) for e in exc.errors()][:5]
            log.warning("malformed message rejected", extra={"action": "message_rejected", "problems": problems})
            return Outcome("rejected", "malformed message")
        handler = self.worker.get(message.queue)
        if handler is None:
            log.warning("message for a queue without handler", extra={"action": "message_rejected", "queue": message.queue})
            return Outcome("rejected", f"no handler for queue {message.queue}")
        attempt = outcomes.Attempt(
            occurrence_key=message.occurrence_key,
            job_id=message.job_id,
            queue=message.queue,
            fire_at=message.fire_at,
            run_at=message.run_at,
            attempt=message.attempt,
            worker=self.name,
        )
        timeout = handler.timeout or timedelta(seconds=message.timeout_s)
        async with self.pool.acquire() as conn:
            status = await outcomes.start(conn, attempt.occurrence_key, attempt.attempt, self.redispatch_after + timeout)
            if status.terminal_state is not None:
                return Outcome("duplicate", status.terminal_state)
            if status.live_attempt != attempt.attempt:
                # The occurrence moved on to a later attempt, or the message names no live
                # occurrence at all (forged, or its job was deleted): nothing to run.
                return Outcome("stale", f"live attempt {status.live_attempt}")
            if status.starts is not None and status.starts > self.delivery_limit:
                # Started this often without an outcome: the message kills or hangs its workers.
                error = f"started {status.starts - 1} times without an outcome (delivery limit {self.delivery_limit})"
                return await self._bury(conn, message, attempt, "delivery_limit", error, "poison", None)
            try:
                payload = handler.parse(message.payload)
            except ValidationError as exc:
                return await self._bury(conn, message, attempt, "invalid_payload", describe(exc), "invalid", None)
            return await self._run(conn, handler, message, attempt, payload, timeout.total_seconds())

    async def _run(self, conn, handler, message: JobMessage, attempt, payload: Any, timeout: float) -> Outcome:
        started_at = datetime.now(UTC)
        clock = time.perf_counter()
        transaction = conn.transaction()
        await transaction.start()
        ctx = JobContext(
            job_id=message.job_id,
            queue=message.queue,
            fire_at=message.fire_at,
            run_at=message.run_at,
            attempt=message.attempt,
            max_attempts=message.max_attempts,
            idempotency_key=message.occurrence_key,
            db=conn,
        )
        try:
            result = await asyncio.wait_for(handler.fn(ctx, payload), timeout)
            encoded = encode_payload(result, field="result") if result is not None else None
        except BaseException as exc:  # every handler failure is an outcome...
            await _rollback(transaction)
            task = asyncio.current_task()
            if isinstance(exc, asyncio.CancelledError) and task is not None and task.cancelling():
                raise  # ...except this delivery being cancelled (shutdown's second stage)
            return await self._failed(conn, message, attempt, exc, started_at)
        failpoint("consumer.before_commit")
        try:
            won = await outcomes.record_success(conn, attempt, RawJson(encoded) if encoded is not None else None)
        except asyncpg.InFailedSQLTransactionError as exc:
            # The handler swallowed a database error and left its transaction aborted: that is a
            # failed attempt like any other, retried with backoff.
            await _rollback(transaction)
            return await self._failed(conn, message, attempt, exc, started_at)
        except BaseException:
            await _rollback(transaction)
            raise
        return await self._commit(transaction, attempt, won, clock)

    async def _commit(self, transaction, attempt, won: bool, clock: float) -> Outcome:
        try:
            if not won:
                await transaction.rollback()
                return Outcome("duplicate", "another delivery committed first")
            await transaction.commit()
        except BaseException:
            await _rollback(transaction)
            raise
        # DEBUG: one line per job costs more CPU than the job itself at thousands per second.
        log.debug(
            "job succeeded",
            extra={
                "action": "job_succeeded",
                "job_id": attempt.job_id,
                "queue": attempt.queue,
                "occurrence": attempt.occurrence_key,
                "attempt": attempt.attempt,
                "duration_ms": round((time.perf_counter() - clock) * 1000, 2),
            },
        )
        return Outcome("succeeded")

    async def _failed(self, conn, message: JobMessage, attempt, exc: BaseException, started_at: datetime) -> Outcome:
        if isinstance(exc, Cancel):
            if len(exc.reason) > ERROR_TEXT_LIMIT:
                exc = Cancel(exc.reason[:ERROR_TEXT_LIMIT])
            async with conn.transaction():
                await outcomes.record_cancelled(conn, attempt, exc.reason[:ERROR_TEXT_LIMIT], started_at)
            return Outcome("cancelled", exc.reason)
        outcome = "timeout" if isinstance(exc, TimeoutError) else "failed"
        error = "TimeoutError: handler exceeded its timeout" if outcome == "timeout" else describe(exc)
        if isinstance(exc, InvalidJobError):
            outcome = "invalid_result"
        policy_row = await outcomes.retry_policy(conn, attempt.job_id)
        if policy_row is None:
            return Outcome("stale", "job no longer exists")
        policy = RetryPolicy(
            max_attempts=policy_row["max_attempts"],
            backoff_base=timedelta(milliseconds=policy_row["backoff_base_ms"]),
            backoff_cap=timedelta(milliseconds=policy_row["backoff_cap_ms"]),
            jitter=policy_row["jitter"],
        )
        if attempt.attempt >= policy.max_attempts:
            return await self._bury(conn, message, attempt, "max_attempts", error, outcome, started_at)
        delay = exc.delay if isinstance(exc, Retry) and exc.delay is not None else policy.backoff(attempt.attempt)
        async with conn.transaction():
            next_run = await outcomes.record_retry(conn, attempt, delay, error, outcome, started_at)
        log.info(
            "job failed; retry scheduled",
            extra={
                "action": "job_retry_scheduled",
                "job_id": attempt.job_id,
                "queue": attempt.queue,
                "occurrence": attempt.occurrence_key,
                "attempt": attempt.attempt,
                "outcome": outcome,
                "delay_s": round(delay.total_seconds(), 3),
                "stale": next_run is None,
            },
        )
        return Outcome("retry" if next_run is not None else "stale", error)

    async def _bury(self, conn, message: JobMessage, attempt, reason: str, error: str, outcome: str, started_at) -> Outcome:
        """End the occurrence dead: record it, then put a copy in the dead-letter queue."""
        async with conn.transaction():
            recorded = await outcomes.record_dead(conn, attempt, reason, error, outcome, started_at)
        if recorded:
            headers = {**message.headers(), "x-chronoq-reason": reason, "x-chronoq-error": error[:500]}
            try:
                failures = await asyncio.wait_for(self.publisher.publish(
                    [Outgoing(message.queue, message.body(), f"{attempt.occurrence_key}#dead", headers)], dead=True
                ), DEAD_LETTER_TIMEOUT)
            except Exception as exc:  # noqa: BLE001 - the dead record is committed; the copy is best effort
                failures = [exc]
            if failures[0] is not None:
                # Postgres holds the truth; the dead-letter copy is for operators.
                log.warning("dead-letter copy not published", extra={"action": "dead_letter_failed", "occurrence": attempt.occurrence_key})
        log.warning(
            "job dead",
            extra={
                "action": "job_dead",
                "job_id": attempt.job_id,
                "queue": attempt.queue,
                "occurrence": attempt.occurrence_key,
                "attempt": attempt.attempt,
                "reason": reason,
            },
        )
        return Outcome("dead" if recorded else "stale", reason)


async def _rollback(transaction) -> None:
    try:
        await transaction.rollback()
    except Exception:  # the connection may be gone; the server rolls back on its own then
        pass

