"""Side tasks: the loops a service runs beside its main one (the timer's pruner and submissions
intake retry, the worker's lanes), started, watched and stopped the same way.

A side task handles the failures it expects inside its own loop (a pruning round that hits an
unavailable database logs it and tries again next round). An exception that escapes it is a bug,
or a state nobody foresaw: the runner logs it at ERROR with the task's name and stops the whole
service, which then raises :class:`SideTaskFailed` from ``run()`` so that the process exits with
a failure and its supervisor (systemd, Kubernetes) restarts it with its own backoff.

It does not restart the task in place. procrastinate's worker stops itself when a side task
fails (``_monitor_side_tasks``), and River's maintenance services log a failed round and carry
on, but a panic ends the process; Oban restarts a crashed plugin under its OTP supervisor only
within a restart intensity, past which the failure escalates and Oban stops. An in-process
restart loop would hide a bug that fails every time, behind a service that looks alive while
one of its jobs is not done (nothing pruned, no submissions stored); a process restart also
starts over with fresh connections, which an in-process restart would not.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from chronoq.errors import ChronoqError


class SideTaskFailed(ChronoqError):
    """A side task of a service ended with an exception, so the service stopped."""

    def __init__(self, service: str, task: str, error: BaseException) -> None:
        self.service = service
        self.task = task
        self.error = error
        super().__init__(f"{service}: side task {task!r} failed: {type(error).__name__}: {error}"[:500])


class SideTasks:
    """The side tasks of one service. ``start`` names and watches a task; the first one that ends
    with an exception is logged (action ``side_task_failed``), kept in :attr:`failure`, and
    ``on_failure`` is called (the service's ``stop``). A task cancelled, or one that returns, is
    simply gone. ``stop`` cancels every task still running and waits for all of them."""

    def __init__(self, service: str, log: logging.Logger, on_failure: Callable[[], None]) -> None:
        self.service = service
        self.log = log
        self.on_failure = on_failure
        self.failure: SideTaskFailed | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def running(self) -> set[str]:
        """Names of the side tasks that have not ended."""
        return {task.get_name() for task in self._tasks}

    def start(self, name: str, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run ``coroutine`` as the side task ``name``. The task is returned so that a service
        may cancel one side task of its own accord (the worker's idle lanes at shutdown)."""
        task = asyncio.create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._ended)
        return task

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled() or (error := task.exception()) is None:
            return
        self.log.error("side task failed; stopping the service", exc_info=error, extra={
            "action": "side_task_failed", "service": self.service, "task": task.get_name(),
            "error": f"{type(error).__name__}: {error}"[:300]})
        if self.failure is None:
            self.failure = SideTaskFailed(self.service, task.get_name(), error)
            self.on_failure()

    async def stop(self) -> None:
        """Cancel every side task and wait until all have ended. Safe to call twice."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        # Their errors are logged by _ended; gather only waits.
        await asyncio.gather(*tasks, return_exceptions=True)

    def raise_failure(self) -> None:
        """Raise :class:`SideTaskFailed` if a side task failed: the service's ``run()`` calls it
        once it has stopped, so that the process exits with a failure."""
        if self.failure is not None:
            raise self.failure
