"""``Producer``: what a service uses to put jobs into chronoq.

It talks only to Postgres: an enqueue is one statement, so it can share the caller's own
transaction (``connection=``) and commit or vanish with the caller's writes.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, Literal

import asyncpg

from chronoq._runtime import tracing
from chronoq._runtime.hooks import count_enqueued
from chronoq._store import jobs as job_store
from chronoq._store import reads
from chronoq._store.connection import create_pool
from chronoq.errors import InvalidJobError, JobNotFoundError
from chronoq.producer import recurring
from chronoq.producer.views import load_job
from chronoq.schemas.job import JobSpec, RetryPolicy, build_spec, prepare_spec
from chronoq.schemas.policies import Misfire, Overlap
from chronoq.schemas.schedule import build_schedule
from chronoq.schemas.views import JobSummary, JobView, QueueStatus, TickView

Delay = timedelta | int | float
#: Tries of an operation that Postgres aborted to break a deadlock (it changed nothing).
DEADLOCK_RETRIES = 3


class Producer:
    """``async with Producer(database_url) as producer: await producer.enqueue(...)``.

    Pass ``pool=`` to share an existing asyncpg pool (its connections need no set-up).
    """

    def __init__(self, database_url: str | None = None, *, pool: asyncpg.Pool | None = None) -> None:
        if database_url is None and pool is None:
            from chronoq._runtime.config import Settings

            database_url = Settings.load().database_url
        self._url = database_url
        self._pool = pool
        self._owns_pool = pool is None

    async def __aenter__(self) -> "Producer":
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        if self._pool is None:
            assert self._url is not None
            self._pool = await create_pool(self._url, application_name="chronoq-producer", custom_plans=False)

    async def close(self) -> None:
        if self._owns_pool and self._pool is not None:
            await self._pool.close()
            self._pool = None

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("Producer is not open: use `async with Producer(...)` or await open()")
        return self._pool

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
        timeout: Delay | None = None,
        misfire: Literal["skip", "run_once"] | None = None,
        misfire_grace: Delay | None = None,
        connection: asyncpg.Connection | None = None,
    ) -> int:
        """Store a one-shot job; returns its id. With ``key``, a second enqueue of the same key on
        the same queue stores nothing and returns the first job's id. With ``connection``, the job
        is written in that connection's current transaction."""
        spec = build_spec(
            queue=queue, payload=payload, delay=_seconds(delay), run_at=run_at, key=key,
            max_attempts=max_attempts, retry=retry, timeout=_seconds(timeout, "timeout"),
            misfire=misfire, misfire_grace=_seconds(misfire_grace, "misfire_grace"),
        )
        return (await self._enqueue(spec, connection)).job_id

    async def enqueue_spec(self, spec: JobSpec, *, connection: asyncpg.Connection | None = None) -> int:
        return (await self._enqueue(spec, connection)).job_id

    async def _enqueue(self, spec: JobSpec, connection: asyncpg.Connection | None) -> job_store.Enqueued:
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

    async def enqueue_many(
        self,
        jobs: Iterable[JobSpec | Mapping[str, Any]],
        *,
        connection: asyncpg.Connection | None = None,
    ) -> list[int]:
        """Store many one-shot jobs in one transaction; ids in input order. Each item is a JobSpec
        or a mapping of ``enqueue``'s keyword arguments (``queue`` and ``payload`` included).
        Every item is validated; one bad item raises InvalidJobError (naming its index) and
        nothing is stored. With ``connection``, the jobs are written in its current transaction
        (a failure rolls back only this call's savepoint)."""
        items = list(jobs)
        if not items:
            return []
        first = _prepare(0, items[0])
        # The rest are validated while the first ones stream to Postgres (COPY).
        prepared = itertools.chain((first,), (_prepare(i, item) for i, item in enumerate(items[1:], start=1)))
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
        key: str | None = None,
        max_attempts: int | None = None,
        retry: RetryPolicy | None = None,
        timeout: Delay | None = None,
        connection: asyncpg.Connection | None = None,
    ) -> int:
        """Store a recurring job; returns its id. With ``key``, declaring it again (a redeploy)
        updates the existing job instead of adding one; a changed cron or zone applies from the
        next tick. ``misfire`` decides what happens to ticks more than ``misfire_grace`` late:
        ``skip`` them, ``run_once`` (the latest), or ``backfill`` (each, up to ``max_backfill``).
        ``overlap="skip"`` skips a tick while the previous occurrence is still running."""
        spec = build_schedule(
            queue=queue, payload=payload, cron=cron, timezone=timezone, misfire=misfire,
            misfire_grace=_seconds(misfire_grace, "misfire_grace"), max_backfill=max_backfill, overlap=overlap,
            key=key, max_attempts=max_attempts, retry=retry, timeout=_seconds(timeout, "timeout"),
        )
        if connection is not None:
            return await recurring.schedule(connection, spec)
        async with self.pool.acquire() as conn:
            return await recurring.schedule(conn, spec)

    async def pause(self, job_id: int) -> bool:
        """Stop the job's future ticks until resume(); they are recorded as skipped (`paused`).
        True if this call paused it."""
        async with self.pool.acquire() as conn:
            return await recurring.pause(conn, job_id)

    async def resume(self, job_id: int) -> bool:
        """Resume a paused job from its next tick. True if this call resumed it."""
        async with self.pool.acquire() as conn:
            return await recurring.resume(conn, job_id)

    async def reschedule(
        self, job_id: int, *, cron: str | None = None, timezone: str | None = None, run_at: datetime | None = None
    ) -> None:
        """A new cron expression (or zone) for a recurring job, or a new run time for a one-shot
        job not yet dispatched. Applies from the next tick."""
        if run_at is not None:
            run_at = build_spec(queue="reschedule", run_at=run_at).run_at
        async with self.pool.acquire() as conn:
            await recurring.reschedule(conn, job_id, cron=cron, timezone=timezone, run_at=run_at)

    async def ticks(self, job_id: int, *, since: datetime | None = None, limit: int = 1000) -> list[TickView]:
        """The job's tick ledger: every nominal tick since ``since`` and what happened to it."""
        async with self.pool.acquire() as conn:
            if not await job_store.job_exists(conn, job_id):
                raise JobNotFoundError(job_id)
            return await recurring.ticks(conn, job_id, since, limit)

    async def list_jobs(self, *, queue: str | None = None, state: str | None = None, limit: int = 100) -> list[JobSummary]:
        async with self.pool.acquire() as conn:
            return await recurring.list_jobs(conn, queue, state, limit)

    async def get(self, job_id: int) -> JobView:
        """The job, every occurrence and its attempts. Raises JobNotFoundError."""
        async with self.pool.acquire() as conn:
            view = await load_job(conn, job_id)
        if view is None:
            raise JobNotFoundError(job_id)
        return view

    async def status(self, window: timedelta = timedelta(minutes=5)) -> list[QueueStatus]:
        """Per queue: scheduled, due and in-flight occurrences now; outcomes, failed attempts and
        start lateness (p50/p99, seconds) over the last ``window``."""
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

    async def summary(self, job_ids: list[int]) -> dict[str, Any]:
        """How a set of jobs ended: counts by terminal state, still pending, retried, and the
        start lateness of first attempts in seconds (p50, p99, max)."""
        async with self.pool.acquire() as conn:
            return dict(await reads.outcome_summary(conn, job_ids))

    async def cancel(self, job_id: int) -> bool:
        """Cancel the job and every occurrence that has not ended. True if this call cancelled
        it; False if it was already cancelled. Raises JobNotFoundError."""
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


def _seconds(value: Delay | None, field: str = "delay") -> timedelta | float | None:
    if isinstance(value, bool):
        raise InvalidJobError(field, "a duration must be a timedelta or a number of seconds, not bool")
    return value


def _prepare(index: int, item: JobSpec | Mapping[str, Any]) -> tuple[JobSpec, bytes]:
    """An item of a bulk enqueue, validated, with its payload encoded."""
    try:
        if isinstance(item, JobSpec):
            return item, item.encoded_payload()
        fields = dict(item)
        for name in ("delay", "timeout"):
            if name in fields:
                fields[name] = _seconds(fields[name], name)
        return prepare_spec(**fields)
    except InvalidJobError as exc:
        raise InvalidJobError(exc.field, f"{exc.message} (item {index} of the batch)") from None
