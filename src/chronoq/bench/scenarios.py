"""Benchmark scenarios. Each returns a list of result dicts (one per run) for the report.

Figures are whole-process: real timer and worker processes on the same machine, measured from
Postgres (due times by its clock, commits of results), as the reference pipeline in
shared/bench measures them: drain jobs/s = N / (last result committed - first due time),
lateness = handler start - due time.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

from rich.progress import Progress

from chronoq._store import clock, maintenance, reads
from chronoq.bench import cpu, statements
from chronoq.bench.handlers import QUEUE
from chronoq.bench.pipeline import Pipeline
from chronoq.bench.report import CPU_KEY
from chronoq.bench.statements import STATEMENTS_KEY

ENQUEUE_CHUNK = 5000
#: Slowest bulk enqueue a run plans for (jobs/s) when it sets how far ahead jobs are due. The
#: lead only adds wall time: lateness counts from the due instant.
ENQUEUE_RATE_FLOOR = 10_000


def lead_for(jobs: int) -> float:
    """Seconds between enqueueing ``jobs`` and their (first) due instant."""
    return 2.0 + jobs / ENQUEUE_RATE_FLOOR


async def _vacuum(p: Pipeline) -> None:
    """Every run starts from vacuumed tables, so that runs do not inherit each other's dead rows
    (this matters most where autovacuum is off, which the run's environment records)."""
    await maintenance.vacuum_hot_tables(p.conn)


async def _enqueue_at(p: Pipeline, due_offsets: list[float], mode: str) -> tuple[int, int]:
    """Enqueue jobs due at db-now + offset (seconds); returns the id range."""
    now = await clock.db_now(p.conn)
    ids: list[int] = []
    for start in range(0, len(due_offsets), ENQUEUE_CHUNK):
        chunk = due_offsets[start : start + ENQUEUE_CHUNK]
        ids += await p.producer.enqueue_many(
            [{"queue": QUEUE, "payload": {"mode": mode}, "run_at": now + timedelta(seconds=o)} for o in chunk]
        )
    return min(ids), max(ids)


async def _wait_done(
    p: Pipeline, first: int, last: int, total: int, progress: Progress,
    timeout: float,  # noqa: ASYNC109 - its error says how many jobs were still pending
) -> dict[str, Any]:
    """Wait until the jobs are done; returns what was measured meanwhile: the CPU per job by
    process (bench/cpu.py; None where ``/proc`` is not there) and the statements per job
    (bench/statements.py)."""
    no_statements = await statements.begin(p.conn)
    before = cpu.begin(p.pids)
    task = progress.add_task("jobs finished", total=total)
    deadline = time.monotonic() + timeout
    while True:
        pending = await reads.pending_in_range(p.conn, first, last)
        progress.update(task, completed=total - pending)
        if pending == 0:
            breakdown = cpu.per_job_since(before, p.pids, total)
            return {CPU_KEY: breakdown,
                    STATEMENTS_KEY: await statements.breakdown(p.conn, no_statements, units=total, per="job")}
        if time.monotonic() > deadline:
            raise TimeoutError(f"{pending} of {total} jobs still pending after {timeout:.0f}s")
        # Once a second: the count visits every pending row, and the figures come from the
        # database's timestamps, not from when this loop notices the end.
        await asyncio.sleep(1.0)


def _timing(row: Any, offered_span: float | None) -> dict[str, Any]:
    span = (row["last_done"] - row["first_due"]).total_seconds()
    drain = (row["last_start"] - row["first_due"]).total_seconds()
    return {
        "jobs": row["n"],
        "e2e_jobs_per_s": round(row["n"] / span, 1) if span > 0 else None,
        "drain_jobs_per_s": round(row["n"] / drain, 1) if drain > 0 else None,
        "achieved_rate": round(row["n"] / span, 1) if offered_span and span > 0 else None,
        "lateness_p50_ms": round(row["p50"] * 1000, 2),
        "lateness_p99_ms": round(row["p99"] * 1000, 2),
        "lateness_max_ms": round(float(row["max"]) * 1000, 2),
    }


async def burst(p: Pipeline, *, jobs: int, mode: str, progress: Progress) -> dict[str, Any]:
    """``jobs`` no-op (or db) jobs all due at one instant, enqueued ahead of it."""
    lead = lead_for(jobs)  # enqueue finishes before the instant (checked below)
    await _vacuum(p)
    started = time.monotonic()
    first, last = await _enqueue_at(p, [lead] * jobs, mode)
    enqueue_s = time.monotonic() - started
    if enqueue_s >= lead:
        raise RuntimeError(f"enqueue took {enqueue_s:.1f}s, longer than the {lead:.1f}s lead")
    measured = await _wait_done(p, first, last, jobs, progress, timeout=60 + jobs / 500)
    result = _timing(await reads.run_timing(p.conn, first, last), None)
    await reads.delete_jobs_of_queue(p.conn, QUEUE)
    return {"scenario": "burst", "mode": mode, **result, **measured}


async def steady(p: Pipeline, *, rate: float, duration: float, mode: str, progress: Progress) -> dict[str, Any]:
    """``rate`` jobs/s spread evenly over ``duration`` seconds."""
    jobs = max(int(rate * duration), 1)
    lead = lead_for(jobs)
    await _vacuum(p)
    first, last = await _enqueue_at(p, [lead + i / rate for i in range(jobs)], mode)
    measured = await _wait_done(p, first, last, jobs, progress, timeout=duration + 60 + jobs / 500)
    result = _timing(await reads.run_timing(p.conn, first, last), duration)
    await reads.delete_jobs_of_queue(p.conn, QUEUE)
    return {"scenario": "steady", "mode": mode, "offered_rate": rate, "duration_s": duration, **result, **measured}


async def enqueue_rates(p: Pipeline, *, jobs: int, concurrency: int) -> dict[str, Any]:
    """Single enqueues from ``concurrency`` tasks, then bulk ``enqueue_many`` in chunks."""
    far = timedelta(days=365)
    single_jobs = min(jobs, 20_000)
    counter = iter(range(single_jobs))

    async def one_by_one() -> None:
        for _ in counter:
            await p.producer.enqueue(QUEUE, {"mode": "noop"}, delay=far)

    await _vacuum(p)
    started = time.perf_counter()
    await asyncio.gather(*(one_by_one() for _ in range(concurrency)))
    single = single_jobs / (time.perf_counter() - started)
    specs = [{"queue": QUEUE, "payload": {"mode": "noop"}, "delay": far}] * jobs
    # The bulk enqueue's CPU per job: the producer (this process, "bench") against Postgres,
    # whose one backend per call bounds the rate.
    await _vacuum(p)  # the single enqueues' rows in; nothing left for autovacuum to start on meanwhile
    before = cpu.begin(p.pids)
    started = time.perf_counter()
    for start in range(0, jobs, 10_000):
        await p.producer.enqueue_many(specs[start : start + 10_000])
    bulk = jobs / (time.perf_counter() - started)
    breakdown = cpu.per_job_since(before, p.pids, jobs)
    await reads.delete_jobs_of_queue(p.conn, QUEUE)
    return {"scenario": "enqueue", "single_jobs": single_jobs, "concurrency": concurrency,
            "single_jobs_per_s": round(single, 1), "bulk_jobs": jobs, "bulk_jobs_per_s": round(bulk, 1),
            CPU_KEY: breakdown}


async def warm_up(p: Pipeline, scenario: str, options: dict[str, Any], progress: Progress) -> None:
    """A short run whose figures are dropped: a freshly started worker opens its database
    connections and the timer its channel and queue on first use, which the first measured
    run would otherwise pay for (its p99 was 3-6x the next runs' at 200 jobs/s)."""
    seconds = options.get("warmup", 0.0)
    if seconds <= 0 or scenario not in ("burst", "steady"):
        return
    if scenario == "burst":
        await burst(p, jobs=max(int(seconds * 1000), 1), mode=options["handler"], progress=progress)
    else:
        await steady(p, rate=options["rate"], duration=seconds, mode=options["handler"], progress=progress)
