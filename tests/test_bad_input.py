"""Bad input gets a clear, typed error naming what is wrong, and nothing is stored."""

from __future__ import annotations

import math
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from chronoq import InvalidJobError, Producer, RetryPolicy, Worker
from chronoq.errors import UnknownQueueError
from chronoq.schemas.payload import MAX_PAYLOAD_BYTES
from tests.conftest import child_env

FUTURE = datetime.now(UTC) + timedelta(hours=1)

def _nested(depth: int) -> object:
    """``[[...[1]...]]``, ``depth`` lists deep."""
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


BAD_ENQUEUES = [
    pytest.param({"run_at": datetime(2030, 1, 1)}, "run_at", "naive", id="naive-datetime"),
    pytest.param({"run_at": datetime(3001, 1, 1, tzinfo=UTC)}, "run_at", "range", id="run-at-after-range"),
    pytest.param({"run_at": datetime(1960, 1, 1, tzinfo=UTC)}, "run_at", "range", id="run-at-before-range"),
    pytest.param({"delay": -1}, "delay", "negative", id="negative-delay"),
    pytest.param({"delay": timedelta(seconds=-5)}, "delay", "negative", id="negative-timedelta"),
    pytest.param({"delay": math.nan}, "delay", "finite", id="nan-delay"),
    pytest.param({"delay": math.inf}, "delay", "finite", id="infinite-delay"),
    pytest.param({"delay": timedelta(days=365 * 2000)}, "delay", "range", id="delay-past-range"),
    pytest.param({"delay": True}, "delay", "bool", id="bool-delay"),
    pytest.param({"delay": 1, "run_at": FUTURE}, "job", "not both", id="delay-and-run-at"),
    pytest.param({"max_attempts": 0}, "max_attempts", "outside 1..1000", id="zero-attempts"),
    pytest.param({"max_attempts": -3}, "max_attempts", "outside 1..1000", id="negative-attempts"),
    pytest.param({"timeout": 0}, "timeout", "positive", id="zero-timeout"),
    pytest.param({"key": ""}, "key", "1-200 characters", id="empty-key"),
    pytest.param({"key": "k" * 201}, "key", "1-200 characters", id="long-key"),
    pytest.param({"key": "a\x00b"}, "key", "NUL", id="nul-key"),
    pytest.param({"key": "order-42\n"}, "key", "newline", id="newline-key"),
    pytest.param({"max_attempts": "5"}, "max_attempts", "not str", id="attempts-as-string"),
    pytest.param({"max_attempts": True}, "max_attempts", "not bool", id="attempts-as-bool"),
    pytest.param({"max_attempts": 5.0}, "max_attempts", "not float", id="attempts-as-float"),
    pytest.param({"delay": "30"}, "delay", "not str", id="delay-as-string"),
    pytest.param({"run_at": 1_900_000_000}, "run_at", "not int", id="epoch-run-at"),
    pytest.param({"run_at": "2030-01-01T00:00:00Z"}, "run_at", "not str", id="string-run-at"),
    pytest.param({"timeout": 1e300}, "timeout", "longer than", id="huge-timeout"),
    pytest.param({"misfire_grace": 1e300}, "misfire_grace", "longer than", id="huge-grace"),
    pytest.param({"misfire_grace": timedelta(days=10**6)}, "misfire_grace", "at most", id="grace-beyond-bound"),
    pytest.param({"retry": RetryPolicy().model_copy(update={"backoff_cap": timedelta(days=10**8)})}, "backoff_cap",
                 "at most", id="changed-retry-policy"),
    pytest.param({"payload": math.nan}, "payload", "NaN", id="nan-payload"),
    pytest.param({"payload": {"x": [1.0, math.inf]}}, "payload.x[1]", "inf", id="infinite-in-list"),
    pytest.param({"payload": b"bytes"}, "payload", "bytes is not a JSON type", id="bytes-payload"),
    pytest.param({"payload": {"s": "\ud800"}}, "payload.s", "surrogate", id="lone-surrogate"),
    pytest.param({"payload": {"s": "a\x00b"}}, "payload.s", "NUL", id="nul-in-string"),
    pytest.param({"payload": {"a\x00": 1}}, "payload key", "NUL", id="nul-in-key"),
    pytest.param({"payload": {1: "x"}}, "payload", "not a string", id="non-string-key"),
    pytest.param({"payload": {"x": {1, 2}}}, "payload.x", "set is not a JSON type", id="set-payload"),
    pytest.param({"payload": {"x": object()}}, "payload.x", "object is not a JSON type", id="object-payload"),
    pytest.param({"payload": 2**64}, "payload", "64-bit", id="huge-int"),
    pytest.param({"payload": "x" * (MAX_PAYLOAD_BYTES + 1)}, "payload", "over the limit", id="oversized-payload"),
    pytest.param({"payload": _nested(65)}, "payload" + "[0]" * 65, "nested deeper", id="deep-payload"),
    pytest.param({"debounce": 5}, "debounce", "needs a key", id="debounce-without-key"),
    pytest.param({"on_conflict": "replace"}, "on_conflict", "needs a key", id="replace-without-key"),
    pytest.param({"key": "k", "on_conflict": "update"}, "on_conflict", "'keep' or 'replace'", id="unknown-on-conflict"),
    pytest.param({"key": "k", "on_conflict": True}, "on_conflict", "'keep' or 'replace'", id="bool-on-conflict"),
    pytest.param({"key": "k", "debounce": 0}, "debounce", "positive", id="zero-debounce"),
    pytest.param({"key": "k", "debounce": -1}, "debounce", "positive", id="negative-debounce"),
    pytest.param({"key": "k", "debounce": timedelta(days=365 * 2000)}, "debounce", "at most", id="debounce-past-range"),
    pytest.param({"key": "k", "debounce": 10, "max_wait": 5}, "max_wait", "at least debounce", id="max-wait-below-debounce"),
    pytest.param({"key": "k", "max_wait": 5}, "max_wait", "only with debounce", id="max-wait-without-debounce"),
    pytest.param({"key": "k", "debounce": 5, "on_conflict": "keep"}, "on_conflict", "replaces", id="debounce-and-keep"),
    pytest.param({"key": "k", "debounce": 5, "delay": 1}, "delay", "debounce", id="debounce-and-delay"),
    pytest.param({"key": "k", "debounce": 5, "run_at": FUTURE}, "run_at", "debounce", id="debounce-and-run-at"),
]

