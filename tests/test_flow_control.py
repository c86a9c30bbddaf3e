"""Queue controls across the fleet: pause and resume, concurrency and rate limits, enforced by the
timers' claims by the database's clock, whatever number of timers and workers run."""

from __future__ import annotations

import argparse
import re
from datetime import timedelta

import asyncpg
import pytest

from chronoq import JobContext, Producer, Worker
from chronoq.cli.arguments import rate
from chronoq.consumer.service import WorkerService
from chronoq.errors import InvalidJobError
from chronoq.schemas.limits import Rate, check_limits
from chronoq.timer import Timer
from tests.harness import all_finished, eventually, running


async def _status(producer: Producer, queue: str):
    return next((s for s in await producer.status() if s.queue == queue), None)


@pytest.mark.parametrize(("arguments", "field", "message"), [
    ({"max_running": 0}, "max_running", "outside 1..100000"),
    ({"max_running": -3}, "max_running", "outside 1..100000"),
    ({"max_running": True}, "max_running", "must be an integer"),
    ({"max_running": 2.5}, "max_running", "must be an integer"),
    ({"rate": (0, 1)}, "rate", "outside 1..10000"),
    ({"rate": (10, 0)}, "rate", "at least 1 ms"),
    ({"rate": (10, timedelta(days=2))}, "rate", "at most"),
    ({"rate": (10,)}, "rate", "a (count, period) pair"),
    ({"rate": "10/1s"}, "rate", "a (count, period) pair"),
    ({"rate": (10, "1s")}, "rate", "a timedelta or a number of seconds"),
])
async def test_a_bad_limit_is_refused_naming_its_field_and_nothing_is_stored(
        producer: Producer, db: asyncpg.Connection, arguments: dict, field: str, message: str) -> None:
    with pytest.raises(InvalidJobError) as refused:
        await producer.set_queue_limits("reports", **arguments)
    assert refused.value.field == field and message in refused.value.message
    assert await db.fetchval("SELECT count(*) FROM chronoq.queue_controls") == 0


@pytest.mark.parametrize("queue", ["", "amq.x", "a b", "x" * 201, 7])
async def test_a_bad_queue_name_is_refused_by_every_control(producer: Producer, queue: object) -> None:
    for control in (producer.pause_queue(queue), producer.resume_queue(queue),  # type: ignore[arg-type]
                    producer.set_queue_limits(queue, max_running=1)):  # type: ignore[arg-type]
        with pytest.raises(InvalidJobError) as refused:
            await control
        assert refused.value.field == "queue"


def test_the_command_line_reads_a_rate_as_count_slash_period() -> None:
    assert rate("100/1s") == Rate(100, timedelta(seconds=1))
    assert rate(" 5 /250ms") == Rate(5, timedelta(milliseconds=250))
    assert check_limits(3, (10, 60)) == check_limits(3, rate("10/1m"))
    assert str(Rate(50, timedelta(seconds=1))) == "50/1s"
    for text, message in [("ten per second", "is not a rate like 100/1s"), ("10/soon", "is not a duration"),
                          ("0/1s", "outside 1..10000"), ("٣/1s", "is not a rate like 100/1s"),
                          ("10/2d", "at most"), ("10/0s", "at least 1 ms")]:
        with pytest.raises(argparse.ArgumentTypeError, match=re.escape(message)):
            rate(text)


async def test_limits_are_stored_replaced_and_lifted(producer: Producer, db: asyncpg.Connection) -> None:
    await producer.set_queue_limits("reports", max_running=4, rate=(100, timedelta(seconds=2)))
    row = await _status(producer, "reports")
    assert row is not None and (row.paused, row.max_running, row.rate_count, row.rate_period_s) == (False, 4, 100, 2.0)
    await producer.set_queue_limits("reports", rate=(5, 1))  # replaces both: max_running lifted
    row = await _status(producer, "reports")
    assert row is not None and (row.max_running, row.rate_count, row.rate_period_s) == (None, 5, 1.0)
    assert await producer.pause_queue("reports") is True
    assert await producer.pause_queue("reports") is False
    await producer.set_queue_limits("reports")  # no limits, but still paused
    row = await _status(producer, "reports")
    assert row is not None and row.paused and row.rate_count is None
    assert await producer.resume_queue("reports") is True
    assert await producer.resume_queue("reports") is False
    assert await db.fetchval("SELECT count(*) FROM chronoq.queue_controls") == 0  # runs freely again


async def test_a_paused_queue_keeps_its_due_jobs_while_other_queues_run_and_runs_them_on_resume(
        settings, producer: Producer) -> None:
    worker = Worker()
    ran: list[str] = []

    @worker.handler("mail")
    async def mail(ctx: JobContext, payload: dict) -> None:
        ran.append(f"mail {payload['n']}")

    @worker.handler("other")
    async def other(ctx: JobContext, payload: dict) -> None:
        ran.append("other")

    assert await producer.pause_queue("mail") is True
    async with running(Timer(settings)), running(WorkerService(worker, settings)):
        paused = [await producer.enqueue("mail", {"n": n}) for n in range(20)]
        free = await producer.enqueue("other", {})
        await all_finished(producer, [free])

        async def deferred() -> bool:
            row = await _status(producer, "mail")
            return row is not None and row.deferred == 20

        await eventually(deferred, what="the paused queue's 20 jobs deferred")
        assert ran == ["other"]
        assert (await producer.summary(paused))["pending"] == 20
        assert await producer.resume_queue("mail") is True
        summary = await all_finished(producer, paused)
    assert summary["succeeded"] == 20
    assert sorted(ran[1:]) == sorted(f"mail {n}" for n in range(20))
    row = await _status(producer, "mail")
    assert row is not None and row.deferred == 0 and not row.paused
