"""Testing helpers: run a handler without a broker, and assert on what was enqueued.

What rivertest and Oban.Testing users expect, so that a handler's test needs Postgres only::

    result = await run_inline(worker, "emails.send", {"to": "a@b.c"}, database_url=url)
    assert result.outcome == "succeeded", result.error
    await assert_enqueued(url, "emails.send", payload={"to": "a@b.c"})

In a conftest, ``from chronoq.testing import chronoq_producer`` gives tests an open ``Producer``
on ``CHRONOQ_DATABASE_URL``, or on the URL of a ``chronoq_database_url`` fixture if one is defined.
Nothing here logs: payloads appear only in the assertion messages a test asks for.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import asyncpg
import orjson
from pydantic import ValidationError

from chronoq._store import inline
from chronoq._store.connection import Connection, connect
from chronoq.consumer.context import JobContext
from chronoq.consumer.outcome import Ending, ending_of
from chronoq.consumer.registry import Handler, Worker
from chronoq.errors import UnknownQueueError
from chronoq.producer import Producer
from chronoq.producer.views import load_job, load_summaries
from chronoq.schemas.job import DEFAULT_TIMEOUT
from chronoq.schemas.payload import encode_payload
from chronoq.schemas.views import JobSummary, JobView

Target = str | Producer | asyncpg.Pool | Connection
#: States in which a job may still run: the default filter of assert_enqueued / refute_enqueued.
PENDING = frozenset({"scheduled", "dispatched", "retrying", "deferred", "active", "paused"})
#: Jobs of one queue read per assertion (the newest ones).
LIST_LIMIT = 1000
_SHOWN = 20


@dataclass(frozen=True)
class InlineResult:
    """How an inline run ended. ``outcome`` is the worker's own verdict on a run (a string enum:
    ``"succeeded"``, ``"failed"``, ``"timeout"``, ``"invalid_result"``, ``"retry"``,
    ``"cancelled"``, ``"invalid_payload"``); ``error`` is the exception the handler raised
    (``Retry`` and ``Cancel`` included), the one that kept its result from being stored, or the
    payload's ``ValidationError``; ``value`` is the handler's return."""

    value: Any
    error: BaseException | None
    outcome: Ending
    idempotency_key: str


def _default_database_url() -> str:
    # The URL ``Producer()`` uses when given none, so tests and application agree.
    from chronoq._runtime.config import Settings

    return Settings.load().database_url


async def run_inline(
    worker: Worker,
    queue: str,
    payload: Any,
    *,
    database_url: str | None = None,
    connection: Connection | None = None,
    job_id: int = 0,
    attempt: int = 1,
    max_attempts: int = 1,
    fire_at: datetime | None = None,
    rollback: bool = False,
) -> InlineResult:
    """Run ``worker``'s handler for ``queue`` once, as a worker would, without RabbitMQ.

    The payload goes through JSON and the handler's annotation (a payload that does not validate
    ends ``invalid_payload`` without running), and ``ctx.db`` is a real connection inside a
    transaction, the handler in a savepoint of its own. Success commits its writes (``rollback=True``
    discards them to keep the database clean); any exception rolls them back and is returned, not
    raised. With ``connection``, everything happens in a savepoint of its current transaction (or
    a transaction of its own if none is open), and the connection's own codecs stay as they are;
    otherwise a connection to ``database_url`` (default: as ``Producer()``) is opened and closed.
    The database needs chronoq's schema (``chronoq migrate``): the idempotency key is made by the
    function that makes the wheel's.
    """
    handler = worker.get(queue)
    if handler is None:
        raise UnknownQueueError(f"no handler for queue {queue!r}; registered: {', '.join(worker.queues) or 'none'}")
    if database_url is not None and connection is not None:
        raise ValueError("pass database_url or connection, not both")
    fire_at = datetime.now(UTC) if fire_at is None else fire_at
    if fire_at.tzinfo is None:
        raise ValueError("fire_at must carry a time zone")
    run = _Run(handler, queue, job_id, fire_at.astimezone(UTC), attempt, max_attempts, rollback)
    if connection is not None:
        return await run.on(connection, payload)
    conn = await connect(database_url or _default_database_url(), application_name="chronoq-testing")
    try:
        return await run.on(conn, payload)
    finally:
        await conn.close()


class _Discard(Exception):
    """Unwinds the outer transaction (rolling it back) and carries the result out."""

    def __init__(self, result: InlineResult) -> None:
        super().__init__(result.outcome)
        self.result = result


@dataclass(frozen=True)
class _Run:
    handler: Handler
    queue: str
    job_id: int
    fire_at: datetime
    attempt: int
    max_attempts: int
    rollback: bool

    async def on(self, conn: Connection, payload: Any) -> InlineResult:
        key = await inline.occurrence_key(conn, self.job_id, self.fire_at)
        try:
            parsed = self.handler.parse(orjson.loads(encode_payload(payload)))  # what enqueue stores, a worker reads
        except ValidationError as exc:
            return InlineResult(None, exc, Ending.INVALID_PAYLOAD, key)
        ctx = JobContext(job_id=self.job_id, queue=self.queue, fire_at=self.fire_at, run_at=self.fire_at,
                         attempt=self.attempt, max_attempts=self.max_attempts, idempotency_key=key,
                         db=cast(asyncpg.Connection, conn))
        try:
            async with conn.transaction():
                result = await self._handle(conn, ctx, parsed)
                if self.rollback or result.outcome is not Ending.SUCCEEDED:
                    raise _Discard(result)
        except _Discard as discard:
            return discard.result
        return result

    async def _handle(self, conn: Connection, ctx: JobContext, parsed: Any) -> InlineResult:
        """Run the handler in a savepoint, as a worker does, and say how it ended in the worker's
        terms (consumer/outcome.py)."""
        timeout = (self.handler.timeout or DEFAULT_TIMEOUT).total_seconds()
        returned = False
        try:
            # The savepoint's release fails if the handler swallowed a database error and left
            # the transaction aborted: a failed attempt, as in a worker (a COMMIT would not say).
            async with conn.transaction():
                value = await asyncio.wait_for(self.handler.fn(ctx, parsed), timeout)
                returned = True
                if value is not None:
                    encode_payload(value, field="result")  # a worker stores it: must be JSON
        except Exception as exc:
            return InlineResult(None, exc, ending_of(exc, returned=returned), ctx.idempotency_key)
        return InlineResult(value, None, Ending.SUCCEEDED, ctx.idempotency_key)


class _InCallersTransaction:
    """``load_job`` reads in a repeatable-read snapshot of its own, which cannot nest in a
    transaction the caller holds open (where the jobs under test may still be uncommitted);
    this hands it the caller's connection with ``transaction()`` a no-op, so it reads there."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def transaction(self, **_: Any) -> contextlib.nullcontext[None]:
        return contextlib.nullcontext()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


