"""Running chronoq services in tests: in-process (driven step by step or in the background) and
as real subprocesses that can be SIGTERMed and SIGKILLed."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from chronoq import Producer
from chronoq.consumer.service import WorkerService
from chronoq.timer import Timer

EFFECTS_TABLE = """
CREATE TABLE IF NOT EXISTS test_effects (
    job_id bigint NOT NULL, occurrence_key text NOT NULL, attempt int NOT NULL,
    pid int NOT NULL, at timestamptz NOT NULL DEFAULT now()
)
"""


@asynccontextmanager
async def running(service: Timer | WorkerService) -> AsyncIterator[Timer | WorkerService]:
    """Run a service in the background for the duration of the block, then stop it gracefully."""
    task = asyncio.create_task(service.run())
    ready = asyncio.create_task(service.ready.wait())
    await asyncio.wait({task, ready}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    ready.cancel()
    if task.done():
        task.result()  # raise the start-up failure
    assert service.ready.is_set(), f"{type(service).__name__} did not start within 30 s"
    try:
        yield service
    finally:
        service.stop()
        await asyncio.wait_for(task, 60)


async def eventually(check: Callable[[], Awaitable[bool]], *, timeout: float = 30, what: str = "condition") -> None:
    """Wait until ``check()`` is true, looking every 50 ms; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


async def all_finished(producer: Producer, ids: list[int], *, timeout: float = 60) -> dict:
    """Wait until no job in ``ids`` has a live occurrence; return their outcome summary."""
    summary: dict = {}

    async def done() -> bool:
        nonlocal summary
        summary = await producer.summary(ids)
        return summary["pending"] == 0

    try:
        await eventually(done, timeout=timeout, what=f"{len(ids)} jobs to finish")
    except AssertionError as exc:
        async with producer.pool.acquire() as conn:
            live = await conn.fetch("SELECT occurrence_key, attempt, due_at - now() AS due_in, dispatches, starts, head"
                                    " FROM chronoq.wheel WHERE job_id = ANY($1) LIMIT 5", ids)
            activity = await conn.fetch("SELECT state, wait_event_type, left(query, 80) AS query FROM pg_stat_activity"
                                        " WHERE datname = current_database() AND pid <> pg_backend_pid()")
        raise AssertionError(f"{exc}; live: {[dict(r) for r in live]}; sessions: {[dict(r) for r in activity]}") from None
    return summary


class Process:
    """A ``python -m chronoq ...`` subprocess whose output goes to a log file."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self._handle = log.open("ab")
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "chronoq", *args], env=env, stdout=self._handle, stderr=self._handle
        )

    async def wait_for_log(self, marker: str, timeout: float = 30) -> None:
        async def seen() -> bool:
            if self.popen.poll() is not None and marker.encode() not in self.log.read_bytes():
                raise AssertionError(f"process exited with {self.popen.returncode}:\n{self.output()}")
            return marker.encode() in self.log.read_bytes()

        await eventually(seen, timeout=timeout, what=f"{marker!r} in {self.log.name}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-5000:]

    def kill(self) -> int:
        self.popen.send_signal(signal.SIGKILL)
        return self.popen.wait(timeout=30)

    def terminate(self, timeout: float = 60) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        return self.popen.wait(timeout=timeout)

    async def exited(self, timeout: float = 30) -> int:
        async def gone() -> bool:
            return self.popen.poll() is not None

        await eventually(gone, timeout=timeout, what=f"{self.log.name} to exit")
        return self.popen.returncode

    def close(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(timeout=30)
        self._handle.close()


async def dispatch_once(settings) -> int:
    """One timer batch, driven by hand: claim, publish, mark. Returns the rows handled."""
    timer = Timer(settings)
    await timer.start()
    try:
        return await timer.run_once()
    finally:
        await timer.close()