BAD_QUEUES = [
    pytest.param("amq.direct", "reserved", id="amq-prefix"),
    pytest.param("", "does not match", id="empty"),
    pytest.param("emails'; DROP TABLE jobs; --", "does not match", id="quotes"),
    pytest.param('say "hi"', "does not match", id="double-quotes"),
    pytest.param("q" * 201, "does not match", id="over-200-bytes"),
    pytest.param("émails", "does not match", id="non-ascii"),
    pytest.param(".hidden", "does not match", id="leading-dot"),
    pytest.param("with space", "does not match", id="space"),
    pytest.param(42, "must be a string", id="not-a-string"),
    pytest.param("emails.send\n", "does not match", id="final-newline"),
    pytest.param("emails\nsend", "does not match", id="inner-newline"),
]


async def _nothing_stored(db) -> None:
    assert await db.fetchval("SELECT count(*) FROM chronoq.jobs") == 0
    assert await db.fetchval("SELECT count(*) FROM chronoq.wheel") == 0


@pytest.mark.parametrize(("options", "field", "fragment"), BAD_ENQUEUES)
async def test_bad_enqueue_arguments_are_refused_naming_the_field(producer: Producer, db, options, field, fragment) -> None:
    options = {"payload": {"ok": True}, **options}
    payload = options.pop("payload")
    with pytest.raises(InvalidJobError) as caught:
        await producer.enqueue("emails.send", payload, **options)
    assert caught.value.field == field, str(caught.value)
    assert fragment in str(caught.value)
    await _nothing_stored(db)


@pytest.mark.parametrize(("queue", "fragment"), BAD_QUEUES)
async def test_bad_queue_names_are_refused(producer: Producer, db, queue, fragment) -> None:
    with pytest.raises(InvalidJobError) as caught:
        await producer.enqueue(queue, {})
    assert caught.value.field == "queue" and fragment in str(caught.value)
    await _nothing_stored(db)


async def test_one_bad_item_in_a_bulk_enqueue_stores_nothing(producer: Producer, db) -> None:
    with pytest.raises(InvalidJobError) as caught:
        await producer.enqueue_many([{"queue": "ok", "payload": {}}] * 10 + [{"queue": "ok", "payload": math.nan}])
    assert caught.value.field == "payload"
    await _nothing_stored(db)


