"""Fuzzing the entry points: one bad input must never stop the fleet.

Hypothesis draws valid and hostile values for every entry point (``fuzz_strategies.py``), and
each property holds on real Postgres and RabbitMQ: a call, a submission or a command line is
either stored exactly as it was given, or refused with a typed error that names the field and
repeats at most a short prefix of any value, with nothing stored; the timer and the workers keep
running, and a job enqueued afterwards runs on time.

Bounded in CI, long on demand: ``CHRONOQ_FUZZ_EXAMPLES`` (default 200) is the number of examples
of each Python API property; the end-to-end property publishes one batch of up to 12 submissions
per eighth of it (at least 3 batches), and the command-line property runs an eighth of it (at
least 4). The default takes about 30 s here; a long run, about 9 minutes:

    CHRONOQ_FUZZ_EXAMPLES=5000 CHRONOQ_TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
        CHRONOQ_TEST_AMQP_URL=amqp://guest:guest@127.0.0.1:5672/ python -m pytest -p no:cacheprovider tests/test_fuzz.py

The minimal inputs of the bugs these properties found stay at the end of this file as plain
regression tests. A finding not fixed yet is pinned there as a strict xfail with its minimal
input, and the property steps around exactly that input until it is fixed (a strategy narrowed
by a constant that names the test), so that the rest of its domain
stays checked; the fix turns the xfail into a failure that says to widen the strategy again.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import os
import traceback
import uuid
from collections import Counter
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import aio_pika
import asyncpg
import orjson
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from chronoq import InvalidJobError, JobContext, Producer, RetryPolicy, Worker
from chronoq.cli import main as cli_main
from chronoq.consumer.service import WorkerService
from chronoq.errors import ChronoqError
from chronoq.schemas.job import build_spec
from chronoq.schemas.schedule import build_schedule
from chronoq.schemas.submission import parse_submission
from chronoq.timer import Timer
from tests.conftest import _management
from tests.fuzz_strategies import (
    KEY_MAX,
    Call,
    CommandLine,
    KeySlot,
    Stamp,
    Submission,
    as_stored,
    calls,
    command_lines,
    compact,
    hostile_choices,
    hostile_delays,
    hostile_durations,
    hostile_keys,
    hostile_payloads,
    hostile_queue_names,
    hostile_retries,
    hostile_run_ats,
    hostile_timeouts,
    names_a_hostile_argument,
    strings_in,
    submissions,
)
from tests.harness import all_finished, eventually, running

EXAMPLES = int(os.environ.get("CHRONOQ_FUZZ_EXAMPLES", "200"))
SUBMISSION_BATCHES = max(3, EXAMPLES // 8)
CLI_EXAMPLES = max(4, EXAMPLES // 8)
#: Characters of a hostile value an error may repeat, and the longest error message.
ECHO_LENGTH = 40
MESSAGE_LIMIT = 500
#: A canary job enqueued after a batch must start within this of its due time.
CANARY_LATENESS = timedelta(seconds=5)
CANARY_QUEUE = "fuzz.canary"


def fuzz(examples: int) -> hypothesis_settings:
    """Examples from the environment; no deadline (real services), no example database (nothing
    written into the repository), fixtures shared by the examples of one test on purpose."""
    return hypothesis_settings(
        max_examples=examples, deadline=None, database=None, derandomize=False, print_blob=True,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large,
                               HealthCheck.large_base_example, HealthCheck.filter_too_much],
    )


def echoed(message: str, inputs: list[str]) -> str | None:
    """The first run of more than ECHO_LENGTH characters of ``message`` found in a long input."""
    sources = [text for text in inputs if len(text) > ECHO_LENGTH]
    for start in range(len(message) - ECHO_LENGTH):
        window = message[start : start + ECHO_LENGTH + 1]
        if any(window in source for source in sources):
            return window
    return None


def assert_short(message: str, inputs: list[str]) -> None:
    assert len(message) < MESSAGE_LIMIT, f"{len(message)} characters: {message[:200]!r}..."
    repeated = echoed(message, inputs)
    assert repeated is None, f"the error repeats {repeated!r} of an input: {message[:300]!r}"


def as_timedelta(value: Any) -> timedelta:
    return value if isinstance(value, timedelta) else timedelta(seconds=value)


def assert_milliseconds(stored: int, value: Any) -> None:
    """A duration is stored in whole milliseconds: the ones it holds (or the nearest)."""
    duration = as_timedelta(value)
    allowed = {duration // timedelta(milliseconds=1), round(duration / timedelta(milliseconds=1))}
    assert stored in allowed, f"{value!r} stored as {stored} ms"


async def empty(db: asyncpg.Connection) -> None:
    """Examples of one test share its database: each starts from none of the others' jobs."""
    await db.execute("DELETE FROM chronoq.jobs; DELETE FROM chronoq.wheel")


