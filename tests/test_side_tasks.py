"""Side tasks: a service's background loops are started, watched and stopped the same way; one that
dies stops its service loudly, and stopping cancels and awaits every one of them."""

from __future__ import annotations

import asyncio
import logging

import pytest

from chronoq import JobContext, Producer, Worker
from chronoq._broker.consumer import Incoming
from chronoq._runtime.side_tasks import SideTaskFailed, SideTasks
from chronoq.consumer.service import WorkerService
from chronoq.timer import Timer
from tests.harness import dispatch_once, eventually, running

log = logging.getLogger("tests.side_tasks")


def _failures(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "action", None) == "side_task_failed"]


async def _started(service: Timer | WorkerService) -> asyncio.Task[None]:
    run = asyncio.create_task(service.run())
    ready = asyncio.create_task(service.ready.wait())
    await asyncio.wait({run, ready}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    ready.cancel()
    if run.done():
        run.result()
    assert service.ready.is_set(), "the service did not start within 30 s"
    return run


async def test_a_side_task_that_raises_stops_the_timer_loudly(settings, producer: Producer, db, caplog) -> None:
    caplog.set_level(logging.INFO, logger="chronoq.timer")
    timer = Timer(settings)
    run = await _started(timer)
    assert timer.side_tasks.running == {"pruner"}
    released = asyncio.Event()

    async def doomed() -> None:
        await released.wait()
        raise RuntimeError("the side task broke")

    timer.side_tasks.start("doomed", doomed())
    released.set()
    with pytest.raises(SideTaskFailed) as failed:
        await asyncio.wait_for(run, 30)  # the timer stops by itself, and says why
    assert failed.value.task == "doomed" and isinstance(failed.value.error, RuntimeError)
    (record,) = _failures(caplog)
    assert record.levelno == logging.ERROR and record.task == "doomed" and record.service == timer.name
    assert "the side task broke" in record.error
    assert timer.side_tasks.running == set()  # the pruner was cancelled with it
    assert timer._pool is None and timer._dispatch_pool is None  # and the timer closed
    assert any(getattr(r, "action", None) == "timer_stopped" for r in caplog.records)
    # Nothing was lost: another timer dispatches what this one would have.
    job_id = await producer.enqueue("after.failure", {})
    assert await dispatch_once(settings) == 1
    assert await db.fetchval("SELECT dispatches FROM chronoq.wheel WHERE job_id = $1", job_id) == 1


async def test_stopping_the_timer_cancels_and_awaits_every_side_task(settings, caplog) -> None:
    timer = Timer(settings)
    run = await _started(timer)
    forever = timer.side_tasks.start("forever", asyncio.Event().wait())
    pruner = next(t for t in asyncio.all_tasks() if t.get_name() == "pruner")
    timer.stop()
    await asyncio.wait_for(run, 30)  # a clean stop raises nothing
    assert forever.cancelled() and pruner.cancelled()  # both ended before run() returned
    assert timer.side_tasks.running == set() and timer.side_tasks.failure is None
    assert _failures(caplog) == []


async def test_a_side_task_that_returns_is_gone_and_not_a_failure() -> None:
    stops: list[str] = []
    tasks = SideTasks("svc", log, on_failure=lambda: stops.append("stop"))

    async def once() -> None:
        return None

    task = tasks.start("once", once())
    await task
    await tasks.stop()
    assert tasks.running == set() and tasks.failure is None and stops == []
    tasks.raise_failure()  # nothing to raise


async def test_the_first_failure_stops_the_service_once_and_every_failure_is_logged(caplog) -> None:
    stops: list[str] = []
    tasks = SideTasks("svc", log, on_failure=lambda: stops.append("stop"))
    go = asyncio.Event()

    async def fails(error: Exception) -> None:
        await go.wait()
        raise error

    first = tasks.start("first", fails(KeyError("k")))
    second = tasks.start("second", fails(ValueError("v")))
    survivor = tasks.start("survivor", asyncio.Event().wait())
    go.set()
    await asyncio.wait({first, second})
    await tasks.stop()
    assert stops == ["stop"]
    assert tasks.failure is not None and tasks.failure.task == "first"
    assert sorted(r.task for r in _failures(caplog)) == ["first", "second"]
    assert survivor.cancelled() and tasks.running == set()
    with pytest.raises(SideTaskFailed, match="side task 'first' failed: KeyError"):
        tasks.raise_failure()


async def test_stop_waits_for_a_side_task_that_cleans_up_and_is_safe_twice() -> None:
    tasks = SideTasks("svc", log, on_failure=lambda: None)
    entered, cleaned = asyncio.Event(), asyncio.Event()

    async def cleans_up() -> None:
        try:
            entered.set()
            await asyncio.Event().wait()
        finally:
            await asyncio.shield(asyncio.create_task(entered.wait()))  # an await while cancelled
            cleaned.set()

    task = tasks.start("cleans_up", cleans_up())
    await entered.wait()
    await tasks.stop()
    assert cleaned.is_set() and task.cancelled()
    await tasks.stop()  # nothing left: returns at once
    assert tasks.failure is None


async def test_a_lane_that_dies_stops_the_worker_loudly_and_its_delivery_runs_elsewhere(
        settings, producer: Producer, db, caplog) -> None:
    caplog.set_level(logging.INFO, logger="chronoq.worker")
    worker = Worker()

    @worker.handler("lanes")
    async def handle(ctx: JobContext, payload: dict) -> None:
        return None

    service = WorkerService(worker, settings, concurrency=2)
    run = await _started(service)
    assert service.side_tasks.running == {"lane-0", "lane-1"}

    def broken(first: Incoming) -> list[Incoming]:
        raise RuntimeError("the lane broke")

    service.take_group = broken  # type: ignore[method-assign]  # a lane's own step fails, outside any group
    job_id = await producer.enqueue("lanes", {})
    assert await dispatch_once(settings) == 1
    with pytest.raises(SideTaskFailed) as failed:
        await asyncio.wait_for(run, 60)
    assert failed.value.task.startswith("lane-") and isinstance(failed.value.error, RuntimeError)
    (record,) = _failures(caplog)
    assert record.levelno == logging.ERROR and record.service == service.name
    assert service.side_tasks.running == set()
    # The delivery it held was never settled: the broker hands it to the next worker.
    async with running(WorkerService(worker, settings)):
        await eventually(lambda: db.fetchval(
            "SELECT count(*) = 1 FROM chronoq.results WHERE job_id = $1", job_id), what="the job ran elsewhere")
