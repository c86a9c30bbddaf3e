"""Bulk enqueue: keyless jobs go in with COPY, keyed ones through INSERT ... ON CONFLICT, all in
one transaction; everything stored is exactly what a single enqueue would have stored."""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime, timedelta
from typing import ClassVar

import asyncpg
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, model_serializer

from chronoq import InvalidJobError, JobContext, Producer, RetryPolicy, Worker
from chronoq._runtime.hooks import Hooks
from chronoq.consumer.service import WorkerService
from chronoq.schemas import payload as payload_module
from chronoq.timer import Timer
from tests.harness import all_finished, running

# Text that the COPY encoding must carry unchanged: escapes, quotes, control and non-ASCII text.
AWKWARD = {"text": 'tab\there "quoted" back\\slash\nnew line é 雪 😀', "n": [1, -2.5, None, True], "e": {}}


class Text(str):
    pass


SCALARS = st.none() | st.booleans() | st.integers(-(2**65), 2**65) | st.floats() | st.text() | st.builds(Text, st.text()) \
    | st.sampled_from(["a\x00", "\ud800", b"bytes", {1, 2}])
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner)
                      | st.dictionaries(st.text() | st.integers(0, 3) | st.sampled_from(["k\x00", "\udc00"]), inner, max_size=4),
                      max_leaves=30)


@given(VALUES)
def test_the_fast_payload_check_never_accepts_what_the_full_check_refuses(value) -> None:
    try:
        payload_module._check(value, "payload", 0)
        accepted = True
    except InvalidJobError:
        accepted = False
    assert accepted or not payload_module._plain(value, 0)


def test_the_fast_payload_check_knows_the_depth_limit() -> None:
    for depth in (63, 64, 65):
        value: object = 1
        for _ in range(depth):
            value = [value]
        assert payload_module._plain(value, 0) is (depth <= 64) is _accepted(value)


def _accepted(value: object) -> bool:
    try:
        payload_module.encode_payload(value)
    except InvalidJobError:
        return False
    return True


async def _stored(db: asyncpg.Connection) -> tuple[int, int]:
    return (await db.fetchval("SELECT count(*) FROM chronoq.jobs"), await db.fetchval("SELECT count(*) FROM chronoq.wheel"))


async def test_a_large_keyless_batch_is_stored_whole_and_runs_end_to_end(settings, producer: Producer, db) -> None:
    worker = Worker()
    ran: list[int] = []

    @worker.handler("bulk")
    async def bulk(ctx: JobContext, payload: dict) -> None:
        ran.append(payload["i"])

    jobs = 20_000
    ids = await producer.enqueue_many({"queue": "bulk", "payload": {"i": i}, "delay": 1} for i in range(jobs))
    assert len(set(ids)) == jobs
    assert await _stored(db) == (jobs, jobs)
    # What COPY wrote is what the single enqueue's SQL would have: the occurrence key from the
    # database's own function, the due time from its clock (the transaction's now() + delay).
    wrong = await db.fetchval(
        """SELECT count(*) FROM chronoq.wheel w JOIN chronoq.jobs j ON j.id = w.job_id
           WHERE w.occurrence_key <> chronoq.occurrence_key(w.job_id, w.fire_at)
              OR w.due_at <> j.created_at + interval '1 second' OR w.run_at <> w.due_at OR w.fire_at <> w.due_at
              OR NOT w.head OR w.attempt <> 1 OR w.queue <> j.queue OR j.kind <> 'once' OR j.key IS NOT NULL"""
    )
    assert wrong == 0
    async with running(Timer(settings)), running(WorkerService(worker, settings)):
        summary = await all_finished(producer, ids, timeout=240)
    assert summary["succeeded"] == jobs
    assert sorted(ran) == list(range(jobs))


