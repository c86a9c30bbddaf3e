"""Running a group of deliveries: one transaction, one commit, one ack for all of them.

The costly steps of a queue with exactly-once effects are a commit and an ack per job. A group
pays them once: its deliveries run one after the other in a single transaction, each handler
inside a savepoint (opened when it first uses ``ctx.db``), so that a failing handler's writes roll
back alone; then every success is recorded in one statement, the transaction commits, and the
broker gets one ``multiple`` ack.

The order is still the guarantee. The group first locks its live occurrences: the fence,
nothing else can end them until the group commits. It runs the handlers, records outcomes with
the handlers' writes, commits, and only then acks. A crash anywhere before the commit loses nothing: the deliveries come back,
flagged as redelivered. Those run alone and commit their start before running, so a delivery
that keeps killing its workers is counted, reaches the delivery limit and ends dead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import orjson
from pydantic import ValidationError

from chronoq._broker.publisher import ConfirmedPublisher, Outgoing, fitted_headers
from chronoq._runtime import tracing
from chronoq._runtime.failpoints import failpoint
from chronoq._runtime.hooks import Hooks
from chronoq._store import outcomes
from chronoq._store.connection import Connection, RawJson
from chronoq.consumer.context import Cancel, JobContext, Retry
from chronoq.consumer.job_connection import SAVEPOINT, JobConnection
from chronoq.consumer.registry import Handler, Worker
from chronoq.consumer.suspects import SuspectGate
from chronoq.errors import InvalidJobError, ServiceUnavailableError
from chronoq.schemas.job import RetryPolicy
from chronoq.schemas.message import JobMessage, PackMessage
from chronoq.schemas.payload import encode_payload

log = logging.getLogger("chronoq.worker")

ERROR_TEXT_LIMIT = 2000
#: Longest wait for the broker to confirm a dead-letter copy.
DEAD_LETTER_TIMEOUT = 10.0
#: A group stops starting further handlers after this long; the rest go back to the queue. Its
#: deliveries stay unacked until it commits, and RabbitMQ closes a channel that holds one past
#: its consumer_timeout (30 minutes by default).
GROUP_TIME_BUDGET = 120.0
#: Test-only: a deliberately broken build without the dedup and the fence, so that a
#: fault-injection run can show its checker catches duplicate effects. Never set in production.
NO_FENCE = os.environ.get("CHRONOQ_CHAOS_NO_FENCE") == "1"
#: Database errors that say "try again", not "this job is broken".
TRANSIENT_CONFLICTS = (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)
# Ending a handler's savepoint (opened on its first use of ctx.db): one round trip.
_KEEP_JOB = f"RELEASE SAVEPOINT {SAVEPOINT}; SET LOCAL plan_cache_mode TO DEFAULT"  # see job_connection.OPEN
_UNDO_JOB = f"ROLLBACK TO SAVEPOINT {SAVEPOINT}; RELEASE SAVEPOINT {SAVEPOINT}"
_NO_SPAN = contextlib.nullcontext()  # stateless: one serves every untraced handler


@dataclass(frozen=True)
class Job:
    """A delivery that parsed and names a queue this worker handles: all a group needs to run it."""

    message: JobMessage
    handler: Handler
    attempt: outcomes.Attempt


@dataclass
class Member:
    """One delivery of the group and, once decided, what happened to it."""

    body: bytes
    headers: dict[str, Any] = field(default_factory=dict)
    redelivered: bool = False
    message: JobMessage | None = None  # the message, if it parsed (also when its queue has no handler)
    job: Job | None = None  # None: rejected when parsed
    action: str = ""  # succeeded | duplicate | stale | retry | dead | cancelled | rejected | deferred | isolate
    dead_letter: tuple[str, str] | None = None  # (reason, error) for the dead-letter copy
    lateness_s: float | None = None  # handler start minus due time, by the database's clock
    seconds: float = 0.0  # handler run time


#: A member of a group that runs, with the job it carries.
Live = tuple[Member, Job]


def describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text[:ERROR_TEXT_LIMIT]


class GroupExecutor:
    def __init__(
        self, worker: Worker, publisher: ConfirmedPublisher, name: str, *,
        redispatch_after: timedelta, delivery_limit: int, hooks: Hooks | None = None,
    ) -> None:
        self.hooks = hooks or Hooks()
        self.worker = worker
        self.publisher = publisher
        self.name = name
        self.redispatch_after = redispatch_after
        self.delivery_limit = delivery_limit
        self.gate = SuspectGate()

    async def execute(self, conn: Connection, deliveries: list[tuple[bytes, dict[str, Any], bool]]) -> list[Member]:
        """Process the group to the point where every member may be settled (acked, or
        dead-lettered if ``rejected``). Raises if the database or broker failed: then nothing
        was recorded and every member must go back to the queue."""
        return await self.execute_members(conn, [self._parse(b, h, r) for b, h, r in deliveries])

    async def execute_members(self, conn: Connection, members: list[Member]) -> list[Member]:
        """``execute`` for members already parsed (from single messages or from a pack)."""
        live = [(m, m.job) for m in members if not m.action and m.job is not None]
        if live:
            await self._run_group(conn, live)
        for m in members if type(self.hooks) is not Hooks else ():  # no per-job work when unobserved
            queue = m.message.queue if m.message is not None else "-"
            if m.lateness_s is not None:
                self.hooks.job_started(queue, m.lateness_s)
            self.hooks.job_finished(queue, m.action, m.seconds)
        return members

    async def bury_unprocessable(self, conn: Connection, body: bytes, headers: dict[str, Any], error: str) -> bool:
        """Record in Postgres that a delivery can never be processed (the broker dead-letters the
        message itself), so the wheel does not dispatch it again when its lease expires."""
        return await self.bury_member(conn, self._parse(body, headers, False), error)

    async def bury_member(self, conn: Connection, member: Member, error: str) -> bool:
        if member.job is None:
            return False  # names no occurrence: the dead-letter queue is its only record
        try:
            async with conn.transaction():
                return await outcomes.record_dead(conn, member.job.attempt, "unprocessable", error, "failed", None)
        except asyncpg.PostgresError:
            return False  # its own values are what Postgres refuses: the lease will bring it back

    def parse_pack(self, body: bytes) -> list[Member]:
        """The members of a packed message (many jobs of one queue). An element that does not
        validate is a ``rejected`` member; a body that is not a pack at all gives none."""
        try:
            pack = PackMessage.model_validate_json(body)
        except ValidationError:
            try:  # corrupted or forged: keep what validates
                elements = orjson.loads(body)["pack"]
                if not isinstance(elements, list):
                    raise TypeError("pack is not a list")
            except (orjson.JSONDecodeError, KeyError, TypeError):
                log.warning("malformed pack rejected", extra={"action": "message_rejected"})
                return []
            return [self._parse(orjson.dumps(e), {}, False) for e in elements]
        return [self._member(Member(b"", dict(job.trace)), job) for job in pack.pack]

    def _parse(self, body: bytes, headers: dict[str, Any], redelivered: bool) -> Member:
        member = Member(body, headers, redelivered)
        try:
            member.message = JobMessage.model_validate_json(body)
        except ValidationError as exc:
            # Field locations and error types only: the message text would quote the payload.
            problems = [(".".join(map(str, e["loc"])), e["type"]) for e in exc.errors()][:5]
            log.warning("malformed message rejected", extra={"action": "message_rejected", "problems": problems})
            member.action = "rejected"
            return member
        return self._member(member, member.message)

    def _member(self, member: Member, m: JobMessage) -> Member:
        member.message = m
        handler = self.worker.get(m.queue)
        if handler is None:
            log.warning("message for a queue without handler", extra={"action": "message_rejected", "queue": m.queue})
            member.action = "rejected"
            return member
        attempt = outcomes.Attempt(m.occurrence_key, m.job_id, m.queue, m.fire_at, m.run_at, m.attempt, self.name)
        member.job = Job(m, handler, attempt)
        return member

    def _timeout(self, job: Job) -> timedelta:
        return job.handler.timeout or timedelta(seconds=job.message.timeout_s)

    async def _run_group(self, conn: Connection, members: list[Live]) -> None:
        if len(members) > 1:
            # A redelivery (its worker died, or its group was handed back) runs alone: a crash
            # it causes then counts against it only, never against innocent neighbours.
            for m, _ in members:
                if m.redelivered:
                    m.action = "isolate"
            members = [(m, job) for m, job in members if not m.action]
            if not members:
                return
        keys = [job.attempt.occurrence_key for _, job in members]
        attempts = [job.attempt.attempt for _, job in members]
        if members[0][0].redelivered:
            # Alone, and maybe what killed the last worker: its start is committed before it
            # runs, so that a delivery that keeps killing workers reaches the delivery limit.
            leases = [self.redispatch_after + self._timeout(job) for _, job in members]
            statuses = await outcomes.start_many(conn, keys, attempts, leases)
            runnable = self._runnable(members, statuses)
            if not runnable:
                return
            # Started and counted before, and back without an outcome: it may kill this
            # process too, so it runs with no other group in flight (consumer/suspects.py).
            suspect = any((statuses[k].starts or 0) > 1 for k in keys)
            failpoint("consumer.before_transaction")
            async with self.gate.suspect() if suspect else self.gate.ordinary(), conn.transaction():
                locked, db_started = await outcomes.lock_live(
                    conn, [job.attempt.occurrence_key for _, job in runnable], [job.attempt.attempt for _, job in runnable]
                )
                await self._run_locked(conn, runnable, statuses, locked, db_started)
            return
        # First deliveries: one statement locks the live occurrences (the fence) in the group's
        # own transaction and counts nothing. Only the first copy a committed timer batch
        # published runs here; if it kills the worker, its redelivery above is counted.
        failpoint("consumer.before_transaction")
        async with self.gate.ordinary(), conn.transaction():
            dispatch_ids = [job.message.dispatch_id for _, job in members]
            statuses, db_started = await outcomes.start_locked(conn, keys, attempts, dispatch_ids)
            runnable = self._runnable(members, statuses)
            for m, job in runnable:
                status = statuses[job.attempt.occurrence_key]
                if status.starts is not None and status.starts <= self.delivery_limit and not status.only_copy \
                        and not NO_FENCE:
                    # Started before without an outcome (its worker died), or not the one copy
                    # of this attempt a committed timer batch published first (published again
                    # after its lease ran out, or by a batch that rolled back): an earlier copy
                    # may have run uncounted and killed its worker. It goes back to the queue,
                    # uncounted here, and runs alone as a redelivery, its start counted first.
                    # (Past the limit it is buried below, in this group.)
                    m.action = "deferred"
            runnable = [(m, job) for m, job in runnable if not m.action]
            locked = {k for k, status in statuses.items() if status.starts is not None}
            await self._run_locked(conn, runnable, statuses, locked, db_started)

    @staticmethod
    def _runnable(members: list[Live], statuses: dict[str, outcomes.OccurrenceStatus]) -> list[Live]:
        runnable: list[Live] = []
        seen: set[str] = set()
        for m, job in members:
            key = job.attempt.occurrence_key
            status = statuses[key]
            if NO_FENCE:
                runnable.append((m, job))
            elif status.terminal_state is not None or key in seen:
                m.action = "duplicate"  # ended already, or a second copy within this group
            elif status.live_attempt != job.attempt.attempt:
                # A later attempt is live, or the message names no live occurrence (forged, or
                # its job deleted): nothing to run.
                m.action = "stale"
            else:
                seen.add(key)
                runnable.append((m, job))
        return runnable

    async def _run_locked(
        self, conn: Connection, runnable: list[Live], statuses: dict[str, outcomes.OccurrenceStatus],
        locked: set[str], db_started: datetime,
    ) -> None:
        """Inside the group's transaction, the live occurrences locked: run, record, and let
        the caller commit."""
        if not runnable:
            return
        clock_started = time.perf_counter()
        traced = tracing.enabled()
        successes: list[tuple[Member, Job, Any, datetime]] = []
        for m, job in runnable:
            if time.perf_counter() - clock_started > GROUP_TIME_BUDGET:
                m.action = "deferred"  # not started: handed back to the queue
                continue
            if job.attempt.occurrence_key not in locked and not NO_FENCE:
                m.action = "duplicate"  # ended between the start and the lock
                continue
            started_at = db_started + timedelta(seconds=time.perf_counter() - clock_started)
            starts = statuses[job.attempt.occurrence_key].starts
            if starts is not None and starts > self.delivery_limit:
                # Started this often without an outcome: it kills or hangs its workers.
                error = f"started {starts - 1} times without an outcome (delivery limit {self.delivery_limit})"
                await self._bury(conn, m, job.attempt, "delivery_limit", error, "poison", None)
                result = _FAILED
            else:
                m.lateness_s = (started_at - job.attempt.run_at).total_seconds()
                handler_clock = time.perf_counter()
                result = await self._run_one(conn, m, job, started_at, traced)
                m.seconds = time.perf_counter() - handler_clock
            if result is not _FAILED:
                successes.append((m, job, result, started_at))
        failpoint("consumer.before_commit")
        if successes:
            recorded = await outcomes.record_successes(
                conn,
                [job.attempt.occurrence_key for _, job, _, _ in successes],
                [job.attempt.attempt for _, job, _, _ in successes],
                [RawJson(r) if r is not None else None for _, _, r, _ in successes],
                [s for _, _, _, s in successes],
                self.name,
            )
            if recorded != len(successes) and not NO_FENCE:  # impossible while the group holds the locks
                raise RuntimeError(f"recorded {recorded} of {len(successes)} results; rolling back the group")
            for m, _, _, _ in successes:
                m.action = "succeeded"
        await self._copy_dead_letters([(job, m.dead_letter) for m, job in runnable if m.dead_letter is not None])

    async def _run_one(self, conn: Connection, m: Member, job: Job, started_at: datetime, traced: bool) -> Any:
        """Run one handler inside the group's savepoint. Returns its encoded result, or _FAILED
        after recording the failure (its writes rolled back)."""
        message = job.message
        try:
            payload = job.handler.parse(message.payload)
        except ValidationError as exc:
            await self._bury(conn, m, job.attempt, "invalid_payload", describe(exc), "invalid", None)
            return _FAILED
        db = JobConnection(conn)
        ctx = JobContext(
            job_id=message.job_id, queue=message.queue, fire_at=message.fire_at, run_at=message.run_at,
            attempt=message.attempt, max_attempts=message.max_attempts,
            # The handler sees an asyncpg connection: JobConnection has its interface, not its class.
            idempotency_key=message.occurrence_key, db=db,  # type: ignore[arg-type]
            redelivered=m.redelivered,
        )
        # Whether tracing is on is asked once per group: the question costs an environment
        # lookup in OpenTelemetry's API, and untraced jobs then pay for no span at all.
        scope = tracing.handler_span(message.queue, m.headers, {
            "chronoq.job_id": message.job_id, "chronoq.attempt": message.attempt,
            "chronoq.occurrence": message.occurrence_key,
        }) if traced else _NO_SPAN
        try:
            with scope as span:
                try:
                    async with asyncio.timeout(self._timeout(job).total_seconds()):  # no task per job, unlike wait_for
                        value = await job.handler.fn(ctx, payload)
                except BaseException as exc:
                    tracing.mark_failed(span, exc)
                    raise
            encoded = encode_payload(value, field="result") if value is not None else None
            if db.opened:
                # Keep this job's writes. Fails if the handler swallowed a database error and
                # left the transaction aborted: a failed attempt.
                await conn.execute(_KEEP_JOB)
            return encoded
        except BaseException as exc:  # every handler failure is an outcome...
            task = asyncio.current_task()
            if isinstance(exc, asyncio.CancelledError) and task is not None and task.cancelling():
                raise  # ...except this group being cancelled (shutdown's second stage)
            if db.opened:
                await conn.execute(_UNDO_JOB)
            if isinstance(exc, TRANSIENT_CONFLICTS):
                # Chosen as a deadlock victim (often against a handler of another group), or a
                # serialization failure: not the job's fault. It goes back to the queue with its
                # attempt unspent, and runs alone when redelivered.
                m.action = "deferred"
                return _FAILED
            await self._failed(conn, m, job.attempt, exc, started_at)
            return _FAILED

    async def _failed(
        self, conn: Connection, m: Member, attempt: outcomes.Attempt, exc: BaseException, started_at: datetime
    ) -> None:
        if isinstance(exc, Cancel):
            await outcomes.record_cancelled(conn, attempt, exc.reason[:ERROR_TEXT_LIMIT], started_at)
            m.action = "cancelled"
            return
        outcome = "timeout" if isinstance(exc, TimeoutError) else "failed"
        error = "TimeoutError: handler exceeded its timeout" if outcome == "timeout" else describe(exc)
        if isinstance(exc, InvalidJobError):
            outcome = "invalid_result"
        policy_row = await outcomes.retry_policy(conn, attempt.job_id)
        if policy_row is None:
            m.action = "stale"
            return
        policy = RetryPolicy(
            max_attempts=policy_row["max_attempts"],
            backoff_base=timedelta(milliseconds=policy_row["backoff_base_ms"]),
            backoff_cap=timedelta(milliseconds=policy_row["backoff_cap_ms"]),
            jitter=policy_row["jitter"],
        )
        if attempt.attempt >= policy.max_attempts:
            await self._bury(conn, m, attempt, "max_attempts", error, outcome, started_at)
            return
        delay = exc.delay if isinstance(exc, Retry) and exc.delay is not None else policy.backoff(attempt.attempt)
        next_run = await outcomes.record_retry(conn, attempt, delay, error, outcome, started_at)
        m.action = "retry" if next_run is not None else "stale"
        log.info(
            "job failed; retry scheduled",
            extra={"action": "job_retry_scheduled", "job_id": attempt.job_id, "queue": attempt.queue,
                   "occurrence": attempt.occurrence_key, "attempt": attempt.attempt, "outcome": outcome,
                   "delay_s": round(delay.total_seconds(), 3)},
        )

    async def _bury(self, conn: Connection, m: Member, attempt: outcomes.Attempt, reason: str, error: str,
                    outcome: str, started_at: datetime | None) -> None:
        """End the occurrence dead (in the group's transaction); the dead-letter copy follows
        the commit."""
        recorded = await outcomes.record_dead(conn, attempt, reason, error, outcome, started_at)
        m.action = "dead" if recorded else "stale"
        if recorded:
            m.dead_letter = (reason, error)
        log.warning(
            "job dead",
            extra={"action": "job_dead", "job_id": attempt.job_id, "queue": attempt.queue,
                   "occurrence": attempt.occurrence_key, "attempt": attempt.attempt, "reason": reason},
        )

    async def _copy_dead_letters(self, dead: list[tuple[Job, tuple[str, str]]]) -> None:
        """Copies of dead occurrences' messages for operators, published and confirmed before the
        group commits their dead records: if the broker cannot take them, the group rolls back
        and comes back later, so no dead occurrence lacks its copy. (A commit that fails after
        the copies went out leaves a stray copy; its message id, ``<key>#dead``, tells.)"""
        if not dead:
            return
        copies = []
        for job, (reason, error) in dead:
            message = job.message
            headers = fitted_headers(message.headers(), {"x-chronoq-reason": reason, "x-chronoq-error": error[:500]},
                                     self.publisher.frame_max())
            copies.append(Outgoing(message.queue, message.body(), f"{message.occurrence_key}#dead", headers))
        try:
            failures = await asyncio.wait_for(self.publisher.publish(copies, dead=True), DEAD_LETTER_TIMEOUT)
        except Exception as exc:  # any failure means the same: not published
            failures = [exc] * len(copies)
        failed = [(c, f) for c, f in zip(copies, failures, strict=True) if f is not None]
        if failed:
            copy, failure = failed[0]
            log.warning("dead-letter copy not published; the group rolls back",
                        extra={"action": "dead_letter_failed", "occurrence": copy.headers["x-chronoq-idempotency-key"],
                               "error": type(failure).__name__, "count": len(failed)})
            raise DeadLetterNotPublished(f"{len(failed)} dead-letter copies not confirmed: {type(failure).__name__}")


_FAILED = object()


class DeadLetterNotPublished(ServiceUnavailableError):
    """The broker did not confirm a dead occurrence's dead-letter copy."""