async def stored_rows(db: asyncpg.Connection) -> tuple[int, int]:
    return (await db.fetchval("SELECT count(*) FROM chronoq.jobs"), await db.fetchval("SELECT count(*) FROM chronoq.wheel"))


# --- the Python API -----------------------------------------------------------------------------------


async def assert_stored(producer: Producer, db: asyncpg.Connection, job_id: int, call: Call) -> None:
    """The job stored for a valid call holds exactly what the call said."""
    given, job = call.kwargs, await producer.get(job_id)
    row = await db.fetchrow("SELECT * FROM chronoq.jobs WHERE id = $1", job_id)
    wheel = await db.fetch("SELECT fire_at, head FROM chronoq.wheel WHERE job_id = $1", job_id)
    assert await stored_rows(db) == (1, 1)
    assert (job.queue, job.key) == (given["queue"], given.get("key"))
    assert job.payload == as_stored(given.get("payload")), compact(job.payload)
    retry = given.get("retry") or RetryPolicy()
    assert job.max_attempts == given.get("max_attempts", retry.max_attempts)
    assert_milliseconds(row["backoff_base_ms"], retry.backoff_base)
    assert_milliseconds(row["backoff_cap_ms"], retry.backoff_cap)
    assert math.isclose(row["jitter"], retry.jitter, rel_tol=1e-6, abs_tol=1e-7)  # a Postgres real
    assert_milliseconds(row["timeout_ms"], given.get("timeout", 60))
    assert_milliseconds(row["misfire_grace_ms"], given.get("misfire_grace", 300))
    (occurrence,) = wheel
    if call.method == "enqueue":
        assert (job.kind, job.misfire) == ("once", given.get("misfire", "run_once"))
        if "run_at" in given:
            assert occurrence["fire_at"] == given["run_at"].astimezone(UTC)
        else:
            assert occurrence["fire_at"] - row["created_at"] == as_timedelta(given.get("delay", 0))
    else:
        assert (job.kind, job.misfire, job.overlap) == ("cron", given.get("misfire", "run_once"), given.get("overlap", "allow"))
        assert job.cron.split() == given["cron"].split() and job.timezone == given.get("timezone", "UTC")
        assert row["max_backfill"] == given.get("max_backfill", 100)
        assert occurrence["head"] and occurrence["fire_at"] > row["created_at"]


@pytest.mark.timeout(60 + EXAMPLES)
@fuzz(EXAMPLES)
@given(call=st.sampled_from(["enqueue", "schedule"]).flatmap(calls))
async def test_a_producer_call_stores_exactly_what_it_was_given_or_refuses_it_naming_the_field(
    producer: Producer, db: asyncpg.Connection, call: Call
) -> None:
    await empty(db)
    try:
        job_id = await getattr(producer, call.method)(**call.kwargs)
    except Exception as exc:
        assert isinstance(exc, ChronoqError), "".join(traceback.format_exception(exc))
        assert call.hostile, f"a valid call was refused: {exc}"
        assert isinstance(exc, InvalidJobError), repr(exc)
        assert names_a_hostile_argument(exc.field, call.hostile), f"{exc.field!r} for {sorted(call.hostile)}: {exc}"
        assert_short(str(exc), strings_in(call.kwargs))
        assert await stored_rows(db) == (0, 0)
    else:
        assert not call.hostile, f"hostile {sorted(call.hostile)} stored as job {job_id}"
        await assert_stored(producer, db, job_id, call)