async def test_copied_jobs_keep_their_options_payload_and_trace_free_columns(producer: Producer, db) -> None:
    at = datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    retry = RetryPolicy(max_attempts=7, backoff_base=timedelta(milliseconds=1500), backoff_cap=timedelta(minutes=2),
                        jitter=0.35)
    [job_id] = await producer.enqueue_many([
        {"queue": "opts", "payload": AWKWARD, "run_at": at, "retry": retry, "timeout": 12.5, "misfire": "skip",
         "misfire_grace": timedelta(seconds=42)}
    ])
    single = await producer.enqueue("opts", AWKWARD, run_at=at, retry=retry, timeout=12.5, misfire="skip",
                                    misfire_grace=timedelta(seconds=42))
    columns = "queue, kind, state, key, payload, max_attempts, backoff_base_ms, backoff_cap_ms, jitter, timeout_ms, " \
              "misfire, misfire_grace_ms, trace"
    bulk_row = await db.fetchrow(f"SELECT {columns} FROM chronoq.jobs WHERE id = $1", job_id)
    single_row = await db.fetchrow(f"SELECT {columns} FROM chronoq.jobs WHERE id = $1", single)
    assert dict(bulk_row) == dict(single_row)
    assert orjson.loads(bulk_row["payload"]) == AWKWARD
    occurrence = await db.fetchrow("SELECT occurrence_key, fire_at, due_at FROM chronoq.wheel WHERE job_id = $1", job_id)
    assert occurrence["occurrence_key"] == f"{job_id}@2031-05-06T07:08:09.123456Z"
    assert occurrence["fire_at"] == occurrence["due_at"] == at


async def test_a_mixed_batch_of_keyed_and_keyless_jobs_with_a_duplicate_key(producer: Producer, db) -> None:
    existing = await producer.enqueue("mixed", {"v": "first"}, key="k-1", delay=60)
    items = []
    for i in range(3000):
        items.append({"queue": "mixed", "payload": {"i": i}, "delay": 60})
        if i == 1000:
            items.append({"queue": "mixed", "payload": {"v": "dup"}, "key": "k-1"})  # already stored
        if i in (1500, 2500):
            items.append({"queue": "mixed", "payload": {"v": i}, "key": "k-2"})  # twice in the batch
    ids = await producer.enqueue_many(items)
    assert len(ids) == len(items) == 3003
    assert ids[1001] == existing
    assert ids[1502] == ids[2503] != existing
    keyless = [job_id for job_id, item in zip(ids, items, strict=True) if "key" not in item]
    assert len(set(keyless)) == 3000 and existing not in keyless and ids[1502] not in keyless
    payloads = dict(await db.fetch("SELECT id, payload->>'i' FROM chronoq.jobs WHERE key IS NULL"))
    assert [payloads[job_id] for job_id in keyless] == [str(i) for i in range(3000)]
    assert await db.fetchval("SELECT payload->>'v' FROM chronoq.jobs WHERE key = 'k-1'") == "first"
    assert await db.fetchval("SELECT payload->>'v' FROM chronoq.jobs WHERE key = 'k-2'") == "1500"
    assert await _stored(db) == (3002, 3002)


@pytest.mark.parametrize(("bad", "field"), [
    pytest.param({"queue": "ok", "payload": {"x": math.nan}}, "payload.x", id="payload"),
    pytest.param({"queue": "amq.bad", "payload": {}}, "queue", id="queue"),
    pytest.param({"queue": "ok", "payload": {}, "key": "a\x00b"}, "key", id="key"),
    pytest.param({"queue": "ok", "payload": {}, "delay": -1}, "delay", id="delay"),
])
async def test_a_bad_job_in_the_middle_stores_nothing(producer: Producer, db, bad, field) -> None:
    good = [{"queue": "ok", "payload": {"i": i}, "key": f"k{i}" if i % 100 == 0 else None} for i in range(4000)]
    with pytest.raises(InvalidJobError) as caught:
        await producer.enqueue_many([*good[:2500], bad, *good[2500:]])
    assert caught.value.field == field
    assert "item 2500 of the batch" in str(caught.value)
    assert await _stored(db) == (0, 0)


class Signal(BaseModel):
    """A payload that says when the bulk enqueue's encoder reaches it (payload models are dumped
    as they are encoded, part by part)."""

    reached: ClassVar[asyncio.Event]
    n: int

    @model_serializer
    def _dump(self) -> dict:
        Signal.reached.set()
        return {"n": self.n}


