"""Running a group of deliveries: one transaction, one commit, one ack for all of them.

The costly steps of a queue with exactly-once effects are a commit and an ack per job. A group
pays them once: its deliveries run one after the other in a single transaction, each keeping its
own outcome (a failing handler's writes are undone alone: consumer/writes.py); then every success
is recorded in one statement, the transaction commits, and the broker gets one ``multiple`` ack.

The order is still the guarantee. The group first locks its live occurrences: the fence,
nothing else can end them until the group commits. It runs the handlers, records outcomes with
the handlers' writes, commits, and only then acks. A crash anywhere before the commit loses
nothing: the deliveries come back, flagged as redelivered. Those run alone and commit their start
before running, so a delivery that keeps killing its workers is counted, reaches the delivery
limit and ends dead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg
from pydantic import ValidationError

from chronoq._broker.publisher import ConfirmedPublisher
from chronoq._runtime import tracing
from chronoq._runtime.availability import unavailable
from chronoq._runtime.failpoints import failpoint
from chronoq._store import outcomes
from chronoq._store.connection import Connection, RawJson, database_unavailable
from chronoq.consumer import failures
from chronoq.consumer.context import JobContext
from chronoq.consumer.delivery import Job
from chronoq.consumer.fence import Fence
from chronoq.consumer.job_connection import JobConnection
from chronoq.consumer.outcome import Ending, Outcome, Verdict, ending_of
from chronoq.consumer.suspects import SuspectGate
from chronoq.consumer.writes import Failure, GroupWrites, SavepointPolicy, UndoAlone
from chronoq.errors import ChronoqError
from chronoq.schemas.payload import encode_payload

log = logging.getLogger("chronoq.worker")

#: A group stops starting further handlers after this long; the rest go back to the queue. Its
#: deliveries stay unacked until it commits, and RabbitMQ closes a channel that holds one past
#: its consumer_timeout (30 minutes by default).
GROUP_TIME_BUDGET = 120.0
#: Database errors that say "try again", not "this job is broken".
TRANSIENT_CONFLICTS = (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)
_NO_SPAN = contextlib.nullcontext()  # stateless: one serves every untraced handler


class CommitRefused(ChronoqError):
    """Postgres refused the group's commit: a handler's writes broke a deferred constraint. The
    one failure outside a handler that is a job's fault; which job, only running each alone tells."""


@dataclass(frozen=True)
class _Success:
    result: bytes | None  # the handler's return, encoded
    seconds: float  # the handler's run time
    outcome = Outcome.SUCCEEDED


@dataclass(frozen=True)
class _Fenced:
    """A group's transaction after its fence: the verdicts of the jobs that must not run, the
    jobs that may, and what the fence statement read."""

    verdicts: dict[Job, Verdict]
    runnable: list[Job]
    statuses: dict[str, outcomes.OccurrenceStatus]
    locked: set[str]
    db_started: datetime


#: The first statements of a group's transaction: lock the live occurrences and judge the jobs.
Fencing = Callable[[Connection], Awaitable[_Fenced]]


@dataclass(frozen=True)
class _Pass:
    """One run of a group's transaction: how its handlers' writes are kept apart, the failures
    carried over from an optimistic run, and when it stops starting handlers (``perf_counter``;
    counted from the group's first run: its deliveries have been unacked since)."""

    writes: GroupWrites
    carried: dict[Job, Failure]
    deadline: float


@dataclass
class _Ran:
    """What the handlers of a group did, before it is recorded."""

    verdicts: dict[Job, Verdict]
    successes: list[tuple[Job, _Success, datetime]]
    dead: list[failures.DeadLetter]