#: Changes ``model_copy(update=...)`` can make to a built JobSpec: it validates none of them.
SPEC_CHANGES = {
    "queue": hostile_queue_names(), "key": hostile_keys(), "payload": hostile_payloads(), "run_at": hostile_run_ats(),
    "delay": hostile_delays(), "timeout": hostile_timeouts(), "misfire": hostile_choices("backfill"),
    "misfire_grace": hostile_durations(), "retry": hostile_retries(),
}


@st.composite
def changed_specs(draw: st.DrawFn) -> tuple[Any, frozenset[str]]:
    spec = build_spec(**draw(calls("enqueue", hostile=False)).kwargs)
    name = draw(st.sampled_from(sorted(SPEC_CHANGES)))
    value = draw(SPEC_CHANGES[name])
    return spec.model_copy(update={name: value}), frozenset({"when" if name in ("run_at", "delay") else name})


#: Items of a bulk enqueue that are not a set of enqueue arguments at all (any field may be named).
JUNK_ITEMS = [42, "emails", None, ["q"], b"x", {1: "q"}, {"queue": "q", "priority": 1}, {"queue": "q", "connection": 5}]


def hostile_items() -> st.SearchStrategy[tuple[Any, frozenset[str] | None]]:
    return st.one_of(
        calls("enqueue", hostile=True).map(lambda c: (c.kwargs, c.hostile)),
        changed_specs(),
        st.sampled_from(JUNK_ITEMS).map(lambda item: (item, None)),
    )


def _identity(call: Call) -> object:
    """Items of one batch never share a key on a queue (the second would be the first's job)."""
    return (call.kwargs["queue"], call.kwargs["key"]) if "key" in call.kwargs else object()


@pytest.mark.timeout(60 + EXAMPLES)
@fuzz(EXAMPLES)
@given(items=st.lists(calls("enqueue", hostile=False), max_size=6, unique_by=_identity),
       as_specs=st.lists(st.booleans(), min_size=6, max_size=6),
       bad=st.none() | hostile_items(), position=st.integers(0, 6))
async def test_a_bulk_enqueue_with_one_hostile_item_stores_nothing_and_a_valid_one_stores_each_item_as_given(
    producer: Producer, db: asyncpg.Connection, items: list[Call], as_specs: list[bool],
    bad: tuple[Any, frozenset[str] | None] | None, position: int,
) -> None:
    await empty(db)
    batch: list[Any] = [build_spec(**c.kwargs) if spec else c.kwargs
                        for c, spec in zip(items, as_specs[: len(items)], strict=True)]
    if bad is None:
        ids = await producer.enqueue_many(batch)
        assert len(ids) == len(set(ids)) == len(items)
        for job_id, call in zip(ids, items, strict=True):
            await assert_stored_in_bulk(producer, db, job_id, call)
        assert (await stored_rows(db)) == (len(items), len(items))
        return
    item, hostile = bad
    index = min(position, len(batch))
    batch.insert(index, item)
    try:
        ids = await producer.enqueue_many(batch)
    except Exception as exc:
        assert isinstance(exc, InvalidJobError), "".join(traceback.format_exception(exc))
        assert hostile is None or names_a_hostile_argument(exc.field, hostile), f"{exc.field!r} for {hostile}: {exc}"
        assert f"item {index} " in str(exc), str(exc)
        assert_short(str(exc), strings_in(item if isinstance(item, dict) else getattr(item, "__dict__", {})))
    else:
        raise AssertionError(f"a batch with a hostile item at {index} was stored as {ids}")
    assert await stored_rows(db) == (0, 0)


async def assert_stored_in_bulk(producer: Producer, db: asyncpg.Connection, job_id: int, call: Call) -> None:
    """``assert_stored`` for one job of a batch (the table holds the others too)."""
    job = await producer.get(job_id)
    given = call.kwargs
    retry = given.get("retry") or RetryPolicy()
    assert (job.queue, job.key, job.kind) == (given["queue"], given.get("key"), "once")
    assert job.payload == as_stored(given.get("payload")), compact(job.payload)
    assert job.max_attempts == given.get("max_attempts", retry.max_attempts)
    row = await db.fetchrow("SELECT w.fire_at, j.created_at, j.timeout_ms, j.misfire_grace_ms FROM chronoq.wheel w "
                            "JOIN chronoq.jobs j ON j.id = w.job_id WHERE j.id = $1", job_id)
    assert_milliseconds(row["timeout_ms"], given.get("timeout", 60))
    assert_milliseconds(row["misfire_grace_ms"], given.get("misfire_grace", 300))
    if "run_at" in given:
        assert row["fire_at"] == given["run_at"].astimezone(UTC)
    else:
        assert row["fire_at"] - row["created_at"] == as_timedelta(given.get("delay", 0))


