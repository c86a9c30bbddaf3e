"""The pipeline runs under the least-privilege roles of `chronoq migrate --roles`, and those
roles cannot run DDL or reach outside their component's work."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from chronoq import JobContext, Producer, RetryPolicy, Worker
from chronoq.consumer.service import WorkerService
from chronoq.timer import Timer
from tests.conftest import child_env
from tests.harness import all_finished, running


def as_role(url: str, role: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=f"{role}@{host}"))


@pytest.fixture
def roles(settings) -> dict[str, str]:
    result = subprocess.run([sys.executable, "-m", "chronoq", "migrate", "--roles"], env=child_env(settings),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return {r: as_role(settings.database_url, f"chronoq_{r}") for r in ("producer", "timer", "worker")}


async def test_the_pipeline_runs_under_least_privilege_roles(settings, roles) -> None:
    worker = Worker()

    @worker.handler("restricted")
    async def restricted(ctx: JobContext, payload: dict) -> str:
        if payload["fail"]:
            raise RuntimeError("no")
        return "ok"

    async with Producer(roles["producer"]) as producer:
        ok = await producer.enqueue("restricted", {"fail": False}, key="k")
        bad = await producer.enqueue("restricted", {"fail": True}, retry=RetryPolicy(max_attempts=2, backoff_base=timedelta(0)))
        many = await producer.enqueue_many([{"queue": "restricted", "payload": {"fail": False}}] * 5)
        cron = await producer.schedule("restricted", {"fail": False}, cron="* * * * * *", key="every-second")
        await producer.pause(cron)
        await producer.resume(cron)
        timer_settings = settings.model_copy(update={"database_url": roles["timer"]})
        worker_settings = settings.model_copy(update={"database_url": roles["worker"]})
        async with running(Timer(timer_settings)), running(WorkerService(worker, worker_settings)):
            await all_finished(producer, [ok, bad, *many])
        await producer.cancel(cron)
        assert (await producer.get(ok)).state == "succeeded"
        assert (await producer.get(bad)).state == "dead"
        assert [s.queue for s in await producer.status()] == ["restricted"]
        timer = Timer(timer_settings)
        await timer.start()
        try:
            assert await timer.prune_once() is not None
        finally:
            await timer.close()


@pytest.mark.parametrize("role", ["producer", "timer", "worker"])
async def test_no_role_can_run_ddl_or_drop_history(roles, role) -> None:
    conn = await asyncpg.connect(roles[role])
    try:
        for statement in ("CREATE TABLE chronoq.intruder (x int)", "CREATE TABLE public.intruder (x int)",
                          "DROP TABLE chronoq.results", "TRUNCATE chronoq.jobs",
                          "ALTER TABLE chronoq.wheel ADD COLUMN x int"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(statement)
        if role == "worker":
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("DELETE FROM chronoq.results")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("DELETE FROM chronoq.jobs")
    finally:
        await conn.close()