async def _jobs(target: Target, queue: str | None, *, full: bool = True) -> list[JobView] | list[JobSummary]:
    """The jobs on ``queue`` (every queue if None), oldest first, through the producer's reads;
    ``full=False``: their summaries only (no payload, one query)."""
    if isinstance(target, str | asyncpg.Pool):
        async with Producer(target) if isinstance(target, str) else Producer(pool=target) as producer:
            return await _jobs(producer, queue, full=full)
    if isinstance(target, Producer):
        summaries = list(reversed(await target.list_jobs(queue=queue, limit=LIST_LIMIT)))
        return [await target.get(s.id) for s in summaries] if full else summaries
    conn = target  # a connection, perhaps without chronoq's jsonb codec and inside a transaction
    summaries = list(reversed(await load_summaries(conn, queue, None, LIST_LIMIT)))
    if not full:
        return summaries
    reader = cast(asyncpg.Connection, _InCallersTransaction(conn)) if conn.is_in_transaction() else conn
    views = [view for s in summaries if (view := await load_job(reader, s.id)) is not None]
    if views and await inline.decodes_jsonb_as_text(conn):  # asyncpg's default
        views = [v.model_copy(update={"payload": orjson.loads(v.payload)}) for v in views]
    return views


def _matches(view: JobView, payload: Any, key: str | None, kind: str | None, states: Collection[str] | None) -> bool:
    if (key is not None and view.key != key) or (kind is not None and view.kind != kind):
        return False
    if states is not None and view.state not in states:
        return False
    if payload is None:
        return True
    if isinstance(payload, dict):  # a subset: every key given must be there and equal
        return isinstance(view.payload, dict) and all(k in view.payload and view.payload[k] == v for k, v in payload.items())
    return bool(view.payload == payload)


