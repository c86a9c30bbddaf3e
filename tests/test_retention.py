"""Retention: the timer prunes history older than the retention period, in batches."""

from __future__ import annotations

from datetime import timedelta

from chronoq import JobContext, Producer, Worker
from chronoq.consumer.service import WorkerService
from chronoq.timer import Timer
from tests.harness import all_finished, eventually, running


async def _prune_once(settings) -> dict[str, int] | None:
    timer = Timer(settings)
    await timer.start()
    try:
        return await timer.prune_once()
    finally:
        await timer.close()


async def test_old_results_attempts_and_finished_jobs_are_pruned_recent_and_live_ones_kept(
    settings, producer: Producer, db
) -> None:
    worker = Worker()

    @worker.handler("history")
    async def history(ctx: JobContext, payload: dict) -> None:
        if payload["fail_once"] and ctx.attempt == 1:
            raise RuntimeError("once")

    old = [await producer.enqueue("history", {"fail_once": n == 0}, retry=None) for n in range(3)]
    recent = await producer.enqueue("history", {"fail_once": False})
    async with running(Timer(settings)), running(WorkerService(worker, settings)):
        await all_finished(producer, [*old, recent], timeout=30)
    live = await producer.enqueue("history", {"fail_once": False}, delay=3600)
    cron = await producer.schedule("history", {"fail_once": False}, cron="0 0 1 1 *")
    # A past tick of the recurring job, recorded as skipped: its result goes, the job stays.
    await db.execute("INSERT INTO chronoq.results (occurrence_key, job_id, queue, fire_at, state, attempt) "
                     "VALUES (chronoq.occurrence_key($1, '2020-01-01'), $1, 'history', '2020-01-01', 'skipped', 0)", cron)
    # Age the old jobs' history past the retention period (8 days > 7 by default). The live job is
    # as old, but it has no result yet: pruning follows results, not the jobs' age.
    await db.execute("UPDATE chronoq.results SET finished_at = finished_at - interval '8 days' WHERE job_id = ANY($1)",
                     [*old, cron])
    await db.execute("UPDATE chronoq.attempts SET finished_at = finished_at - interval '8 days' WHERE job_id = ANY($1)", old)
    await db.execute("UPDATE chronoq.jobs SET created_at = created_at - interval '8 days' WHERE id = ANY($1)", [*old, live, cron])
    counts = await _prune_once(settings)
    assert counts == {"results": 4, "attempts": 1, "jobs": 3}
    remaining = {r["id"] for r in await db.fetch("SELECT id FROM chronoq.jobs")}
    assert remaining == {recent, live, cron}  # finished old one-shots gone; live and recurring kept
    assert await db.fetchval("SELECT count(*) FROM chronoq.results WHERE job_id = $1", recent) == 1
    assert await db.fetchval("SELECT count(*) FROM chronoq.wheel WHERE job_id = ANY($1)", [live, cron]) == 2


async def test_a_one_shot_job_with_a_result_or_an_occurrence_left_is_not_pruned(settings, producer: Producer,
                                                                                  db) -> None:
    # A job with two results, one of them expired: the other, recent one is kept, so is the job.
    twice = await producer.enqueue("history", {}, delay=3600)
    await producer.cancel(twice)
    await db.execute("INSERT INTO chronoq.results (occurrence_key, job_id, queue, fire_at, state, attempt, finished_at) "
                     "VALUES (chronoq.occurrence_key($1, '2020-01-01'), $1, 'history', '2020-01-01', 'cancelled', 1, "
                     "now() - interval '8 days')", twice)
    # A job with an expired result and an occurrence in the wheel again (as a replay leaves it).
    replayed = await producer.enqueue("history", {}, delay=3600)
    await db.execute("INSERT INTO chronoq.results (occurrence_key, job_id, queue, fire_at, state, attempt, finished_at) "
                     "VALUES (chronoq.occurrence_key($1, '2020-01-01'), $1, 'history', '2020-01-01', 'dead', 1, "
                     "now() - interval '8 days')", replayed)
    counts = await _prune_once(settings)
    assert counts == {"results": 2, "attempts": 0, "jobs": 0}
    assert {r["id"] for r in await db.fetch("SELECT id FROM chronoq.jobs")} == {replayed, twice}


async def test_a_running_timer_prunes_by_itself(settings, producer: Producer, db) -> None:
    job_id = await producer.enqueue("history", {}, delay=3600)
    await producer.cancel(job_id)
    await db.execute("UPDATE chronoq.results SET finished_at = now() - interval '8 days'")
    await db.execute("UPDATE chronoq.jobs SET created_at = now() - interval '8 days'")
    async with running(Timer(settings)):

        async def pruned() -> bool:
            return await db.fetchval("SELECT count(*) FROM chronoq.jobs") == 0

        await eventually(pruned, what="the timer's pruner to remove the expired job")


async def test_only_one_timer_prunes_at_a_time(settings, db) -> None:
    settings = settings.model_copy(update={"retention": timedelta(minutes=1)})
    first, second = Timer(settings), Timer(settings)
    await first.start()
    await second.start()
    try:
        async with db.transaction():
            await db.execute("SELECT pg_advisory_xact_lock(7236784365301)")  # someone is pruning
            assert await first.prune_once() is None
        assert await second.prune_once() == {"results": 0, "attempts": 0, "jobs": 0}
    finally:
        await first.close()
        await second.close()


async def test_deleting_jobs_by_hand_deletes_their_occurrences_and_history(producer: Producer, db) -> None:
    # The wheel has no foreign key to its job (001_baseline.sql: it would make bulk enqueue pay one
    # lookup and one row lock per job); a statement-level trigger does what its cascade did.
    assert await db.fetchval(
        "SELECT count(*) FROM pg_constraint WHERE conrelid = 'chronoq.wheel'::regclass AND contype = 'f'"
    ) == 0
    doomed = [await producer.enqueue("history", {}, delay=3600) for _ in range(3)]
    cron = await producer.schedule("history", {}, cron="0 0 1 1 *")
    kept = await producer.enqueue("history", {}, delay=3600)
    cancelled = await producer.enqueue("history", {}, delay=3600)
    await producer.cancel(cancelled)  # leaves a 'cancelled' result row
    await db.execute("DELETE FROM chronoq.jobs WHERE id = ANY($1)", [*doomed, cron, cancelled])
    left = await db.fetch("SELECT job_id FROM chronoq.wheel")
    assert [r["job_id"] for r in left] == [kept]
    assert await db.fetchval("SELECT count(*) FROM chronoq.results") == 0


async def test_a_timer_drops_an_occurrence_whose_job_is_gone_and_runs_the_rest(settings, producer: Producer, db,
                                                                               caplog) -> None:
    worker = Worker()

    @worker.handler("history")
    async def history(ctx: JobContext, payload: dict) -> None:
        return None

    # What a job deleted by hand leaves if its next tick was being written meanwhile.
    await db.execute("INSERT INTO chronoq.wheel (occurrence_key, job_id, queue, fire_at, run_at, due_at) "
                     "VALUES ('999999999@2026-01-01T00:00:00.000000Z', 999999999, 'history', now(), now(), now())")
    job = await producer.enqueue("history", {})
    async with running(Timer(settings)), running(WorkerService(worker, settings)):
        await all_finished(producer, [job], timeout=30)

        async def dropped() -> bool:
            return await db.fetchval("SELECT count(*) FROM chronoq.wheel WHERE job_id = 999999999") == 0

        await eventually(dropped, what="the timer to drop the occurrence of a job that is gone")
    assert [r.job_id for r in caplog.records if getattr(r, "action", None) == "orphan_dropped"] == [999999999]
