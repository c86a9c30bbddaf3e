"""Replace and debounce by key, end to end through the real Postgres and RabbitMQ: a replace
before dispatch moves the pending run, a replace while it runs adds exactly one trailing run with
the last payload, debounce pushes the run out but never past max_wait, eight producers racing
on one key get bounded runs, the last payload winning, each run exactly once; and a timer or a
worker killed mid-way loses nothing and runs nothing twice."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import orjson
import pytest

from chronoq import InvalidJobError, JobContext, Producer, Worker
from chronoq.consumer.service import WorkerService
from chronoq.timer import Timer
from tests.conftest import child_env
from tests.harness import EFFECTS_TABLE, Process, all_finished, eventually, running

RUNS_TABLE = """
CREATE TABLE IF NOT EXISTS test_runs (
    occurrence_key text NOT NULL, payload jsonb, started_at timestamptz NOT NULL, due_by timestamptz
)
"""


def recording_worker(queue: str, hold: dict[Any, asyncio.Event] | None = None) -> tuple[Worker, list[dict]]:
    """A worker whose handler records each run in ``test_runs`` through ``ctx.db`` (so a run
    counts only if its outcome committed) and in the returned list; a payload found in ``hold``
    waits for its event first."""
    worker = Worker()
    runs: list[dict] = []

    @worker.handler(queue)
    async def run(ctx: JobContext, payload: Any) -> None:
        started = await ctx.db.fetchval("SELECT clock_timestamp()")
        due_by = await ctx.db.fetchval("SELECT due_by FROM chronoq.wheel WHERE occurrence_key = $1", ctx.idempotency_key)
        runs.append({"key": ctx.idempotency_key, "payload": payload, "started_at": started})
        if hold is not None and payload in hold:
            await hold[payload].wait()
        await ctx.db.execute("INSERT INTO test_runs VALUES ($1, $2::text::jsonb, $3, $4)",
                             ctx.idempotency_key, _json(payload), started, due_by)

    return worker, runs


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


async def committed_runs(db) -> list[dict]:
    return [dict(r) for r in await db.fetch("SELECT occurrence_key, payload, started_at, due_by FROM test_runs"
                                            " ORDER BY started_at")]


@pytest.fixture
async def runs_table(db) -> None:
    await db.execute(RUNS_TABLE)


async def test_keep_stores_nothing_for_a_stored_key_and_replace_moves_the_pending_run(producer: Producer, db) -> None:
    job = await producer.enqueue("recompute", {"v": 1}, key="k", delay=timedelta(hours=1))
    before = await db.fetchrow("SELECT occurrence_key, due_at FROM chronoq.wheel WHERE job_id = $1", job)
    assert await producer.enqueue("recompute", {"v": 2}, key="k", delay=timedelta(hours=2)) == job
    assert await db.fetchval("SELECT payload FROM chronoq.jobs WHERE id = $1", job) == '{"v": 1}'
    assert dict(await db.fetchrow("SELECT occurrence_key, due_at FROM chronoq.wheel WHERE job_id = $1", job)) == dict(before)

    assert await producer.enqueue("recompute", {"v": 3}, key="k", delay=timedelta(minutes=5), on_conflict="replace") == job
    assert await db.fetchval("SELECT payload FROM chronoq.jobs WHERE id = $1", job) == '{"v": 3}'
    rows = await db.fetch("SELECT occurrence_key, fire_at, due_at, now() AS now FROM chronoq.wheel WHERE job_id = $1", job)
    assert len(rows) == 1  # the pending run moved: no second one
    (row,) = rows
    assert row["due_at"] == row["fire_at"] and abs((row["due_at"] - row["now"]) - timedelta(minutes=5)) < timedelta(seconds=5)
    assert row["occurrence_key"] != before["occurrence_key"] and row["occurrence_key"].startswith(f"{job}@")


async def test_a_replace_before_dispatch_runs_once_with_the_new_payload_at_the_new_time(
    settings, producer: Producer, db, runs_table
) -> None:
    worker, _ = recording_worker("recompute")
    job = await producer.enqueue("recompute", {"v": 1}, key="k", delay=timedelta(hours=1))
    replaced_at = await db.fetchval("SELECT now()")
    await producer.enqueue("recompute", {"v": 2}, key="k", delay=timedelta(milliseconds=500), on_conflict="replace")
    async with running(Timer(settings)), running(WorkerService(worker, settings)):
        summary = await all_finished(producer, [job], timeout=20)
    assert summary["succeeded"] == 1
    committed = await committed_runs(db)
    assert [r["payload"] for r in committed] == ['{"v": 2}']
    assert committed[0]["started_at"] >= replaced_at + timedelta(milliseconds=500)
    view = await producer.get(job)
    assert [o.state for o in view.occurrences] == ["succeeded"]


async def test_replaces_while_a_run_is_in_flight_add_exactly_one_trailing_run_with_the_last_payload(
    settings, producer: Producer, db, runs_table
) -> None:
    release = asyncio.Event()
    worker, runs = recording_worker("recompute", hold={1: release})
    job = await producer.enqueue("recompute", 1, key="k")
    async with running(Timer(settings)), running(WorkerService(worker, settings)):
        async def first_run_started() -> bool:
            return bool(runs)

        await eventually(first_run_started, timeout=15, what="the first run to start")

        async def trailing_run_waits() -> bool:
            # A timer has claimed the trailing run and left it waiting for the first one.
            return bool(await db.fetchval("SELECT due_at > run_at FROM chronoq.wheel WHERE job_id = $1 AND head", job))

        for value in range(2, 7):
            await producer.enqueue("recompute", value, key="k", on_conflict="replace")
            await eventually(trailing_run_waits, timeout=10, what=f"the trailing run (payload {value}) to wait")
        assert [r["payload"] for r in runs] == [1]
        release.set()
        await all_finished(producer, [job], timeout=20)
    committed = await committed_runs(db)
    assert [r["payload"] for r in committed] == ["1", "6"]
    assert len({r["occurrence_key"] for r in committed}) == 2
    assert committed[1]["started_at"] > committed[0]["started_at"]
    assert [o.state for o in (await producer.get(job)).occurrences] == ["succeeded", "succeeded"]


async def test_a_replace_after_the_job_finished_runs_it_again_with_the_new_payload(
    settings, producer: Producer, db, runs_table
) -> None:
    worker, _ = recording_worker("recompute")
    async with running(Timer(settings)), running(WorkerService(worker, settings)):
        job = await producer.enqueue("recompute", "first", key="k")
        await all_finished(producer, [job], timeout=20)
        # keep: the finished job stays as it is until retention prunes it.
        assert await producer.enqueue("recompute", "kept", key="k") == job
        # Asked for at a time before the first run: the new run still gets a key of its own.
        first_fire = (await producer.get(job)).occurrences[0].fire_at
        assert await producer.enqueue("recompute", "second", key="k", run_at=first_fire, on_conflict="replace") == job
        await all_finished(producer, [job], timeout=20)
    committed = await committed_runs(db)
    assert [r["payload"] for r in committed] == ['"first"', '"second"']
    occurrences = (await producer.get(job)).occurrences
    assert [o.state for o in occurrences] == ["succeeded", "succeeded"]
    assert occurrences[1].fire_at > occurrences[0].fire_at


async def test_a_cancelled_job_is_not_revived_by_a_replace(producer: Producer, db) -> None:
    job = await producer.enqueue("recompute", 1, key="k", delay=timedelta(hours=1))
    assert await producer.cancel(job)
    assert await producer.enqueue("recompute", 2, key="k", on_conflict="replace") == job
    assert await producer.enqueue("recompute", 3, key="k", debounce=timedelta(seconds=1)) == job
    assert await db.fetchval("SELECT count(*) FROM chronoq.wheel") == 0
    assert await db.fetchval("SELECT payload FROM chronoq.jobs WHERE id = $1", job) == "1"


async def test_the_key_of_a_recurring_job_cannot_be_replaced_and_nothing_changes(producer: Producer, db) -> None:
    job = await producer.schedule("recompute", 1, cron="0 * * * *", key="k")
    with pytest.raises(InvalidJobError) as caught:
        await producer.enqueue("recompute", 2, key="k", on_conflict="replace")
    assert caught.value.field == "key" and "recurring" in caught.value.message
    assert await db.fetchval("SELECT payload FROM chronoq.jobs WHERE id = $1", job) == "1"


async def test_debounce_pushes_the_pending_run_out_on_every_enqueue(producer: Producer, db) -> None:
    job = await producer.enqueue("recompute", 1, key="k", debounce=timedelta(seconds=30), max_wait=timedelta(minutes=5))
    first = await db.fetchrow("SELECT due_at, due_by FROM chronoq.wheel WHERE job_id = $1", job)
    assert first["due_by"] - first["due_at"] == timedelta(minutes=5) - timedelta(seconds=30)  # both from one now()
    await db.execute("SELECT pg_sleep(0.2)")  # the database clock moves on: the next enqueue is later
    await producer.enqueue("recompute", 2, key="k", debounce=timedelta(seconds=30), max_wait=timedelta(minutes=5))
    second = await db.fetchrow("SELECT due_at, due_by FROM chronoq.wheel WHERE job_id = $1", job)
    assert second["due_at"] >= first["due_at"] + timedelta(milliseconds=200)
    assert second["due_by"] == first["due_by"]  # fixed by the enqueue that created the run
    # A debounce longer than what is left of max_wait stops at due_by.
    await producer.enqueue("recompute", 3, key="k", debounce=timedelta(minutes=10), max_wait=timedelta(hours=1))
    third = await db.fetchrow("SELECT due_at, due_by FROM chronoq.wheel WHERE job_id = $1", job)
    assert third["due_at"] == first["due_by"] and third["due_by"] == first["due_by"]
    assert await db.fetchval("SELECT payload FROM chronoq.jobs WHERE id = $1", job) == "3"


async def test_debounce_never_holds_a_run_past_max_wait_and_the_last_payload_runs_last(
    settings, producer: Producer, db, runs_table
) -> None:
    debounce, max_wait = timedelta(seconds=1), timedelta(seconds=2)
    worker, _ = recording_worker("recompute")
    async with running(Timer(settings)), running(WorkerService(worker, settings)):
        first_enqueue = await db.fetchval("SELECT now()")
        job = 0
        n = 0
        # Enqueues every 0.2 s, five times faster than the debounce: only max_wait makes it run.
        while (await db.fetchval("SELECT now()")) - first_enqueue < timedelta(seconds=3.5):
            n += 1
            job = await producer.enqueue("recompute", n, key="k", debounce=debounce, max_wait=max_wait)
            await db.execute("SELECT pg_sleep(0.2)")
        await all_finished(producer, [job], timeout=20)
    committed = await committed_runs(db)
    assert committed, "nothing ran"
    first_run = committed[0]["started_at"]
    assert first_run - first_enqueue <= max_wait + timedelta(seconds=1), first_run - first_enqueue
    for r in committed:
        assert r["due_by"] is not None and r["started_at"] <= r["due_by"] + timedelta(seconds=1), r
    assert committed[-1]["payload"] == str(n)
    assert len(committed) <= 3  # 3.5 s of enqueues: at most one run per max_wait, and the last


async def test_eight_producers_racing_replace_and_debounce_on_one_key_give_bounded_runs_and_the_last_payload(
    settings, db, runs_table
) -> None:
    debounce, max_wait, rounds = timedelta(milliseconds=300), timedelta(seconds=1), 15
    worker, _ = recording_worker("recompute")
    producers = [Producer(settings.database_url) for _ in range(8)]
    for p in producers:
        await p.open()
    try:
        async with running(Timer(settings)), running(Timer(settings)), running(WorkerService(worker, settings)):
            async def produce(index: int, p: Producer) -> set[int]:
                ids = set()
                for n in range(rounds):
                    payload = {"producer": index, "n": n}
                    if n % 3 == 2:  # some plain replaces among the debounces, due at once
                        ids.add(await p.enqueue("recompute", payload, key="k", on_conflict="replace"))
                    else:
                        ids.add(await p.enqueue("recompute", payload, key="k", debounce=debounce, max_wait=max_wait))
                    await asyncio.sleep(0.02 * (index % 3))  # producers at different paces, not in lockstep
                return ids

            ids = set().union(*await asyncio.gather(*(produce(i, p) for i, p in enumerate(producers))))
            assert len(ids) == 1
            (job,) = ids
            # The job row holds the payload of the enqueue that committed last.
            last = await db.fetchval("SELECT payload::text FROM chronoq.jobs WHERE id = $1", job)
            await all_finished(producers[0], [job], timeout=30)
        occurrences = (await producers[0].get(job)).occurrences
    finally:
        for p in producers:
            await p.close()
    committed = await committed_runs(db)
    keys = [r["occurrence_key"] for r in committed]
    assert len(keys) == len(set(keys)), "an occurrence ran twice"
    # The enqueue that committed last is the last of one of the producers: its payload ran last.
    assert orjson.loads(last)["n"] == rounds - 1
    assert committed[-1]["payload"] == last
    # Successive runs' occurrences are created after the previous dispatch and due no sooner than
    # a debounce after, or at once for a plain replace: bounded by the enqueues, well below them.
    assert 1 <= len(committed) <= 8 * rounds // 2, len(committed)
    for r in committed:
        if r["due_by"] is not None:
            assert r["started_at"] <= r["due_by"] + timedelta(seconds=1), r
    assert all(o.state == "succeeded" for o in occurrences)
    assert len(occurrences) == len(committed)


async def test_a_bulk_enqueue_replaces_in_input_order_within_a_key(producer: Producer, db) -> None:
    job = await producer.enqueue("recompute", 0, key="a", delay=timedelta(hours=1))
    ids = await producer.enqueue_many([
        {"queue": "recompute", "payload": 1, "key": "a", "on_conflict": "replace", "delay": timedelta(minutes=1)},
        {"queue": "recompute", "payload": 1, "key": "b", "on_conflict": "replace"},
        {"queue": "recompute", "payload": 2, "key": "b", "on_conflict": "replace", "delay": timedelta(minutes=2)},
        {"queue": "recompute", "payload": 9, "key": "a"},  # keep: changes nothing
        {"queue": "recompute", "payload": 3, "key": "b", "debounce": timedelta(seconds=30)},
    ])
    assert ids[0] == ids[3] == job and ids[1] == ids[2] == ids[4] != job
    assert await db.fetchval("SELECT payload FROM chronoq.jobs WHERE id = $1", job) == "1"
    assert await db.fetchval("SELECT payload FROM chronoq.jobs WHERE id = $1", ids[1]) == "3"
    rows = await db.fetch("SELECT job_id, due_at - now() AS due_in FROM chronoq.wheel ORDER BY job_id")
    assert [r["job_id"] for r in rows] == [job, ids[1]]
    assert abs(rows[0]["due_in"] - timedelta(minutes=1)) < timedelta(seconds=5)
    assert abs(rows[1]["due_in"] - timedelta(seconds=30)) < timedelta(seconds=5)



async def test_a_replace_while_the_timer_that_published_the_run_dies_before_its_commit_runs_the_new_payload_once(
    spawn, settings, producer: Producer, db, runs_table
) -> None:
    worker, _ = recording_worker("recompute")
    job = await producer.enqueue("recompute", 1, key="k")
    doomed = spawn("timer", name="doomed-timer", CHRONOQ_FAILPOINTS="timer.after_confirm=kill")
    assert await doomed.exited() == -9  # died holding a confirmed message, before its commit
    orphan_key = await db.fetchval("SELECT occurrence_key FROM chronoq.wheel WHERE job_id = $1 AND dispatches = 0", job)
    assert orphan_key is not None  # the broker holds a copy of this occurrence, with payload 1
    # Due a little later: the orphan copy reaches a worker (handed back, then redelivered) first.
    await producer.enqueue("recompute", 2, key="k", on_conflict="replace", delay=timedelta(seconds=1))
    async with running(Timer(settings)), running(WorkerService(worker, settings.model_copy(update={"concurrency": 1}))):
        await all_finished(producer, [job], timeout=30)

        async def queue_drained() -> bool:  # the orphan copy is consumed too (dropped as stale)
            return not await db.fetchval("SELECT count(*) FROM chronoq.wheel")

        await eventually(queue_drained, what="the wheel to empty")
    committed = await committed_runs(db)
    assert [r["payload"] for r in committed] == ["2"], committed
    assert committed[0]["occurrence_key"] != orphan_key
    assert not await db.fetchval("SELECT count(*) FROM chronoq.results WHERE occurrence_key = $1", orphan_key)


async def test_a_worker_killed_mid_run_with_a_trailing_run_pending_loses_nothing_and_runs_each_once(
    spawn, settings, producer: Producer, db, tmp_path
) -> None:
    await db.execute(EFFECTS_TABLE)
    markers = tmp_path / "markers"
    markers.mkdir()
    victim = spawn("worker", "tests.handlers:worker", "--queue", "hang-once", name="victim")
    await victim.wait_for_log("worker_started")
    job = await producer.enqueue("hang-once", {"marker_dir": str(markers), "v": 1}, key="k")
    async with running(Timer(settings)):

        async def first_run_hangs() -> bool:
            return await asyncio.to_thread(lambda: any(markers.glob("started-*")))

        await eventually(first_run_hangs, what="the first run to start in the victim")
        for value in (2, 3, 4):
            await producer.enqueue("hang-once", {"marker_dir": str(markers), "v": value}, key="k", on_conflict="replace")
        assert victim.kill() == -9
        survivor = spawn("worker", "tests.handlers:worker", "--queue", "hang-once", name="survivor")
        summary = await all_finished(producer, [job], timeout=60)
    assert summary["succeeded"] == 2
    effects = await db.fetch("SELECT occurrence_key, pid, at FROM test_effects ORDER BY at")
    assert len({e["occurrence_key"] for e in effects}) == len(effects) == 2, effects
    # Both committed by the survivor: the trailing run waited for the first, which only the
    # survivor finished.
    assert {e["pid"] for e in effects} == {survivor.popen.pid}
    assert await db.fetchval("SELECT payload->>'v' FROM chronoq.jobs WHERE id = $1", job) == "4"
    assert survivor.terminate() == 0


async def test_eight_producers_racing_on_one_key_while_workers_are_killed_mid_run_lose_nothing_and_run_each_once(
    settings, db, runs_table, tmp_path
) -> None:
    debounce, max_wait, rounds = timedelta(milliseconds=200), timedelta(milliseconds=600), 30
    markers = tmp_path / "markers"
    markers.mkdir()
    env = child_env(settings, CHRONOQ_CONCURRENCY="2", CHRONOQ_BATCH_SIZE="4")
    workers: list[Process] = []

    def start_worker() -> None:
        workers.append(Process(["worker", "tests.handlers:worker", "--queue", "debounced"], env,
                               tmp_path / f"w{len(workers)}.log"))

    async def supervise(stop: asyncio.Event) -> None:
        """Two workers at all times: one killed by its job is replaced at once."""
        while not stop.is_set():
            alive = [w for w in workers if w.popen.poll() is None]
            for _ in range(2 - len(alive)):
                start_worker()
            await asyncio.sleep(0.05)

    producers = [Producer(settings.database_url) for _ in range(8)]
    for p in producers:
        await p.open()
    stop = asyncio.Event()
    supervisor = asyncio.create_task(supervise(stop))
    try:
        await eventually(lambda: _started(workers), timeout=30, what="two workers to start")
        async with running(Timer(settings)):

            async def produce(index: int, p: Producer) -> set[int]:
                ids = set()
                for n in range(rounds):
                    # The first run of every occurrence kills its worker.
                    payload = {"producer": index, "n": n, "kill": True, "marker_dir": str(markers)}
                    ids.add(await p.enqueue("debounced", payload, key="k", debounce=debounce, max_wait=max_wait))
                    await asyncio.sleep(0.03 * (1 + index % 3))
                return ids

            ids = set().union(*await asyncio.gather(*(produce(i, p) for i, p in enumerate(producers))))
            (job,) = ids
            last = await db.fetchval("SELECT payload::text FROM chronoq.jobs WHERE id = $1", job)
            await all_finished(producers[0], [job], timeout=60)
            occurrences = (await producers[0].get(job)).occurrences
    finally:
        stop.set()
        await supervisor
        for p in producers:
            await p.close()
        for w in workers:
            w.close()
    committed = await committed_runs(db)
    assert len(list(markers.glob("killed-*"))) == len(committed), "a run was not killed once"
    keys = [r["occurrence_key"] for r in committed]
    assert len(keys) == len(set(keys)), "an occurrence ran twice"
    assert sorted(keys) == sorted(o.occurrence_key for o in occurrences)  # none lost: each ended, once
    assert all(o.state == "succeeded" for o in occurrences)
    assert orjson.loads(last)["n"] == rounds - 1 and committed[-1]["payload"] == last
    assert 1 <= len(committed) <= 8 * rounds // 2, len(committed)
    for r in committed:
        # Due by due_by; a run killed once starts again at its redelivery, which is immediate.
        assert r["started_at"] <= r["due_by"] + timedelta(seconds=1), r


async def _started(workers: list[Process]) -> bool:
    return sum(b"worker_started" in w.log.read_bytes() for w in workers if w.log.exists()) >= 2