def _describe(views: list[JobView]) -> str:
    lines = [f"  #{v.id} {v.kind} {v.state} key={v.key!r} payload={orjson.dumps(v.payload).decode()[:200]}"
             for v in views[:_SHOWN]]
    if len(views) > _SHOWN:
        lines.append(f"  ... and {len(views) - _SHOWN} more")
    return "\n".join(lines)


async def _select(target: Target, queue: str, payload: Any, key: str | None, kind: str | None,
                  state: str | Collection[str] | None) -> tuple[list[JobView], list[JobView], str]:
    if payload is not None:
        payload = orjson.loads(encode_payload(payload))  # compare as stored: models dumped, tuples as lists
    states = {state} if isinstance(state, str) else state
    everything = cast(list[JobView], await _jobs(target, queue))
    found = [v for v in everything if _matches(v, payload, key, kind, states)]
    given = (("payload", payload), ("key", key), ("kind", kind))
    wanted = [f"queue={queue!r}", *(f"{n}={v!r}" for n, v in given if v is not None)]
    if states is not None:
        wanted.append("not finished" if states is PENDING else f"state in {sorted(states)}")
    return everything, found, ", ".join(wanted)


async def _queues_elsewhere(target: Target) -> str:
    queues = sorted({s.queue for s in await _jobs(target, None, full=False)})
    return f"Nothing is enqueued on that queue; queues with jobs: {', '.join(queues) or 'none'}"


async def assert_enqueued(
    target: Target, queue: str, *, payload: Any = None, key: str | None = None, kind: str | None = None,
    count: int | None = None, state: str | Collection[str] | None = PENDING,
) -> list[JobView]:
    """Return the jobs on ``queue`` matching every filter given (``payload``: a dict matches as a
    subset, anything else exactly; ``state``: by default jobs that may still run, None for any).
    Raises AssertionError listing what is on the queue if none match, or not ``count`` of them.
    ``target`` is a database URL, a Producer, a pool or a connection (its open transaction is seen)."""
    everything, found, wanted = await _select(target, queue, payload, key, kind, state)
    if (count is None and found) or (count is not None and len(found) == count):
        return found
    expected = "a job" if count is None else f"{count} job(s)"
    seen = f"Jobs on {queue!r} ({len(everything)}):\n{_describe(everything)}" if everything else await _queues_elsewhere(target)
    raise AssertionError(f"expected {expected} matching {wanted}, found {len(found)}.\n{seen}")


async def refute_enqueued(
    target: Target, queue: str, *, payload: Any = None, key: str | None = None, kind: str | None = None,
    state: str | Collection[str] | None = PENDING,
) -> None:
    """Raise AssertionError, listing them, if any job on ``queue`` matches the filters."""
    _, found, wanted = await _select(target, queue, payload, key, kind, state)
    if found:
        raise AssertionError(f"expected no job matching {wanted}, found {len(found)}:\n{_describe(found)}")


try:  # the fixtures need pytest; everything above works without it
    import pytest
    import pytest_asyncio
except ImportError:  # pragma: no cover - exercised only where pytest is absent
    pass
else:

    @pytest.fixture
    def chronoq_database_url() -> str:
        """The database ``chronoq_producer`` opens: override this fixture to point elsewhere."""
        return _default_database_url()

    # pytest-asyncio's types accept async fixtures only; this one is synchronous (see its docstring).
    @pytest_asyncio.fixture  # type: ignore[type-var]
    def chronoq_producer(request: pytest.FixtureRequest) -> Iterator[Producer]:
        """An open Producer on ``chronoq_database_url`` (if defined where the test is) or else on
        ``CHRONOQ_DATABASE_URL``. The URL is looked up by name, not as a parameter, so importing
        this fixture alone works; and it is looked up in this synchronous body, where
        pytest-asyncio can still set up an async fixture the override depends on (inside a running
        loop it cannot). The pool is opened and closed on the loop pytest-asyncio gives fixtures."""
        try:
            url = request.getfixturevalue("chronoq_database_url")
        except pytest.FixtureLookupError:
            url = _default_database_url()
        loop = asyncio.get_event_loop()
        producer = Producer(url)
        loop.run_until_complete(producer.open())
        try:
            yield producer
        finally:
            loop.run_until_complete(producer.close())