class GroupExecutor:
    def __init__(
        self, publisher: ConfirmedPublisher, name: str, *, redispatch_after: timedelta, delivery_limit: int,
    ) -> None:
        self.publisher = publisher
        self.name = name  # the worker's, recorded with each success
        self.redispatch_after = redispatch_after
        self.delivery_limit = delivery_limit
        self.fence = Fence(delivery_limit)
        self.gate = SuspectGate()
        self.savepoints = SavepointPolicy()

    async def run(self, conn: Connection, jobs: list[Job]) -> dict[Job, Verdict]:
        """Run ``jobs`` as one group, to the point where each may be settled (a redelivery runs
        alone). Raises if anything failed outside the handlers: then nothing was recorded."""
        if jobs[0].redelivered:
            return await self._run_redelivered(conn, jobs)
        return await self._run_first(conn, jobs)

    async def _run_redelivered(self, conn: Connection, jobs: list[Job]) -> dict[Job, Verdict]:
        # Alone, and maybe what killed the last worker: its start is committed before it runs,
        # so that a delivery that keeps killing workers reaches the delivery limit.
        leases = [self.redispatch_after + job.timeout for job in jobs]
        statuses = await outcomes.start_many(conn, [j.key for j in jobs], [j.attempt.attempt for j in jobs], leases)
        verdicts, runnable = self.fence.admit(jobs, statuses)
        if not runnable:
            return verdicts

        async def lock(conn: Connection) -> _Fenced:
            locked, db_started = await outcomes.lock_live(
                conn, [j.key for j in runnable], [j.attempt.attempt for j in runnable]
            )
            return _Fenced({}, runnable, statuses, locked, db_started)

        # Started and counted before, and back without an outcome: it may kill this process
        # too, so it runs with no other group in flight (consumer/suspects.py).
        suspect = any((statuses[j.key].starts or 0) > 1 for j in jobs)
        try:
            failpoint("consumer.before_transaction")
            async with self.gate.suspect() if suspect else self.gate.ordinary():
                verdicts.update(await self._transaction(conn, runnable, lock))
        except Exception as exc:
            if not unavailable(exc) and not isinstance(exc, CommitRefused):
                await _uncount(conn, runnable)
            raise
        return verdicts

    async def _run_first(self, conn: Connection, jobs: list[Job]) -> dict[Job, Verdict]:
        # First deliveries: one statement locks the live occurrences (the fence) in the group's
        # own transaction and counts nothing. Only the first copy a committed timer batch
        # published runs here; if it kills the worker, its redelivery above is counted.
        async def lock(conn: Connection) -> _Fenced:
            statuses, db_started = await outcomes.start_locked(
                conn, [j.key for j in jobs], [j.attempt.attempt for j in jobs], [j.message.dispatch_id for j in jobs]
            )
            verdicts, runnable = self.fence.admit(jobs, statuses)
            for job in runnable:
                if not self.fence.may_run_uncounted(statuses[job.key]):
                    verdicts[job] = Verdict(Outcome.DEFERRED)
            locked = {k for k, status in statuses.items() if status.starts is not None}
            return _Fenced(verdicts, [job for job in runnable if job not in verdicts], statuses, locked, db_started)

        failpoint("consumer.before_transaction")
        async with self.gate.ordinary():
            return await self._transaction(conn, jobs, lock)

    async def _transaction(self, conn: Connection, jobs: list[Job], lock: Fencing) -> dict[Job, Verdict]:
        """The group's transaction: fenced, run, recorded, committed. Without savepoints unless
        its queues needed them lately; rolled back and run once more with savepoints if a
        handler's writes must be undone alone (consumer/writes.py)."""
        deadline = time.perf_counter() + GROUP_TIME_BUDGET
        if self.savepoints.savepoints_for(job.attempt.queue for job in jobs):
            return await self._run_pass(conn, lock, _Pass(GroupWrites(conn, savepoints=True), {}, deadline))
        try:
            return await self._run_pass(conn, lock, _Pass(GroupWrites(conn, savepoints=False), {}, deadline))
        except UndoAlone as undo:
            carried = undo.carried
        except asyncpg.InFailedSQLTransactionError:
            carried = {}  # a handler aborted the transaction unnoticed: the savepoints will tell which
        log.info("group rolled back and run again with savepoints",
                 extra={"action": "group_savepoints", "count": len(jobs), "culprits": len(carried)})
        return await self._run_pass(conn, lock, _Pass(GroupWrites(conn, savepoints=True), carried, deadline))

    async def _run_pass(self, conn: Connection, lock: Fencing, run: _Pass) -> dict[Job, Verdict]:
        async with _committed(conn):
            fenced = await lock(conn)
            return fenced.verdicts | await self._run_locked(conn, fenced, run)

    async def _run_locked(
        self, conn: Connection, fenced: _Fenced, run: _Pass,
    ) -> dict[Job, Verdict]:
        """Inside the group's transaction, the live occurrences locked: run, record, and let
        the caller commit."""
        if not fenced.runnable:
            return {}
        ran = await self._run_each(conn, fenced, run)
        failpoint("consumer.before_commit")
        if ran.successes:
            await run.writes.before_own_statement()
            recorded = await outcomes.record_successes(
                conn,
                [job.key for job, _, _ in ran.successes],
                [job.attempt.attempt for job, _, _ in ran.successes],
                [RawJson(s.result) if s.result is not None else None for _, s, _ in ran.successes],
                [started for _, _, started in ran.successes],
                self.name,
            )
            self.fence.check_recorded(recorded, len(ran.successes))
        await failures.copy_dead_letters(self.publisher, ran.dead)
        return ran.verdicts

    async def _run_each(
        self, conn: Connection, fenced: _Fenced, run: _Pass,
    ) -> _Ran:
        clock_started = time.perf_counter()
        traced = tracing.enabled()
        ran = _Ran({}, [], [])
        for job in fenced.runnable:
            if time.perf_counter() > run.deadline:
                ran.verdicts[job] = Verdict(Outcome.DEFERRED)  # not started: handed back to the queue
                continue
            if not self.fence.still_live(job, fenced.locked):
                ran.verdicts[job] = Verdict(Outcome.DUPLICATE)  # ended between the start and the lock
                continue
            started_at = fenced.db_started + timedelta(seconds=time.perf_counter() - clock_started)
            starts = fenced.statuses[job.key].starts
            if starts is not None and starts > self.delivery_limit:
                # Started this often without an outcome: it kills or hangs its workers.
                error = f"started {starts - 1} times without an outcome (delivery limit {self.delivery_limit})"
                await run.writes.before_own_statement()
                result: _Success | failures.Failed = await failures.bury(
                    conn, job, "delivery_limit", error, "poison", None)
                verdict = Verdict(result.outcome)
            else:
                lateness_s = (started_at - job.attempt.run_at).total_seconds()
                result, seconds = await self._run_one(conn, job, started_at, traced, run.writes, run.carried.get(job))
                verdict = Verdict(result.outcome, lateness_s, seconds)
            if isinstance(result, _Success):
                ran.successes.append((job, result, started_at))
            elif result.dead_letter is not None:
                ran.dead.append(result.dead_letter)
            ran.verdicts[job] = verdict
        return ran

    async def _run_one(
        self, conn: Connection, job: Job, started_at: datetime, traced: bool, writes: GroupWrites,
        carried: Failure | None,
    ) -> tuple[_Success | failures.Failed, float]:
        """Run one handler: its encoded result, or the failure recorded (its writes undone),
        and how long it ran. A failure ``carried`` from an optimistic run is recorded as it is."""
        failure = carried
        if failure is None:
            try:
                payload = job.handler.parse(job.message.payload)
            except ValidationError as exc:
                await writes.before_own_statement()
                return await failures.bury(conn, job, "invalid_payload", failures.describe(exc),
                                           Ending.INVALID_PAYLOAD.recorded, None), 0.0
            db = JobConnection(conn, writes)
            ended = await self._call(db, writes, job, payload, traced)
            if isinstance(ended, _Success):
                return ended, ended.seconds
            failure = ended
            if db.used:
                self.savepoints.failed_after_writing(job.attempt.queue)
                # Without savepoints this raises UndoAlone: the group runs again (_transaction).
                await writes.undo_job(job, failure, db.noticed)
        if isinstance(failure.exc, TRANSIENT_CONFLICTS):
            # Chosen as a deadlock victim (often against a handler of another group), or a
            # serialization failure: not the job's fault. It goes back to the queue with its
            # attempt unspent, and runs alone when redelivered.
            return failures.Failed(Outcome.DEFERRED), failure.seconds
        await writes.before_own_statement()
        recorded = await failures.record_raised(conn, job, failure.exc, failure.ending, started_at)
        return recorded, failure.seconds

    async def _call(
        self, db: JobConnection, writes: GroupWrites, job: Job, payload: object, traced: bool,
    ) -> _Success | Failure:
        """Call the handler, and keep its writes if it returned: its encoded result, or how it
        failed (its writes not undone yet)."""
        message = job.message
        ctx = JobContext(
            job_id=message.job_id, queue=message.queue, fire_at=message.fire_at, run_at=message.run_at,
            attempt=message.attempt, max_attempts=message.max_attempts,
            # The handler sees an asyncpg connection: JobConnection has its interface, not its class.
            idempotency_key=message.occurrence_key, db=db,  # type: ignore[arg-type]
            redelivered=job.redelivered,
        )
        # Whether tracing is on is asked once per group: the question costs an environment
        # lookup in OpenTelemetry's API, and untraced jobs then pay for no span at all.
        scope = tracing.handler_span(message.queue, job.headers, {
            "chronoq.job_id": message.job_id, "chronoq.attempt": message.attempt,
            "chronoq.occurrence": message.occurrence_key,
        }) if traced else _NO_SPAN
        returned = False
        clock = time.perf_counter()
        try:
            with scope as span:
                try:
                    async with asyncio.timeout(job.timeout.total_seconds()):  # no task per job, unlike wait_for
                        value = await job.handler.fn(ctx, payload)
                except BaseException as exc:
                    tracing.mark_failed(span, exc)
                    raise
            returned = True
            encoded = encode_payload(value, field="result") if value is not None else None
            if db.used:
                # Fails if the handler swallowed a database error and left the transaction
                # aborted: a failed attempt.
                await writes.keep_job(db.noticed)
            return _Success(encoded, time.perf_counter() - clock)
        except BaseException as exc:  # every handler failure is an outcome...
            task = asyncio.current_task()
            if isinstance(exc, asyncio.CancelledError) and task is not None and task.cancelling():
                raise  # ...except this group being cancelled (shutdown's second stage)
            return Failure(exc, ending_of(exc, returned=returned), time.perf_counter() - clock)


async def _uncount(conn: Connection, jobs: list[Job]) -> None:
    """This run failed with an error of chronoq's, the worker alive: its start is no sign of a
    job that kills its workers, so it does not count toward the delivery limit (a delivery that
    meets the same fault again and again keeps coming back, loudly, instead of ending dead)."""
    try:
        await outcomes.unstart_many(conn, [j.key for j in jobs], [j.attempt.attempt for j in jobs])
    except Exception as exc:  # the original error is what the caller reports
        log.warning("start not uncounted", extra={"action": "uncount_failed", "error": type(exc).__name__})


@contextlib.asynccontextmanager
async def _committed(conn: Connection) -> AsyncIterator[None]:
    """The group's transaction. A commit Postgres refuses for what was written (not for being
    unavailable) raises ``CommitRefused``; anything raised inside rolls it back as it is."""
    transaction = conn.transaction()
    await transaction.start()
    try:
        yield
    except BaseException:
        await transaction.rollback()
        raise
    try:
        await transaction.commit()
    except asyncpg.PostgresError as exc:
        if database_unavailable(exc):
            raise
        raise CommitRefused(f"the group's commit was refused: {type(exc).__name__}") from exc
