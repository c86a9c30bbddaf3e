"""Side tasks: a service's background loops are started, watched and stopped the same way; one that
dies stops its service loudly, and stopping cancels and awaits every one of them."""

from __future__ import annotations

import asyncio
import logging

import pytest

from chronoq._runtime.side_tasks import SideTaskFailed, SideTasks

log = logging.getLogger("tests.side_tasks")


def _failures(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "action", None) == "side_task_failed"]


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
