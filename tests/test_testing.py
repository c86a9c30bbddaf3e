"""chronoq.testing: handlers run inline on a real database, assertions on what is enqueued, and
the importable fixtures — no RabbitMQ involved."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from pydantic import BaseModel, ValidationError

from chronoq import Cancel, JobContext, Producer, Retry, Worker
from chronoq.errors import UnknownQueueError
from chronoq.testing import assert_enqueued, refute_enqueued, run_inline

# A fixture that pytest finds by its name in the module, as in a user's conftest.
from chronoq.testing import chronoq_producer as chronoq_producer


class Email(BaseModel):
    to: str
    subject: str = "hello"


worker = Worker()


@worker.handler("emails.send")
async def send(ctx: JobContext, payload: Email) -> dict:
    await ctx.db.execute("INSERT INTO sent (key, address) VALUES ($1, $2)", ctx.idempotency_key, payload.to)
    if payload.to == "boom@x":
        raise ValueError("mail server down")
    if payload.to == "later@x":
        raise Retry("greylisted", delay=timedelta(seconds=30))
    if payload.to == "gone@x":
        raise Cancel("address deleted")
    if payload.to == "swallow@x":
        # Leaves the transaction aborted: the attempt must fail, not "succeed".
        with contextlib.suppress(asyncpg.DivisionByZeroError):
            await ctx.db.execute("SELECT 1/0")
    return {"sent_to": payload.to, "attempt": ctx.attempt}


@pytest.fixture
async def sent(db) -> asyncpg.Connection:
    await db.execute("CREATE TABLE sent (key text PRIMARY KEY, address text NOT NULL)")
    return db


async def test_success_commits_the_handlers_writes_and_returns_its_value(settings, sent) -> None:
    fire_at = datetime(2030, 1, 2, 3, 4, 5, 6000, tzinfo=UTC)
    result = await run_inline(worker, "emails.send", {"to": "a@b.c"}, database_url=settings.database_url,
                              job_id=42, attempt=2, max_attempts=3, fire_at=fire_at)
    assert (result.outcome, result.error, result.value) == ("succeeded", None, {"sent_to": "a@b.c", "attempt": 2})
    assert result.idempotency_key == "42@2030-01-02T03:04:05.006000Z"
    assert await sent.fetch("SELECT key, address FROM sent") == [(result.idempotency_key, "a@b.c")]


async def test_rollback_true_leaves_nothing_behind(settings, sent) -> None:
    result = await run_inline(worker, "emails.send", {"to": "a@b.c"}, database_url=settings.database_url, rollback=True)
    assert result.outcome == "succeeded"
    assert await sent.fetchval("SELECT count(*) FROM sent") == 0


@pytest.mark.parametrize(
    ("to", "outcome", "error"),
    [("boom@x", "failed", ValueError), ("later@x", "retry", Retry), ("gone@x", "cancelled", Cancel),
     ("swallow@x", "failed", asyncpg.InFailedSQLTransactionError)],
)
async def test_an_exception_is_reported_not_raised_and_its_writes_roll_back(settings, sent, to, outcome, error) -> None:
    result = await run_inline(worker, "emails.send", {"to": to}, database_url=settings.database_url)
    assert (result.outcome, result.value) == (outcome, None)
    assert isinstance(result.error, error)
    assert await sent.fetchval("SELECT count(*) FROM sent") == 0
    if outcome == "retry":
        assert result.error.delay == timedelta(seconds=30)  # type: ignore[union-attr]


async def test_invalid_payload_does_not_run_the_handler(settings, sent) -> None:
    result = await run_inline(worker, "emails.send", {"address": "a@b.c"}, database_url=settings.database_url)
    assert result.outcome == "invalid_payload"
    assert isinstance(result.error, ValidationError)
    assert await sent.fetchval("SELECT count(*) FROM sent") == 0


async def test_unknown_queue_raises(settings) -> None:
    with pytest.raises(UnknownQueueError, match=r"no handler for queue 'sms\.send'.*emails\.send"):
        await run_inline(worker, "sms.send", {}, database_url=settings.database_url)


async def test_on_a_given_connection_it_runs_inside_the_callers_transaction(sent) -> None:
    tx = sent.transaction()
    await tx.start()
    ok = await run_inline(worker, "emails.send", {"to": "a@b.c"}, connection=sent)
    failed = await run_inline(worker, "emails.send", {"to": "boom@x"}, connection=sent)
    assert (ok.outcome, failed.outcome) == ("succeeded", "failed")
    # The failure rolled back only its own writes; the caller's transaction is still usable and
    # decides about the rest.
    assert await sent.fetchval("SELECT count(*) FROM sent") == 1
    await tx.rollback()
    assert await sent.fetchval("SELECT count(*) FROM sent") == 0
    # Outside a transaction it opens (and commits) one of its own on the connection.
    await run_inline(worker, "emails.send", {"to": "a@b.c"}, connection=sent)
    assert not sent.is_in_transaction()
    assert await sent.fetchval("SELECT count(*) FROM sent") == 1


async def test_assert_enqueued_finds_jobs_by_payload_subset_key_and_kind(settings, producer: Producer) -> None:
    first = await producer.enqueue("emails.send", {"to": "a@b.c", "subject": "hi"}, key="welcome-1", delay=60)
    await producer.enqueue("emails.send", {"to": "d@e.f", "subject": "hi"}, delay=60)
    await producer.schedule("reports.daily", {"kind": "sales"}, cron="0 9 * * *")

    [job] = await assert_enqueued(settings.database_url, "emails.send", payload={"to": "a@b.c"}, key="welcome-1")
    assert (job.id, job.kind, job.state, job.payload["subject"]) == (first, "once", "scheduled", "hi")
    assert len(await assert_enqueued(producer, "emails.send", payload={"subject": "hi"}, count=2)) == 2
    assert len(await assert_enqueued(producer, "emails.send", payload=Email(to="a@b.c", subject="hi"))) == 1
    await assert_enqueued(producer, "reports.daily", kind="cron", payload={"kind": "sales"})


async def test_assert_enqueued_failure_lists_what_is_there(settings, producer: Producer) -> None:
    job_id = await producer.enqueue("emails.send", {"to": "a@b.c"}, key="k1", delay=60)
    with pytest.raises(AssertionError) as failure:
        await assert_enqueued(settings.database_url, "emails.send", payload={"to": "z@z.z"})
    message = str(failure.value)
    assert "expected a job matching queue='emails.send', payload={'to': 'z@z.z'}" in message
    assert f'#{job_id} once scheduled key=\'k1\' payload={{"to":"a@b.c"}}' in message

    with pytest.raises(AssertionError, match=r"expected 2 job\(s\) .*found 1"):
        await assert_enqueued(producer, "emails.send", count=2)
    with pytest.raises(AssertionError, match=r"Nothing is enqueued on that queue; queues with jobs: emails\.send"):
        await assert_enqueued(producer, "email.send")
    await producer.cancel(job_id)  # finished jobs no longer count as enqueued, unless asked for
    with pytest.raises(AssertionError, match="once cancelled"):
        await assert_enqueued(producer, "emails.send")
    await assert_enqueued(producer, "emails.send", state=None)
    await assert_enqueued(producer, "emails.send", state="cancelled")


async def test_refute_enqueued(settings, producer: Producer) -> None:
    await refute_enqueued(settings.database_url, "emails.send")
    job_id = await producer.enqueue("emails.send", {"to": "a@b.c"}, delay=60)
    await refute_enqueued(producer, "emails.send", payload={"to": "other"})
    expected = rf"expected no job matching queue='emails.send', payload=.*, not finished, found 1:\n  #{job_id} "
    with pytest.raises(AssertionError, match=expected):
        await refute_enqueued(producer, "emails.send", payload={"to": "a@b.c"})


async def test_assertions_on_a_plain_connection_see_its_uncommitted_transaction(producer: Producer, db) -> None:
    # `db` has asyncpg's default jsonb codec (JSON text): payloads still compare as values.
    async with db.transaction():
        job_id = await producer.enqueue("emails.send", {"to": "a@b.c"}, connection=db)
        [job] = await assert_enqueued(db, "emails.send", payload={"to": "a@b.c"})
        assert job.id == job_id
        assert db.is_in_transaction()
        await refute_enqueued(producer, "emails.send")  # not committed: other connections see nothing
    await assert_enqueued(db, "emails.send", payload={"to": "a@b.c"})  # committed, read outside a transaction


@pytest.fixture
def chronoq_database_url(settings) -> str:
    return settings.database_url


async def test_the_exported_producer_fixture_uses_the_overridden_url(chronoq_producer: Producer, settings) -> None:
    job_id = await chronoq_producer.enqueue("emails.send", {"to": "a@b.c"}, delay=60)
    [job] = await assert_enqueued(settings.database_url, "emails.send")
    assert job.id == job_id


def test_importing_the_fixture_alone_in_a_conftest_works_with_the_environment(settings, tmp_path: Path) -> None:
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\nfilterwarnings = error\n"
    )
    (tmp_path / "conftest.py").write_text("from chronoq.testing import chronoq_producer  # noqa: F401\n")
    (tmp_path / "test_user.py").write_text(textwrap.dedent("""
        from chronoq.testing import assert_enqueued

        async def test_enqueue(chronoq_producer):
            await chronoq_producer.enqueue("user.queue", {"n": 1})
            await assert_enqueued(chronoq_producer, "user.queue", payload={"n": 1})
    """))
    env = {**os.environ, "CHRONOQ_DATABASE_URL": settings.database_url}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path), str(tmp_path)],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=90,
    )
    assert run.returncode == 0, run.stdout + run.stderr