@pytest.mark.timeout(60 + EXAMPLES)
@fuzz(EXAMPLES)
@given(changed=changed_specs())
async def test_a_spec_changed_after_it_was_built_is_refused_by_enqueue_spec_and_enqueue_many(
    producer: Producer, db: asyncpg.Connection, changed: tuple[Any, frozenset[str]]
) -> None:
    spec, hostile = changed
    await empty(db)
    for enqueue in (producer.enqueue_spec, lambda s: producer.enqueue_many([s])):
        with pytest.raises(InvalidJobError) as refused:
            await enqueue(spec)
        assert names_a_hostile_argument(refused.value.field, hostile), f"{refused.value.field!r} for {hostile}"
    assert await stored_rows(db) == (0, 0)


@pytest.mark.timeout(60 + EXAMPLES)
@fuzz(EXAMPLES)
@given(job_id=st.one_of(st.integers(max_value=0), st.integers(min_value=2**63),
                        st.sampled_from([True, "1", 1.0, None, [1], 2**64])),
       method=st.sampled_from(["get", "cancel", "pause", "resume", "ticks", "reschedule"]))
async def test_a_hostile_job_id_is_refused_by_every_method_that_takes_one(producer: Producer, job_id: Any, method: str) -> None:
    with pytest.raises(InvalidJobError) as refused:
        await getattr(producer, method)(job_id)
    assert refused.value.field == "job_id"


# --- AMQP submissions, end to end ------------------------------------------------------------------------


@dataclass
class Sent:
    """A published submission, with what the submission parser makes of it (the cross-check)."""

    submission: Submission
    body: bytes
    prefix: str  # what makes its KeySlot key unique
    message_id: str
    parsed: Any  # the spec, or the exception parse_submission raised

    @property
    def accepted(self) -> bool:
        return not isinstance(self.parsed, Exception)

    @property
    def key(self) -> str:
        """The key it is stored under: its own, or one made of its AMQP message id."""
        if self.accepted and self.parsed.key is not None:
            return self.parsed.key
        return "amqp-message:" + hashlib.sha256(self.message_id.encode()).hexdigest()[:32]


