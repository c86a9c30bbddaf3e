"""``Producer``: what a service uses to put jobs into chronoq.

It talks only to Postgres: an enqueue is one statement, so it can share the caller's own
transaction (``connection=``) and commit or vanish with the caller's writes.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import asyncpg

from chronoq import lifecycle
from chronoq._runtime import tracing
from chronoq._runtime.hooks import count_enqueued
from chronoq._store import jobs as job_store
from chronoq._store import queues as queue_controls
from chronoq._store import reads
from chronoq._store import schedules as schedule_store
from chronoq._store.clock import db_now
from chronoq._store.connection import Connection, create_pool, with_database_errors
from chronoq.errors import InvalidJobError, JobNotFoundError, wrong_type
from chronoq.producer.arguments import check_connection, listed, prepare_item
from chronoq.producer.views import load_job, load_summaries, load_ticks
from chronoq.schemas.cron import CronSchedule, CronTick
from chronoq.schemas.job import EARLIEST_RUN_AT, LATEST_RUN_AT, JobSpec, RetryPolicy, build_spec, revalidated
from chronoq.schemas.limits import Rate, check_limits
from chronoq.schemas.policies import Misfire, Overlap
from chronoq.schemas.rules import (
    MAX_DURATION,
    check_aware_time,
    check_int,
    check_job_id,
    check_limit,
    check_queue_name,
    to_duration,
)
from chronoq.schemas.schedule import build_schedule, parse_schedule
from chronoq.schemas.views import JobSummary, JobView, QueueStatus, ScheduledJob, TickView

Delay = timedelta | int | float
JOB_STATES = ("active", "paused", "cancelled")
#: Times a read may start from: any aware time Postgres stores.
_EARLIEST_READ = datetime(1, 1, 2, tzinfo=UTC)
_LATEST_READ = datetime(9999, 12, 31, tzinfo=UTC)
#: Tries of an operation that Postgres aborted to break a deadlock (it changed nothing).
DEADLOCK_RETRIES = 3
#: Ticks ``schedule`` returns with the job's id.
NEXT_TICKS = 3
#: Most ticks one ``preview`` computes.
MAX_PREVIEW = 1000
_MICROSECOND = timedelta(microseconds=1)


class Producer:
    """``async with Producer(database_url) as producer: await producer.enqueue(...)``.

    Pass ``pool=`` to share an existing asyncpg pool (its connections need no set-up).

    Every argument is checked before anything is sent (``InvalidJobError`` naming the field), and
    no driver error leaves a method: Postgres unreachable is ``ServiceUnavailableError``, a
    database or role that does not exist, or a database not migrated, is ``ConfigError``.
    """

    def __init__(self, database_url: str | None = None, *, pool: asyncpg.Pool | None = None) -> None:
        if database_url is None and pool is None:
            from chronoq._runtime.config import Settings

            database_url = Settings.load().database_url
        self._url = database_url
        self._pool = pool
        self._owns_pool = pool is None

    async def __aenter__(self) -> Producer:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @with_database_errors
    async def open(self) -> None:
        if self._pool is None:
            assert self._url is not None
            self._pool = await create_pool(self._url, application_name="chronoq-producer", planning="server")

    async def close(self) -> None:
        if self._owns_pool and self._pool is not None:
            await self._pool.close()
            self._pool = None

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("Producer is not open: use `async with Producer(...)` or await open()")
        return self._pool

    @with_database_errors
    async def enqueue(
        self,
        queue: str,
        payload: Any = None,
        *,
        delay: Delay | None = None,
        run_at: datetime | None = None,
        key: str | None = None,
        max_attempts: int | None = None,
        retry: RetryPolicy | None = None,
        timeout: Delay | None = None,  # noqa: ASYNC109 - the job's handler timeout, not this call's
        misfire: Literal["skip", "run_once"] | None = None,
        misfire_grace: Delay | None = None,
        on_conflict: Literal["keep", "replace"] | None = None,
        debounce: Delay | None = None,
        max_wait: Delay | None = None,
        connection: Connection | None = None,
    ) -> int:
        """Store a one-shot job; returns its id. With ``key``, a second enqueue of the same key on
        the same queue returns the first job's id and, by ``on_conflict``, stores nothing
        (``keep``, the default) or replaces the job's payload and options and the time of its
        pending run (``replace``); if that run is already dispatched, running or finished, one
        new run with the new payload follows it. ``debounce`` (with a key; implies ``replace``):
        every enqueue of the key pushes the pending run out to now + ``debounce``, but never
        past ``max_wait`` (default 10 x ``debounce``) after the enqueue that created that run.
        With ``connection``, the job is written in that connection's current transaction."""
        spec = build_spec(
            queue=queue, payload=payload, delay=delay, run_at=run_at, key=key, max_attempts=max_attempts,
            retry=retry, timeout=timeout, misfire=misfire, misfire_grace=misfire_grace, on_conflict=on_conflict,
            debounce=debounce, max_wait=max_wait,
        )
        return (await self._enqueue(spec, connection)).job_id

    @with_database_errors
    async def enqueue_spec(self, spec: JobSpec, *, connection: Connection | None = None) -> int:
        """Store a one-shot job built beforehand; it is checked again as a new one would be."""
        if not isinstance(spec, JobSpec):
            raise wrong_type("spec", "a JobSpec", spec)
        return (await self._enqueue(revalidated(spec)[0], connection)).job_id

    async def _enqueue(self, spec: JobSpec, connection: Connection | None) -> job_store.Enqueued:
        check_connection(connection)
        payload = spec.encoded_payload()
        with tracing.enqueue_span(spec.queue) as trace:
            if connection is not None:
                stored = await job_store.enqueue(connection, spec, payload, trace)
            else:
                async with self.pool.acquire() as conn:
                    stored = await job_store.enqueue(conn, spec, payload, trace)
        if stored.created:
            count_enqueued(spec.queue)
        return stored

    @with_database_errors
    async def enqueue_many(
        self,
        jobs: Iterable[JobSpec | Mapping[str, Any]],
        *,
        connection: Connection | None = None,
    ) -> list[int]:
        """Store many one-shot jobs in one transaction; ids in input order. Each item is a JobSpec
        or a mapping of ``enqueue``'s keyword arguments (``queue`` and ``payload`` included).
        Every item is validated; one bad item raises InvalidJobError (naming its index) and
        nothing is stored. With ``connection``, the jobs are written in its current transaction
        (a failure rolls back only this call's savepoint)."""
        check_connection(connection)
        items = listed(jobs, "jobs", "an iterable of JobSpecs or mappings")
        if not items:
            return []
        first = prepare_item(0, items[0])
        # The rest are validated while the first ones stream to Postgres (COPY).
        prepared = itertools.chain((first,), (prepare_item(i, item) for i, item in enumerate(items[1:], start=1)))
        with tracing.enqueue_span(first[0].queue) as trace:
            if connection is not None:
                stored = await job_store.enqueue_many(connection, prepared, len(items), trace)
            else:
                async with self.pool.acquire() as conn:
                    stored = await job_store.enqueue_many(conn, prepared, len(items), trace)
        created = Counter(stored.queues)
        created.subtract(stored.queues[i] for i in stored.existing)
        for queue, n in created.items():
            if n:
                count_enqueued(queue, n)
        return stored.ids

    @with_database_errors
    async def schedule(
        self,
        queue: str,
        payload: Any = None,
        *,
        cron: str,
        timezone: str = "UTC",
        misfire: Misfire = "run_once",
        misfire_grace: Delay | None = None,
        max_backfill: int | None = None,
        overlap: Overlap = "allow",
        jitter: Delay | None = None,
        key: str | None = None,
        max_attempts: int | None = None,
        retry: RetryPolicy | None = None,
        timeout: Delay | None = None,  # noqa: ASYNC109 - the job's handler timeout, not this call's
        connection: Connection | None = None,
    ) -> ScheduledJob:
        """Store a recurring job; returns its id (an ``int``) with its next three ticks in
        ``.next_ticks``. With ``key``, declaring it again (a redeploy) updates the existing job
        instead of adding one; a changed cron, zone or jitter applies from the next tick.
        ``misfire`` decides what happens to ticks more than ``misfire_grace`` late: ``skip``
        them, ``run_once`` (the latest), or ``backfill`` (each, up to ``max_backfill``).
        ``overlap="skip"`` skips a tick while the previous occurrence is still running.
        ``jitter`` makes each tick due up to that much after its nominal time (a fixed offset
        per job and tick), at most the shortest interval between two ticks."""
        spec = build_schedule(
            queue=queue, payload=payload, cron=cron, timezone=timezone, misfire=misfire,
            misfire_grace=misfire_grace, max_backfill=max_backfill, overlap=overlap, jitter=jitter,
            key=key, max_attempts=max_attempts, retry=retry, timeout=timeout,
        )
        check_connection(connection)
        if connection is not None:
            return await _scheduled(connection, spec.schedule(), await lifecycle.schedule(connection, spec))
        async with self.pool.acquire() as conn:
            return await _scheduled(conn, spec.schedule(), await lifecycle.schedule(conn, spec))

    @with_database_errors
    async def preview(
        self, cron: str, timezone: str = "UTC", count: int = 10, after: datetime | None = None
    ) -> list[CronTick]:
        """The next ``count`` ticks of ``cron`` in ``timezone`` after ``after`` (default: now, by
        the database's clock), computed as the timer computes them, storing nothing. Each tick
        has its UTC instant (``at``), its local time (``local``), the wall time the expression
        names (``wall``), and marks: ``gap`` (moved to the end of a DST gap) and ``fold`` (a wall
        time that happens twice, run once at its first instance)."""
        for name, value in (("cron", cron), ("timezone", timezone)):
            if not isinstance(value, str):
                raise wrong_type(name, "a string", value)
        schedule = parse_schedule(cron, timezone)
        count = check_int(count, "count", 1, MAX_PREVIEW)
        if after is None:
            async with self.pool.acquire() as conn:
                after = await db_now(conn)
        else:
            after = check_aware_time(after, "after", earliest=_EARLIEST_READ, latest=_LATEST_READ)
        return schedule.preview(after, count)

    @with_database_errors
    async def trigger(self, job_id: int) -> str:
        """Run a recurring job once now, besides its schedule; returns the run's idempotency
        key (``42@manual:2026-12-08T09:00:00.123456Z``). The run is in the job's tick ledger as a
        manual run; the next nominal tick is not moved. A paused job runs too. A cancelled job
        raises JobStateError, a one-shot job JobStateError, an unknown id JobNotFoundError."""
        job_id = check_job_id(job_id)
        async with self.pool.acquire() as conn:
            return await lifecycle.trigger(conn, job_id)

    @with_database_errors
    async def pause(self, job_id: int) -> bool:
        """Stop the job's future ticks until resume(); they are recorded as skipped (`paused`).
        True if this call paused it."""
        job_id = check_job_id(job_id)
        async with self.pool.acquire() as conn:
            return await lifecycle.pause(conn, job_id)

    @with_database_errors
    async def resume(self, job_id: int) -> bool:
        """Resume a paused job from its next tick. True if this call resumed it."""
        job_id = check_job_id(job_id)
        async with self.pool.acquire() as conn:
            return await lifecycle.resume(conn, job_id)

    @with_database_errors
    async def pause_queue(self, queue: str) -> bool:
        """Dispatch nothing more of ``queue`` until :meth:`resume_queue`: its due occurrences
        wait in Postgres, none is lost, and occurrences already dispatched run to their end.
        True if this call paused it."""
        queue = check_queue_name(queue)
        async with self.pool.acquire() as conn:
            return await queue_controls.pause(conn, queue)

    @with_database_errors
    async def resume_queue(self, queue: str) -> bool:
        """Dispatch the queue's occurrences again, those that came due while it was paused
        first (recurring jobs' missed ticks follow their misfire policy). True if this call
        resumed it."""
        queue = check_queue_name(queue)
        async with self.pool.acquire() as conn:
            return await queue_controls.resume(conn, queue)

    @with_database_errors
    async def set_queue_limits(self, queue: str, *, max_running: int | None = None,
                               rate: Rate | tuple[int, Delay] | None = None) -> None:
        """Limit the queue across every timer and worker: at most ``max_running`` of its
        occurrences between dispatch and outcome at any instant, and at most ``rate`` =
        ``(count, period)`` dispatches in any window of ``period``, by the database's clock.
        Replaces the queue's limits; ``None`` lifts a limit."""
        queue = check_queue_name(queue)
        limits = check_limits(max_running, rate)
        async with self.pool.acquire() as conn:
            await queue_controls.set_limits(conn, queue, limits)

    @with_database_errors
    async def reschedule(
        self, job_id: int, *, cron: str | None = None, timezone: str | None = None, run_at: datetime | None = None
    ) -> None:
        """A new cron expression (or zone) for a recurring job, or a new run time for a one-shot
        job not yet dispatched. Applies from the next tick."""
        job_id = check_job_id(job_id)
        if run_at is not None:
            run_at = check_aware_time(run_at, "run_at", earliest=EARLIEST_RUN_AT, latest=LATEST_RUN_AT)
        for name, value in (("cron", cron), ("timezone", timezone)):
            if value is not None and not isinstance(value, str):
                raise wrong_type(name, "a string", value)
        async with self.pool.acquire() as conn:
            await lifecycle.reschedule(conn, job_id, cron=cron, timezone=timezone, run_at=run_at)

    @with_database_errors
    async def ticks(self, job_id: int, *, since: datetime | None = None, limit: int = 1000) -> list[TickView]:
        """The job's tick ledger: every nominal tick since ``since`` and what happened to it."""
        job_id, limit = check_job_id(job_id), check_limit(limit)
        if since is not None:
            since = check_aware_time(since, "since", earliest=_EARLIEST_READ, latest=_LATEST_READ)
        async with self.pool.acquire() as conn:
            if not await job_store.job_exists(conn, job_id):
                raise JobNotFoundError(job_id)
            return await load_ticks(conn, job_id, since, limit)

    @with_database_errors
    async def list_jobs(self, *, queue: str | None = None, state: str | None = None, limit: int = 100) -> list[JobSummary]:
        """Jobs, newest first, optionally of one queue and in one state (active, paused, cancelled)."""
        if queue is not None:
            check_queue_name(queue)
        if state is not None and state not in JOB_STATES:
            raise InvalidJobError("state", f"must be one of {', '.join(JOB_STATES)}")
        limit = check_limit(limit)
        async with self.pool.acquire() as conn:
            return await load_summaries(conn, queue, state, limit)

    @with_database_errors
    async def get(self, job_id: int) -> JobView:
        """The job, every occurrence and its attempts. Raises JobNotFoundError."""
        job_id = check_job_id(job_id)
        async with self.pool.acquire() as conn:
            view = await load_job(conn, job_id)
        if view is None:
            raise JobNotFoundError(job_id)
        return view

    @with_database_errors
    async def status(self, window: timedelta = timedelta(minutes=5)) -> list[QueueStatus]:
        """Per queue: scheduled, due and in-flight occurrences now; outcomes, failed attempts and
        start lateness (p50/p99, seconds) over the last ``window``."""
        window = to_duration(window, "window", maximum=MAX_DURATION, positive=True)
        async with self.pool.acquire() as conn:
            rows = await reads.queue_status(conn, window)
        return [
            QueueStatus(
                **{k: v for k, v in dict(r).items() if not k.startswith("lateness")},
                lateness_p50_s=r["lateness_p50"],
                lateness_p99_s=r["lateness_p99"],
            )
            for r in rows
        ]

    @with_database_errors
    async def summary(self, job_ids: list[int]) -> dict[str, Any]:
        """How a set of jobs ended: counts by terminal state, still pending, retried, and the
        start lateness of first attempts in seconds (p50, p99, max)."""
        job_ids = [check_job_id(job_id, "job_ids") for job_id in listed(job_ids, "job_ids", "a list of job ids")]
        async with self.pool.acquire() as conn:
            return dict(await reads.outcome_summary(conn, job_ids))

    @with_database_errors
    async def cancel(self, job_id: int) -> bool:
        """Cancel the job and every occurrence that has not ended. True if this call cancelled
        it; False if it was already cancelled. Raises JobNotFoundError."""
        job_id = check_job_id(job_id)
        for attempt in range(DEADLOCK_RETRIES):
            try:
                async with self.pool.acquire() as conn, conn.transaction():
                    cancelled, _ = await job_store.cancel(conn, job_id)
                    if not cancelled and not await job_store.job_exists(conn, job_id):
                        raise JobNotFoundError(job_id)
                return cancelled
            except asyncpg.DeadlockDetectedError:
                # Postgres chose this transaction to break a lock cycle; nothing was changed.
                if attempt == DEADLOCK_RETRIES - 1:
                    raise
        raise AssertionError("unreachable")


async def _scheduled(conn: Connection, cron: CronSchedule, job_id: int) -> ScheduledJob:
    """The job's id with its next ticks: from its pending tick (its head) on."""
    head = await schedule_store.head(conn, job_id)
    start = head["fire_at"] - _MICROSECOND if head is not None else await db_now(conn)
    return ScheduledJob(job_id, cron.preview(start, NEXT_TICKS))