#: Every Producer method that takes a job id, called with the id as a string, as a web handler
#: or a CLI wrapper would pass it on unconverted.
ID_CALLS = [
    pytest.param("get", lambda job_id: ((job_id,), {}), "job_id", id="get"),
    pytest.param("cancel", lambda job_id: ((job_id,), {}), "job_id", id="cancel"),
    pytest.param("pause", lambda job_id: ((job_id,), {}), "job_id", id="pause"),
    pytest.param("resume", lambda job_id: ((job_id,), {}), "job_id", id="resume"),
    pytest.param("reschedule", lambda job_id: ((job_id,), {"cron": "0 * * * *"}), "job_id", id="reschedule"),
    pytest.param("ticks", lambda job_id: ((job_id,), {}), "job_id", id="ticks"),
    pytest.param("summary", lambda job_id: (([job_id],), {}), "job_ids", id="summary"),
    pytest.param("summary", lambda job_id: ((job_id,), {}), "job_ids", id="summary-of-a-string"),
]


@pytest.mark.parametrize(("method", "arguments", "field"), ID_CALLS)
async def test_a_job_id_given_as_a_string_is_refused_naming_the_argument(
    producer: Producer, db, method, arguments, field
) -> None:
    """``producer.get("2051")`` for a job that exists: a typed error naming the argument, not a
    driver error, and the job is left as it was."""
    job_id = await producer.schedule("ids", {}, cron="* * * * *")
    before = await db.fetchrow("SELECT state, cron FROM chronoq.jobs WHERE id = $1", job_id)
    args, kwargs = arguments(str(job_id))
    with pytest.raises(InvalidJobError) as caught:
        await getattr(producer, method)(*args, **kwargs)
    assert caught.value.field == field
    assert "not str" in caught.value.message
    assert await db.fetchrow("SELECT state, cron FROM chronoq.jobs WHERE id = $1", job_id) == before
    assert (await producer.get(job_id)).id == job_id  # the same id as an integer works


async def test_a_summary_of_something_that_is_not_a_list_of_ids_is_refused(producer: Producer) -> None:
    for job_ids in (None, 2051, {"id": 2051}):
        with pytest.raises(InvalidJobError) as caught:
            await producer.summary(job_ids)  # type: ignore[arg-type]
        assert caught.value.field == "job_ids", job_ids


async def test_a_bad_retry_policy_is_refused() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(jitter=1.5)


def test_a_worker_refuses_a_queue_it_has_no_handler_for() -> None:
    worker = Worker()

    @worker.handler("known")
    async def known(ctx, payload: dict) -> None: ...

    with pytest.raises(UnknownQueueError, match="'unknown'"):
        worker.select(["known", "unknown"])
    with pytest.raises(UnknownQueueError, match="no handlers"):
        Worker().select(None)
    with pytest.raises(InvalidJobError):
        worker.handler("amq.bad")
    with pytest.raises(TypeError, match="async"):
        worker.handler("sync")(lambda ctx, payload: None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="already has a handler"):
        worker.handler("known")(known)


def _cli(settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chronoq", *args], env=child_env(settings), capture_output=True, text=True, timeout=60
    )


async def test_cli_refuses_bad_input_with_exit_code_2_and_a_message(settings, db) -> None:
    cases = [
        (["worker", "tests.handlers:worker", "--queue", "nope"], "no handler for queue(s) 'nope'"),
        (["worker", "tests.handlers:missing"], "is not a chronoq.Worker"),
        (["worker", "no_such_module_xyz:worker"], "cannot import"),
        (["enqueue", "q", "--payload", "{not json"], "payload: not valid JSON"),
        (["enqueue", "q", "--payload", "NaN"], "payload"),
        (["enqueue", "amq.q", "--payload", "{}"], "reserved"),
        (["enqueue", "q", "--at", "2030-01-01T00:00:00"], "naive"),
        (["enqueue", "q", "--delay=-5s"], "cannot be negative"),
        (["enqueue", "q", "--max-attempts", "0"], "max_attempts"),
        (["status", "--claim-batch", "0"], "CHRONOQ_CLAIM_BATCH"),
        (["status", "--amqp-url", "http://x"], "CHRONOQ_AMQP_URL"),
        (["jobs", "show", "999999"], "no job with id 999999"),
    ]
    for args, fragment in cases:
        result = _cli(settings, *args)
        assert result.returncode == 2, (args, result.returncode, result.stderr)
        assert fragment in " ".join(result.stderr.split()), (args, result.stderr)
        assert "Traceback" not in result.stderr
    await _nothing_stored(db)


def test_bad_settings_from_the_environment_name_the_variable(settings) -> None:
    env = child_env(settings, CHRONOQ_TIMER_MAX_IDLE="forever")
    result = subprocess.run([sys.executable, "-m", "chronoq", "status"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "CHRONOQ_TIMER_MAX_IDLE" in result.stderr and "not a duration" in result.stderr
