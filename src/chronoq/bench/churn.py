"""``chronoq bench churn``: does the claim slow down as jobs flow through the wheel?

With ``--preload`` future jobs in the wheel (never due), ``--jobs`` jobs are fed in chunks, due
as they are inserted, and taken through the store's own statements in a tight loop, one
occurrence's life as the timer and a worker give a first delivery: ``claim_due`` +
``mark_dispatched`` (one transaction, as the timer's batch), then ``lock_first_deliveries`` +
``record_successes`` (the worker's group transaction: the row is locked, leaves the wheel, its
result is recorded). No broker, no handler: the loop runs 1M jobs in minutes where the full
pipeline (~4k jobs/s here) would need far longer with the checks; the wheel sees the same
writes per job (a non-HOT update and a delete: two dead tuples, and a dead entry in each of
its indexes for each).

Claim duration (p50/p99 per batch) and the wheel's live/dead tuples are reported per interval.
Autovacuum is whatever the server runs with, and recorded. With ``--tune-server``,
``--autovacuum on`` switches it on for the run (``ALTER SYSTEM``, superuser) and resets it
afterwards, whatever happens; ``--autovacuum-naptime`` sets how often the launcher comes round
the same way (a server-wide setting that a migration cannot make: it is what bounds the dead
rows between passes).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from datetime import timedelta
from typing import Any

import asyncpg
from rich.progress import Progress

from chronoq._runtime.config import Settings
from chronoq._store import bench as store
from chronoq._store import clock, outcomes, wheel
from chronoq._store.connection import CONNECTION_ERRORS, Connection
from chronoq.bench.report import Measured
from chronoq.bench.scale import (
    PAYLOAD,
    SCALE_QUEUE,
    buffers,
    connect,
    ms,
    percentile,
    preload_future,
    reconnect,
)

CHURN_QUEUE = "chronoq.bench.churn"
#: Jobs inserted per feed: the backlog of due rows stays below this, as with a timer keeping up.
FEED = 10_000
INTERVALS = 20
WORKER = "bench-churn"
DISPATCH_ID = 1  # every batch's: each occurrence is published once, as by a committed batch
MIB = 1024 * 1024
RESET_ATTEMPTS = 30


async def _one_batch(conn: Connection, batch: int, lease: timedelta) -> tuple[int, float]:
    """One occurrence life for a batch: returns (rows, claim seconds)."""
    async with conn.transaction():
        started = time.perf_counter()
        rows = await wheel.claim_due(conn, batch)
        claim = time.perf_counter() - started
        keys = [r["occurrence_key"] for r in rows]
        attempts = [r["attempt"] for r in rows]
        await wheel.mark_dispatched(conn, keys, [lease] * len(keys), DISPATCH_ID)
    if not rows:
        return 0, claim
    async with conn.transaction():
        _, now = await outcomes.start_locked(conn, keys, attempts, [DISPATCH_ID] * len(keys))
        await outcomes.record_successes(conn, keys, attempts, [None] * len(keys), [now] * len(keys), WORKER)
    return len(rows), claim


async def _sample(conn: Connection, done: int, elapsed: float, jobs_in: int, seconds_in: float,
                  claims: list[float]) -> dict[str, Any]:
    stats = await store.wheel_stats(conn)
    return {
        "scenario": "churn",
        "jobs_done": done,
        "elapsed_s": round(elapsed, 1),
        "jobs_per_s": round(jobs_in / seconds_in, 1) if seconds_in > 0 else None,
        "claim_p50_ms": ms(statistics.median(claims)),
        "claim_p99_ms": ms(percentile(claims, 0.99)),
        "wheel_live": stats.get("n_live_tup"),
        "wheel_dead": stats.get("n_dead_tup"),
        "autovacuums": stats.get("autovacuum_count"),
        "wheel_mib": round(int(stats.get("heap_bytes") or 0) / MIB, 1),
        "due_index_mib": round(int(stats.get("due_index_bytes") or 0) / MIB, 1),
    }


async def _claim_buffers(conn: Connection, batch: int) -> dict[str, int | None]:
    """Buffers one full claim touches now: a batch of due jobs is added first (the loop then
    finishes them like the others), so every sample claims ``batch`` rows whatever the backlog."""
    now = await clock.db_now(conn)
    await store.preload(conn, queue=CHURN_QUEUE, payload=PAYLOAD, count=batch,
                        first_due=now - timedelta(seconds=1), spacing=timedelta(microseconds=10))
    plan = await store.explain_claim(conn, batch)
    return {"claim_buffers": buffers(plan), "plan_buffers": buffers(plan, planning=True)}


async def churn(url: str, *, jobs: int, batch: int, lease: timedelta, progress: Progress) -> list[dict[str, Any]]:
    """The loop, on its own connection. If the server goes away (a restart on a shared machine),
    it reconnects and goes on; such samples count the restart, and the table counters that an
    immediate shutdown resets are then lower than the truth (the claim's buffers are not)."""
    interval = max(jobs // INTERVALS, batch)
    task = progress.add_task(f"churn {jobs:,} jobs", total=jobs)
    samples: list[dict[str, Any]] = []
    claims: list[float] = []
    done = mark = restarts = 0
    started = mark_time = time.perf_counter()
    conn = await connect(url)
    try:
        while done < jobs:
            try:
                now = await clock.db_now(conn)
                await store.preload(conn, queue=CHURN_QUEUE, payload=PAYLOAD, count=min(FEED, jobs - done),
                                    first_due=now - timedelta(seconds=1), spacing=timedelta(microseconds=10))
                while done < jobs:  # (the rows of the last sample's probe may stay due)
                    n, claim = await _one_batch(conn, batch, lease)
                    if n == 0:
                        break
                    claims.append(claim)
                    done += n
                    progress.advance(task, n)
                    if done - mark >= interval or done >= jobs:
                        at = time.perf_counter()
                        sample = await _sample(conn, done, at - started, done - mark, at - mark_time, claims)
                        samples.append({**sample, **await _claim_buffers(conn, batch), "restarts": restarts})
                        claims, mark, mark_time = [], done, at
            except CONNECTION_ERRORS as exc:
                restarts += 1
                progress.console.print(f"churn: {type(exc).__name__}: {exc}; reconnecting")
                conn.terminate()
                conn = await reconnect(url)
    finally:
        await conn.close()
    progress.update(task, visible=False)
    return samples


def _trend(samples: list[dict[str, Any]]) -> dict[str, float | None]:
    """Growth over the run, robust to where the last sample falls in an autovacuum cycle: the
    least-squares slope against jobs done, and the second half's median against the first's."""
    jobs = [s["jobs_done"] / 100_000 for s in samples]
    half = len(samples) // 2
    trend: dict[str, float | None] = {}
    for key, name in (("claim_p50_ms", "claim_p50"), ("claim_buffers", "claim_buffers")):
        values = [s[key] for s in samples]
        slope = statistics.linear_regression(jobs, values).slope if len(set(jobs)) > 1 else 0.0
        first = statistics.median(values[:half]) if half else 0
        trend[f"{key}_per_100k_jobs"] = round(slope, 3)
        trend[f"{name}_second_half_vs_first"] = round(statistics.median(values[half:]) / first, 2) if first else None
    return trend


async def _reset_autovacuum(url: str) -> None:
    """On a new connection, retried for a minute: the run's own may be the one that broke (the
    server restarted), and autovacuum must not stay switched on behind the operator's back."""
    for attempt in range(RESET_ATTEMPTS):
        try:
            conn = await asyncpg.connect(url)
            try:
                await store.reset_autovacuum(conn)
                return
            finally:
                await conn.close()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            if attempt == RESET_ATTEMPTS - 1:
                raise
            await asyncio.sleep(2)


async def measure(settings: Settings, options: dict[str, Any], progress: Progress) -> Measured:
    conn = await connect(settings.database_url)
    asked_naptime = options.get("autovacuum_naptime")
    switched = options["autovacuum"] == "on" or asked_naptime is not None
    block = (0, -1)
    try:
        if switched:
            await store.set_autovacuum_on(conn, naptime=asked_naptime)
        running_with = await store.autovacuum_settings(conn)
        autovacuum, naptime = running_with["enabled"], running_with["naptime"]
        block, _ = await preload_future(conn, options["preload"], 0, progress)
        await store.vacuum_analyze(conn)
        samples = await churn(settings.database_url, jobs=options["jobs"], batch=settings.claim_batch,
                              lease=settings.redispatch_after, progress=progress)
        conn.terminate()  # idle all along: it may have been broken by a restart meanwhile
        conn = await reconnect(settings.database_url)
        due_now = await clock.db_now(conn)
        probe = await store.preload(conn, queue=CHURN_QUEUE, payload=PAYLOAD, count=settings.claim_batch,
                                    first_due=due_now - timedelta(seconds=1), spacing=timedelta(microseconds=10))
        plan = await store.explain_claim(conn, settings.claim_batch)
        await store.delete_block(conn, CHURN_QUEUE, *probe)
    finally:
        if switched:
            await _reset_autovacuum(settings.database_url)
        if not options["keep"] and not conn.is_closed():
            await store.delete_block(conn, SCALE_QUEUE, *block)
        await conn.close()
    first, last = samples[0], samples[-1]
    growth = round(last["claim_p50_ms"] / first["claim_p50_ms"], 2) if first["claim_p50_ms"] else None
    trend = _trend(samples)
    summary = {
        "autovacuum": autovacuum,
        "autovacuum_switched_on_for_run": switched,
        "loop": "store statements in a tight loop (claim_due+mark_dispatched, "
                "lock_first_deliveries+record_successes), no broker",
        "autovacuum_naptime": naptime,
        "preloaded_future_jobs": options["preload"],
        "claim_p50_first_ms": first["claim_p50_ms"],
        "claim_p50_last_ms": last["claim_p50_ms"],
        "claim_p50_growth": growth,
        **trend,
        "claim_buffers_first": first["claim_buffers"],
        "claim_buffers_last": last["claim_buffers"],
        "plan_buffers_first": first["plan_buffers"],
        "plan_buffers_last": last["plan_buffers"],
        "server_restarts_during_run": last["restarts"],
        "final_wheel": {k: v for k, v in last.items() if k.startswith(("wheel_", "due_index", "autovacuums"))},
        "explain_claim_after_churn": plan,
    }
    title = (f"chronoq bench churn ({options['jobs']:,} jobs, {options['preload']:,} future jobs preloaded, "
             f"claim batch {settings.claim_batch}, autovacuum {'on' if autovacuum else 'OFF'}, naptime {naptime})")
    notes = [(f"claim p50 first interval {first['claim_p50_ms']} ms, last {last['claim_p50_ms']} ms: x{growth}; "
              f"buffers per claim {first['claim_buffers']} -> {last['claim_buffers']}"),
             (f"trend per 100k jobs: claim p50 {trend['claim_p50_ms_per_100k_jobs']:+} ms, buffers per claim "
              f"{trend['claim_buffers_per_100k_jobs']:+}; second half against first (medians): claim p50 "
              f"x{trend['claim_p50_second_half_vs_first']}, buffers x{trend['claim_buffers_second_half_vs_first']}")]
    if not autovacuum:
        notes.append("autovacuum is off on this server: dead wheel rows stay until a manual VACUUM "
                     "(--autovacuum on --tune-server switches it on for the run)")
    return Measured(title, samples, summary, notes)