class Fleet:
    """One timer and one worker (handling only the canary queue) in the background of a test,
    a producer, and a publisher for submissions."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self.namespace = settings.namespace
        self.stack = AsyncExitStack()
        self.batches = 0
        self.published = 0
        self.unsettled: list[Sent] = []  # the last batch, until its fates were all seen
        self.lateness: list[float] = []

    async def start(self) -> None:
        worker = Worker()

        @worker.handler(CANARY_QUEUE)
        async def canary(ctx: JobContext, payload: Any) -> None:
            return None

        self.producer = await self.stack.enter_async_context(Producer(self.settings.database_url))
        self.db = await asyncpg.connect(self.settings.database_url)
        self.stack.push_async_callback(self.db.close)
        self.timer = Timer(self.settings)
        await self.stack.enter_async_context(running(self.timer))
        self.timer_task = task_of(self.timer)
        self.worker = WorkerService(worker, self.settings)
        await self.stack.enter_async_context(running(self.worker))
        self.worker_task = task_of(self.worker)
        connection = await aio_pika.connect(self.settings.amqp_url)
        self.stack.push_async_callback(connection.close)
        self.channel = await connection.channel(publisher_confirms=True)
        self.exchange = await self.channel.get_exchange(f"{self.namespace}.submit")
        self.rejected = await self.channel.get_queue(f"{self.namespace}.submissions.rejected")

    async def stop(self) -> None:
        await self.stack.aclose()

    async def publish(self, batch: list[Submission]) -> list[Sent]:
        if self.unsettled:  # a failed example left its batch behind: let it settle, out of the way
            await self.fates(self.unsettled)
            await self.rejected.purge()
        self.batches += 1
        sent = self.unsettled = []
        for index, submission in enumerate(batch):
            prefix = f"fz{self.batches}.{index}-"
            body = submission.body(prefix)
            try:
                parsed: Any = parse_submission(body)
            except Exception as exc:
                parsed = exc
            message_id = uuid.uuid4().hex
            await self.exchange.publish(aio_pika.Message(body, headers=submission.headers, message_id=message_id,
                                                         content_type="application/json"), routing_key="")
            sent.append(Sent(submission, body, prefix, message_id, parsed))
        self.published += len(batch)
        return sent

    async def fates(self, sent: list[Sent]) -> tuple[dict[str, int], list[aio_pika.abc.AbstractIncomingMessage]]:
        """Wait until every submission is stored or rejected; the stored ones' job ids by key,
        and the rejected copies."""
        # A hostile key is looked up too (it must not have been stored), where Postgres can hold it.
        hostile_keys = [(s.submission.fields or {}).get("key") for s in sent]
        keys = [s.key for s in sent] + [k for k in hostile_keys if isinstance(k, str) and storable(k)]
        rejected: list[aio_pika.abc.AbstractIncomingMessage] = []
        stored: dict[str, int] = {}

        async def settled() -> bool:
            while (message := await self.rejected.get(fail=False)) is not None:
                rejected.append(message)
                await message.ack()
            stored.clear()
            for r in await self.db.fetch("SELECT key, id FROM chronoq.jobs WHERE key = ANY($1)", keys):
                stored[r["key"]] = r["id"]
            return sum(s.key in stored for s in sent) + len(rejected) >= len(sent)

        await eventually(settled, timeout=30, what=f"{len(sent)} submissions stored or rejected "
                                                    f"(stored {len(stored)}, rejected {len(rejected)})")
        return stored, rejected

    async def canary_lateness(self) -> timedelta:
        job_id = await self.producer.enqueue(CANARY_QUEUE, {"batch": self.batches}, delay=0.2)
        summary = await all_finished(self.producer, [job_id], timeout=30)
        assert summary.get("succeeded") == 1, summary
        (occurrence,) = (await self.producer.get(job_id)).occurrences
        return occurrence.started_at - occurrence.run_at


def storable(text: str) -> bool:
    """Text Postgres can hold: UTF-8 without NUL."""
    return "\x00" not in text and text.encode(errors="replace").decode() == text


def task_of(service: object) -> asyncio.Task:
    """The task ``running`` started for ``service.run()``."""
    for task in asyncio.all_tasks():
        frame = getattr(task.get_coro(), "cr_frame", None)
        if frame is not None and frame.f_code.co_name == "run" and frame.f_locals.get("self") is service:
            return task
    raise AssertionError(f"no running task for {service!r}")


async def assert_stored_submission(db: asyncpg.Connection, job_id: int, sent: Sent) -> None:
    """A stored valid submission holds what it said: every field, or its default."""
    fields, kind = sent.submission.fields, sent.submission.kind
    assert fields is not None
    row = await db.fetchrow("SELECT * FROM chronoq.jobs WHERE id = $1", job_id)
    key = fields.get("key")
    message_key = "amqp-message:" + hashlib.sha256(sent.message_id.encode()).hexdigest()[:32]
    expected_key = (sent.prefix + key.text)[:KEY_MAX] if isinstance(key, KeySlot) else message_key
    assert (row["queue"], row["key"], row["kind"]) == (fields["queue"], expected_key, kind)
    assert orjson.loads(row["payload"]) == as_stored(fields.get("payload")), row["payload"][:300]
    assert row["max_attempts"] == (fields.get("max_attempts") or 5)
    assert_milliseconds(row["timeout_ms"], fields.get("timeout_s") or 60)
    grace = fields.get("misfire_grace_s")
    assert_milliseconds(row["misfire_grace_ms"], 300 if grace is None else grace)
    assert row["misfire"] == fields.get("misfire", "run_once")
    if kind == "cron":
        assert row["cron"].split() == fields["cron"].split() and row["timezone"] == fields.get("timezone", "UTC")
        backfill = fields.get("max_backfill")
        assert (row["max_backfill"], row["overlap"]) == (100 if backfill is None else backfill, fields.get("overlap", "allow"))
        return
    (fire_at,) = [r["fire_at"] for r in await db.fetch(
        "SELECT fire_at FROM chronoq.wheel WHERE job_id = $1 UNION ALL SELECT fire_at FROM chronoq.results WHERE job_id = $1",
        job_id)]
    if isinstance(fields.get("run_at"), Stamp):
        assert fire_at == fields["run_at"].instant
    else:
        delay = timedelta(seconds=fields.get("delay_s") or 0)
        assert abs(fire_at - row["created_at"] - delay) <= timedelta(microseconds=1)


async def check_batch(fleet: Fleet, batch: list[Submission], caplog: pytest.LogCaptureFixture) -> None:
    first_record = len(caplog.records)
    sent = await fleet.publish(batch)
    stored, rejected = await fleet.fates(sent)
    fleet.unsettled = []
    stored_sent = [s for s in sent if s.key in stored]
    # Exactly one fate each: every body not stored was copied to the rejected queue once.
    assert Counter(m.body for m in rejected) == Counter(s.body for s in sent if s.key not in stored), \
        f"rejected copies differ from the submissions not stored ({len(rejected)} copies)"
    for s in sent:
        assert s.submission.valid is not False or s.key not in stored, f"hostile {s.submission!r} was stored"
        assert s.submission.valid is not True or s.key in stored, f"valid {s.submission!r} was rejected: " + \
            next((str(m.headers.get("x-chronoq-error")) for m in rejected if m.body == s.body), "?")
        assert s.accepted == (s.key in stored), f"the parser {'accepts' if s.accepted else 'refuses'} " \
                                                f"{s.submission!r} ({s.parsed!r}) but it was {'not ' * s.accepted}stored"
    for s in stored_sent:
        if s.submission.valid:
            await assert_stored_submission(fleet.db, stored[s.key], s)
    for message in rejected:
        headers = message.headers or {}
        error = headers.get("x-chronoq-error")
        assert isinstance(error, str) and error, headers.keys()
        assert not error.startswith("the submission could not be stored"), f"an untyped failure: {error}"
        assert headers.get("x-chronoq-reason") == "invalid_submission"
        for origin in [s.submission for s in sent if s.body == message.body and s.submission.fields is not None][:1]:
            assert_short(error, strings_in(origin.fields))
    new_jobs = await fleet.db.fetchval("SELECT count(*) FROM chronoq.jobs WHERE key = ANY($1)", [s.key for s in sent])
    assert new_jobs == len(stored_sent)
    # None is handed back: the submissions queue is empty once all are settled.
    intake = await fleet.channel.declare_queue(f"{fleet.namespace}.submissions", passive=True)
    assert intake.declaration_result.message_count == 0
    assert not fleet.timer_task.done() and not fleet.worker_task.done(), "a service stopped"
    lateness = await fleet.canary_lateness()
    fleet.lateness.append(lateness.total_seconds())
    print(f"batch {fleet.batches}: {len(sent)} submissions, {len(stored_sent)} stored, {len(rejected)} rejected; "
          f"canary {lateness.total_seconds() * 1000:.0f} ms late")
    assert lateness < CANARY_LATENESS, f"the canary started {lateness} after its due time"
    records = caplog.records[first_record:]
    assert not [r for r in records if r.name.startswith("chronoq") and r.levelno >= logging.ERROR], \
        [r.getMessage() for r in records if r.levelno >= logging.ERROR]
    assert not [r for r in records if getattr(r, "action", None) == "submission_requeued"]
    for job_id in stored.values():  # recurring ones stop ticking into queues nobody reads
        await fleet.producer.cancel(job_id)


@pytest.mark.timeout(120 + 20 * SUBMISSION_BATCHES)
def test_every_submission_is_stored_as_given_or_rejected_once_with_its_error_and_the_fleet_keeps_running(
    settings, services, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="chronoq")

    def intake() -> dict:
        return _management(services, "GET", f"/api/queues/%2F/{settings.namespace}.submissions")  # type: ignore[return-value]

    async def all_acked() -> bool:
        queue = intake()
        return queue.get("message_stats", {}).get("ack", 0) >= fleet.published and queue.get("messages") == 0

    with asyncio.Runner() as runner:
        fleet = Fleet(settings)
        runner.run(fleet.start())
        try:

            @fuzz(SUBMISSION_BATCHES)
            @given(batch=st.lists(submissions(), min_size=1, max_size=12))
            def every_submission_has_one_fate(batch: list[Submission]) -> None:
                runner.run(check_batch(fleet, batch, caplog))

            every_submission_has_one_fate()
            # Every submission acked exactly once, none redelivered. The management API counts
            # from the statistics channels emit every few seconds: read it while the timer's
            # channel is still open.
            runner.run(eventually(all_acked, timeout=30, what=f"{fleet.published} submissions acked"))
            queue = intake()
            assert queue.get("message_stats", {}).get("redeliver", 0) == 0, "a submission was handed back"
            assert queue["message_stats"]["ack"] == fleet.published
        finally:
            runner.run(fleet.stop())
    print(f"canary lateness over {len(fleet.lateness)} batches: max {max(fleet.lateness) * 1000:.0f} ms")


# --- the command line ------------------------------------------------------------------------------------


@contextmanager
def cli_logging():
    """``chronoq.cli.main`` configures logging for a process; put back pytest's afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    levels = {name: logging.getLogger(name).level for name in ("aio_pika", "aiormq")}
    filters = logging.getLogger("aiormq.connection").filters[:]
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, value in levels.items():
            logging.getLogger(name).setLevel(value)
        logging.getLogger("aiormq.connection").filters[:] = filters


