"""Crash and restart tests with real processes: SIGKILL, failpoints, a broker restart."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from chronoq import JobContext, Producer, Worker
from chronoq.consumer.service import WorkerService
from chronoq.timer import Timer
from tests.harness import EFFECTS_TABLE, all_finished, eventually, running

WORKER_TARGET = "tests.handlers:worker"


@pytest.fixture
async def effects(db) -> None:
    await db.execute(EFFECTS_TABLE)


async def effects_per_occurrence(db) -> dict[str, int]:
    rows = await db.fetch("SELECT occurrence_key, count(*) AS n FROM test_effects GROUP BY occurrence_key")
    return {r["occurrence_key"]: r["n"] for r in rows}


async def test_worker_killed_mid_handler_runs_the_job_again_elsewhere_with_one_effect(
    spawn, settings, producer: Producer, db, effects, tmp_path: Path
) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    victim = spawn("worker", WORKER_TARGET, "--queue", "hang-once", name="victim")
    await victim.wait_for_log("worker_started")
    job_id = await producer.enqueue("hang-once", {"marker_dir": str(markers)})
    async with running(Timer(settings)):
        await eventually(lambda: _exists(markers, "started-*"), what="the handler to start in the victim")
        assert victim.kill() == -9
        survivor = spawn("worker", WORKER_TARGET, "--queue", "hang-once", name="survivor")
        summary = await all_finished(producer, [job_id])
    assert summary["succeeded"] == 1
    counts = await effects_per_occurrence(db)
    assert list(counts.values()) == [1], counts
    pids = await db.fetch("SELECT pid FROM test_effects")
    assert pids[0]["pid"] == survivor.popen.pid
    assert survivor.terminate() == 0


async def _exists(folder: Path, pattern: str) -> bool:
    return await asyncio.to_thread(lambda: any(folder.glob(pattern)))


async def test_timer_killed_after_confirms_before_commit_publishes_twice_with_one_effect(
    spawn, settings, producer: Producer, db
) -> None:
    worker = Worker()
    runs: list[str] = []

    @worker.handler("payments")
    async def pay(ctx: JobContext, payload: dict) -> None:
        await ctx.db.execute("INSERT INTO charges VALUES ($1)", ctx.idempotency_key)
        runs.append(ctx.idempotency_key)

    await db.execute("CREATE TABLE charges (key text)")  # no unique constraint: a double charge would show
    job_id = await producer.enqueue("payments", {"amount": 42})
    doomed = spawn("timer", name="doomed-timer", CHRONOQ_FAILPOINTS="timer.after_confirm=kill")
    assert await doomed.exited() == -9  # died holding a confirmed message, before its commit
    # Its claim rolled back with its connection: the row is still due, never marked dispatched.
    assert await db.fetchval("SELECT dispatches FROM chronoq.wheel WHERE job_id = $1", job_id) == 0
    # One lane: the two copies run in the order they were published, the orphan first. (Side by
    # side, either may take the row's lock first; the other is then deferred or a duplicate.)
    service = WorkerService(worker, settings.model_copy(update={"concurrency": 1}))
    async with running(Timer(settings)):

        async def republished() -> bool:
            return await db.fetchval("SELECT dispatches FROM chronoq.wheel WHERE job_id = $1", job_id) == 1

        await eventually(republished, what="the second timer to publish the occurrence again")
        async with running(service):
            await all_finished(producer, [job_id])

            async def both_settled() -> bool:
                return service.outcomes["succeeded"] == 1 and service.outcomes["duplicate"] == 1

            await eventually(both_settled, what=f"the second copy to be deduplicated ({service.outcomes})")
    assert await db.fetchval("SELECT count(*) FROM charges") == 1
    # The orphan copy (its batch rolled back, so the wheel holds the second batch's dispatch id)
    # is not trusted as a first delivery: had it killed its worker, its start would have gone
    # uncounted. It goes back to the queue and runs alone, its start committed first; the
    # other copy then finds the result. One run.
    assert service.outcomes["deferred"] >= 1, service.outcomes
    assert len(runs) == 1


@pytest.mark.timeout(300)
async def test_two_timers_three_workers_two_thousand_jobs_each_effect_once(
    spawn, settings, producer: Producer, db, effects
) -> None:
    workers = [spawn("worker", WORKER_TARGET, "--queue", "effects", name=f"worker-{n}") for n in range(3)]
    for w in workers:
        await w.wait_for_log("worker_started")
    timers = [spawn("timer", name=f"timer-{n}") for n in range(2)]
    for t in timers:
        await t.wait_for_log("timer_started")
    ids = await producer.enqueue_many(
        [{"queue": "effects", "payload": {"i": i}, "delay": 0.5 + 2.0 * i / 2000} for i in range(2000)]
    )
    summary = await all_finished(producer, ids, timeout=120)
    assert summary["succeeded"] == 2000, summary
    counts = await effects_per_occurrence(db)
    assert len(counts) == 2000 and set(counts.values()) == {1}
    # The work was shared: every worker process ran some of it.
    pids = {r["pid"] for r in await db.fetch("SELECT DISTINCT pid FROM test_effects")}
    assert pids == {w.popen.pid for w in workers}
    assert [p.terminate() for p in [*timers, *workers]] == [0] * 5


@pytest.mark.timeout(300)
async def test_rabbitmq_restart_while_jobs_are_due_loses_nothing(spawn, settings, producer: Producer, db, effects) -> None:
    worker = spawn("worker", WORKER_TARGET, "--queue", "effects", name="worker")
    timer = spawn("timer", name="timer")
    await worker.wait_for_log("worker_started")
    await timer.wait_for_log("timer_started")
    ids = await producer.enqueue_many(
        [{"queue": "effects", "payload": {"i": i}, "delay": 0.2 + 4.0 * i / 400} for i in range(400)]
    )

    async def some_done() -> bool:
        return (await producer.summary(ids))["succeeded"] >= 20

    await eventually(some_done, what="the first jobs to run")
    _rabbitmqctl("stop_app")
    try:
        pending = (await producer.summary(ids))["pending"]
        assert pending > 0, "the broker went down after everything was done; the test proves nothing"
    finally:
        _rabbitmqctl("start_app")
    summary = await all_finished(producer, ids, timeout=120)
    assert summary["succeeded"] == 400, summary
    counts = await effects_per_occurrence(db)
    assert len(counts) == 400 and set(counts.values()) == {1}
    assert worker.terminate() == 0 and timer.terminate() == 0


def _rabbitmqctl(action: str) -> None:
    subprocess.run(["rabbitmqctl", action], check=True, capture_output=True, timeout=120)
    if action == "start_app":
        subprocess.run(["rabbitmqctl", "await_startup"], check=True, capture_output=True, timeout=120)


async def test_sigterm_lets_the_running_job_finish_and_exits_zero(
    spawn, settings, producer: Producer, db, effects, tmp_path: Path
) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    worker = spawn("worker", WORKER_TARGET, "--queue", "slow", name="worker")
    timer = spawn("timer", name="timer")
    await worker.wait_for_log("worker_started")
    job_id = await producer.enqueue("slow", {"marker_dir": str(markers), "seconds": 1.5})
    await eventually(lambda: _exists(markers, "started-*"), what="the slow job to start")
    assert worker.terminate() == 0
    assert timer.terminate() == 0
    job = await producer.get(job_id)
    assert job.state == "succeeded"
    assert await db.fetchval("SELECT count(*) FROM test_effects") == 1
    assert "worker_stopped" in worker.output()