async def test_a_bulk_enqueue_cancelled_while_parts_are_being_written_stores_nothing(producer: Producer, settings,
                                                                                    db) -> None:
    Signal.reached = asyncio.Event()
    items = [{"queue": "ok", "payload": {"i": i}} for i in range(20_000)]
    items[6000] = {"queue": "ok", "payload": Signal(n=6000)}  # by then, earlier parts are in Postgres
    conn = await asyncpg.connect(settings.database_url)
    try:
        enqueuing = asyncio.create_task(producer.enqueue_many(items, connection=conn))
        await Signal.reached.wait()
        enqueuing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await enqueuing
        assert await conn.fetchval("SELECT 1") == 1  # no COPY left half-way on the connection
        assert not conn.is_in_transaction()
    finally:
        await conn.close()
    assert await _stored(db) == (0, 0)


async def test_a_rolled_back_caller_transaction_stores_nothing(producer: Producer, settings, db) -> None:
    # The caller's own connection, without chronoq's codecs (jsonb comes back as text).
    conn = await asyncpg.connect(settings.database_url)
    try:
        await conn.execute("CREATE TABLE orders (id int PRIMARY KEY)")
        with pytest.raises(RuntimeError, match="order failed"):
            async with conn.transaction():
                await conn.execute("INSERT INTO orders VALUES (1)")
                ids = await producer.enqueue_many(
                    [{"queue": "outbox", "payload": {"order": 1, "i": i}} for i in range(1000)]
                    + [{"queue": "outbox", "payload": {}, "key": "order-1"}], connection=conn)
                assert await conn.fetchval("SELECT count(*) FROM chronoq.wheel WHERE job_id = ANY($1)", ids) == 1001
                raise RuntimeError("order failed")
        assert await _stored(db) == (0, 0)

        # A bad job rolls back only the bulk enqueue: the caller's transaction goes on and commits.
        async with conn.transaction():
            await conn.execute("INSERT INTO orders VALUES (2)")
            with pytest.raises(InvalidJobError):
                await producer.enqueue_many([{"queue": "outbox", "payload": {}}] * 500 + [{"queue": "outbox", "payload": b"x"}],
                                            connection=conn)
            ids = await producer.enqueue_many([{"queue": "outbox", "payload": AWKWARD}] * 10, connection=conn)
        assert await db.fetchval("SELECT count(*) FROM orders") == 1
        assert await _stored(db) == (10, 10)
        assert orjson.loads(await db.fetchval("SELECT payload FROM chronoq.jobs WHERE id = $1", ids[0])) == AWKWARD
    finally:
        await conn.close()


class AsleepHooks(Hooks):
    """The timer's first backlog count comes with its first look at the next due time, after
    which it goes to sleep without yielding first."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    def due_backlog(self, rows: int) -> None:
        self.event.set()


async def test_a_bulk_enqueue_due_soon_wakes_a_sleeping_timer(settings, producer: Producer, db) -> None:
    notified: asyncio.Queue[str] = asyncio.Queue()
    await db.add_listener("chronoq_due", lambda *args: notified.put_nowait(args[3]))
    due = datetime.now(UTC) + timedelta(milliseconds=400)
    await producer.enqueue_many([{"queue": "soon", "payload": {}, "run_at": due + timedelta(seconds=i)} for i in range(500)])
    # One NOTIFY for the COPY, carrying the soonest due time (epoch milliseconds).
    soonest = await asyncio.wait_for(notified.get(), 5)
    assert abs(int(soonest) - due.timestamp() * 1000) <= 1
    await db.execute("DELETE FROM chronoq.jobs WHERE queue = 'soon'")  # no worker takes them

    worker = Worker()
    started = asyncio.Event()

    @worker.handler("wake")
    async def wake(ctx: JobContext, payload: dict) -> None:
        started.set()

    sleepy = settings.model_copy(update={"timer_max_idle": timedelta(seconds=60)})
    asleep = AsleepHooks()
    async with running(Timer(sleepy, hooks=asleep)), running(WorkerService(worker, sleepy)):
        await asyncio.wait_for(asleep.event.wait(), 30)  # found nothing due: sleeps up to 60 s
        [job_id] = await producer.enqueue_many([{"queue": "wake", "payload": {}, "delay": 0.2}])
        await asyncio.wait_for(started.wait(), 10)
        summary = await all_finished(producer, [job_id])
    assert summary["lateness_p50"] < 2, summary