async def _reset(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await empty(conn)
    finally:
        await conn.close()


async def _stored(url: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetch("SELECT * FROM chronoq.jobs")
    finally:
        await conn.close()


@pytest.mark.timeout(60 + 5 * CLI_EXAMPLES)
@fuzz(CLI_EXAMPLES)
@given(line=command_lines())
def test_the_cli_stores_a_valid_command_line_and_refuses_a_hostile_one_in_one_line(
    settings, capsys: pytest.CaptureFixture[str], line: CommandLine
) -> None:
    asyncio.run(_reset(settings.database_url))
    command, *rest = line.args
    flags = ["--database-url", settings.database_url, "--amqp-url", settings.amqp_url,
             "--namespace", settings.namespace, "--log-level", "WARNING"]
    with cli_logging():
        try:
            cli_main([command, *flags, *rest])
            code: Any = 0
        except SystemExit as exit_:
            code = exit_.code or 0
    out, err = capsys.readouterr()
    rows = asyncio.run(_stored(settings.database_url))
    assert "Traceback" not in err, err
    if line.valid:
        assert code == 0, err
        (row,) = rows
        assert int(out.strip()) == row["id"]
        expected = line.expected
        assert (row["queue"], row["key"], row["max_attempts"]) == (expected["queue"], expected["key"], expected["max_attempts"])
        assert (orjson.loads(row["payload"]) if row["payload"] is not None else None) == expected["payload"]
        if command == "schedule":
            assert row["cron"].split() == expected["cron"].split()
            assert (row["timezone"], row["misfire"], row["overlap"], row["max_backfill"]) == (
                expected["timezone"], expected["misfire"], expected["overlap"], expected["max_backfill"])
    else:
        assert code != 0, f"exit {code}: {out!r} {err!r}"
        assert rows == [], "a refused command line stored a job"
        lines = err.strip().splitlines()
        assert len(lines) == 1, err
        assert_short(lines[0], line.args)


def test_the_cli_takes_a_time_that_ends_in_a_lower_case_z(settings, capsys: pytest.CaptureFixture[str]) -> None:
    asyncio.run(_reset(settings.database_url))
    flags = ["--database-url", settings.database_url, "--amqp-url", settings.amqp_url, "--namespace", settings.namespace]
    with cli_logging(), pytest.raises(SystemExit) as exited:
        cli_main(["enqueue", *flags, "--at=2030-01-01T09:00:00z", "--", "q"])
    assert exited.value.code in (0, None), capsys.readouterr().err


# --- bugs found, fixed: their minimal inputs stay -------------------------------------------------------


async def test_an_integer_duration_beyond_the_float_range_is_refused_as_invalid(producer: Producer, db) -> None:
    """It raised OverflowError: math.isfinite() of the int, outside any validator."""
    with pytest.raises(InvalidJobError) as refused:
        await producer.enqueue("q", delay=10**400)
    assert refused.value.field == "delay"
    assert await stored_rows(db) == (0, 0)


async def test_a_duration_is_stored_to_the_millisecond_it_holds(producer: Producer, db) -> None:
    """1.001 s was stored as 1000 ms: int() of the float total_seconds() * 1000 (1000.9999999999999)."""
    job_id = await producer.enqueue("q", delay=3600, timeout=1.001)
    assert await db.fetchval("SELECT timeout_ms FROM chronoq.jobs WHERE id = $1", job_id) == 1001


async def test_a_float_beyond_2_53_is_refused_and_one_within_reads_back_as_itself(producer: Producer, db) -> None:
    """2**56, sent as 7.205759403792794e16, was stored by jsonb as the numeric 72057594037927940 and
    read back as that integer: another number."""
    with pytest.raises(InvalidJobError) as refused:
        await producer.enqueue("q", 2.0**56, delay=3600)
    assert refused.value.field == "payload"
    assert await stored_rows(db) == (0, 0)
    job_id = await producer.enqueue("q", [2.0**53, -(2.0**53), 1e-300], delay=3600)
    assert (await producer.get(job_id)).payload == [2.0**53, -(2.0**53), 1e-300]


async def test_a_job_id_of_more_than_4300_digits_is_refused_as_invalid(producer: Producer) -> None:
    """It raised ValueError: repr() of the int in the message, past Python's 4300 digits."""
    with pytest.raises(InvalidJobError):
        await producer.get(10**4300)


def test_a_bad_cron_expression_is_refused_naming_cron_even_when_it_mentions_a_zone() -> None:
    """The field was chosen by 'zone' in the message, which quotes the expression."""
    with pytest.raises(InvalidJobError) as refused:
        build_schedule(queue="q", cron="zone * * * *")
    assert refused.value.field == "cron", str(refused.value)


async def test_declaring_a_recurring_job_with_the_key_of_a_one_shot_job_repeats_no_more_than_a_prefix_of_it(
    producer: Producer, db
) -> None:
    """The refusal quoted the whole key and queue."""
    key = "k" * (ECHO_LENGTH + 1)
    await producer.enqueue("q", {}, key=key, delay=3600)
    with pytest.raises(InvalidJobError) as refused:
        await producer.schedule("q", cron="* * * * *", key=key)
    assert refused.value.field == "key"
    assert_short(str(refused.value), [key])


def test_a_submission_may_end_its_run_at_with_a_lower_case_z() -> None:
    """RFC 3339 allows it, and the pattern did, but datetime.fromisoformat (3.11) refused it."""
    spec = parse_submission(b'{"queue": "q", "run_at": "2030-01-01t09:00:00z"}')
    assert spec.run_at == datetime(2030, 1, 1, 9, tzinfo=UTC)


def _past_the_next_transition(zone: str) -> timedelta:
    """A whole number of days from now that crosses exactly one UTC offset change of ``zone``."""
    tz, now = ZoneInfo(zone), datetime.now(UTC)
    offset = now.astimezone(tz).utcoffset()
    days = next(d for d in range(1, 400) if (now + timedelta(days=d)).astimezone(tz).utcoffset() != offset)
    return timedelta(days=days + 1)


async def test_a_delay_is_elapsed_time_whatever_the_time_zone_of_the_database(settings, db) -> None:
    """A delay with a days part was added to now() in calendar days of the session's TimeZone:
    across a DST change, an hour short or long."""
    database = settings.database_url.rsplit("/", 1)[1]
    await db.execute(f"ALTER DATABASE \"{database}\" SET timezone TO 'Europe/Berlin'")  # this test's database only
    delay = _past_the_next_transition("Europe/Berlin")
    async with Producer(settings.database_url) as producer:  # sessions opened after the change
        job_id = await producer.enqueue("q", {}, delay=delay)
    stored = await db.fetchval("SELECT w.fire_at - j.created_at FROM chronoq.wheel w "
                               "JOIN chronoq.jobs j ON j.id = w.job_id WHERE j.id = $1", job_id)
    assert stored == delay, f"a delay of {delay} across a DST change in Europe/Berlin was stored as {stored}"
