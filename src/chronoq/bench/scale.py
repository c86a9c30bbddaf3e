"""``chronoq bench scale``: does a claim, and lateness, stay flat as the wheel grows?

At each size (10^4, 10^6, 10^7 by default) the wheel holds that many one-shot jobs due far in
the future, preloaded with COPY (sizes are cumulative: each step adds rows). Then:

- settle: ``VACUUM ANALYZE`` and, with ``--tune-server``, a ``CHECKPOINT``, so that nothing
  timed pays for writing the preload back to disk (without it the report says the figures may
  include that write-back);
- claim: a stream of due jobs is claimed by the timer's own statement (``claim_due``, batches of
  the configured ``claim_batch``) and marked dispatched (``mark_dispatched``), one transaction
  per batch as the timer does, from this process with no timer running; p50/p99 per batch;
- lateness: the real timer and worker processes run ``steady`` (``--rate`` for ``--duration``,
  ``--runs`` times, medians), after a warm-up run whose figures are dropped (``--warmup``).

The target is the largest size within 1.5x of the smallest for both; the ratios are reported.
Preloaded jobs are deleted at the end unless ``--keep`` (at 10^7 a dedicated database that is
dropped afterwards is quicker).
"""

from __future__ import annotations

import asyncio
import re
import statistics
import time
from datetime import timedelta
from typing import Any

import asyncpg
from rich.progress import Progress

from chronoq._runtime.config import Settings
from chronoq._store import bench as store
from chronoq._store import clock, wheel
from chronoq._store.connection import CONNECTION_ERRORS, PLANNER_SETTINGS, Connection
from chronoq.bench import scenarios
from chronoq.bench.pipeline import pipeline
from chronoq.bench.report import Measured

#: Preloaded jobs live in their own queue; none is ever due during a run.
SCALE_QUEUE = "chronoq.bench.scale"
#: Jobs claimed by the claim measurement (due when inserted, then removed).
CLAIM_QUEUE = "chronoq.bench.claim"
PAYLOAD = '{"mode": "noop"}'
#: The first preloaded job is due this far ahead; each next one this much later (10^7 rows
#: span about 12 days, all beyond any run).
FAR_AHEAD = timedelta(days=30)
SPACING = timedelta(milliseconds=100)
TARGET_RATIO = 1.5
#: As the timer's dispatch pool plans its statements (see _store.connection).
TIMER_SERVER_SETTINGS = PLANNER_SETTINGS["keyed"]
#: Tries per size step when the server goes away meanwhile (a shared machine may restart it often).
STEP_ATTEMPTS = 20
RECONNECT_ATTEMPTS = 40  # 3 s apart


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def buffers(plan: list[str], planning: bool = False) -> int | None:
    """Shared buffers (hit + read) of a plan's top node, from EXPLAIN (ANALYZE, BUFFERS); with
    ``planning``, those the planner read (on Postgres 15 it probes the ends of the due_at index
    for its estimate, walking the dead entries there too)."""
    lines = plan[next((i for i, line in enumerate(plan) if line.startswith("Planning")), len(plan)):] if planning else plan
    for line in lines:
        if "Buffers: shared" in line:
            return sum(int(n) for n in re.findall(r"(?:hit|read)=(\d+)", line))
    return None


async def connect(url: str) -> asyncpg.Connection:
    """As the timer's dispatch pool connects: the claim planned once, by index."""
    return await asyncpg.connect(url, server_settings=TIMER_SERVER_SETTINGS)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def preload_future(conn: Connection, count: int, offset: int, progress: Progress,
                         queue: str = SCALE_QUEUE) -> tuple[tuple[int, int], float]:
    """``count`` far-future jobs after the ``offset`` already preloaded; returns (id range, seconds)."""
    task = progress.add_task(f"COPY {count:,} future jobs", total=count)
    now = await clock.db_now(conn)
    started = time.perf_counter()
    block = await store.preload(conn, queue=queue, payload=PAYLOAD, count=count,
                                first_due=now + FAR_AHEAD + SPACING * offset, spacing=SPACING,
                                advance=lambda n: progress.advance(task, n))
    seconds = time.perf_counter() - started
    progress.update(task, visible=False)
    return block, seconds


async def claim_durations(conn: asyncpg.Connection, *, batches: int, batch: int, lease: timedelta,
                          progress: Progress) -> dict[str, Any]:
    """Claim ``batches`` full batches of due jobs with the timer's statements; per-batch timings.
    One more batch is claimed under EXPLAIN (ANALYZE, BUFFERS) (rolled back): the buffers a
    claim touches do not depend on how busy the machine is, its timings do."""
    now = await clock.db_now(conn)
    total = (batches + 1) * batch
    # Due over the last minute, in order, like a backlog the timer works through.
    first, last = await store.preload(conn, queue=CLAIM_QUEUE, payload=PAYLOAD, count=total,
                                      first_due=now - timedelta(minutes=1), spacing=timedelta(minutes=1) / total)
    task = progress.add_task(f"claim {batches} x {batch}", total=batches)
    claims: list[float] = []
    marks: list[float] = []
    try:
        for _ in range(batches):
            async with conn.transaction():
                started = time.perf_counter()
                rows = await wheel.claim_due(conn, batch)
                claimed = time.perf_counter()
                await wheel.mark_dispatched(conn, [r["occurrence_key"] for r in rows], [lease] * len(rows))
                marked = time.perf_counter()
            if len(rows) < batch:
                raise RuntimeError(f"claimed {len(rows)} rows, expected {batch}: is a timer running on this database?")
            claims.append(claimed - started)
            marks.append(marked - claimed)
            progress.advance(task)
        plan = await store.explain_claim(conn, batch)
    finally:
        progress.update(task, visible=False)
        await store.delete_block(conn, CLAIM_QUEUE, first, last)
    return {
        "claim_buffers": buffers(plan),
        "plan_buffers": buffers(plan, planning=True),
        "claim_p50_ms": ms(statistics.median(claims)),
        "claim_p99_ms": ms(percentile(claims, 0.99)),
        "claim_max_ms": ms(max(claims)),
        "mark_p50_ms": ms(statistics.median(marks)),
    }


async def _lateness(settings: Settings, options: dict[str, Any], progress: Progress) -> dict[str, Any]:
    async with pipeline(settings, timers=options["timers"], workers=options["workers"]) as p:
        # The pipeline is new at each size: without a warm-up, the first pass measures the opening
        # of pools and channels, not the size.
        await scenarios.warm_up(p, "steady", options, progress)
        runs = [await scenarios.steady(p, rate=options["rate"], duration=options["duration"], mode=options["handler"],
                                       progress=progress)
                for _ in range(options["runs"])]
    keys = ("lateness_p50_ms", "lateness_p99_ms", "lateness_max_ms", "achieved_rate")
    medians = {k: round(statistics.median(float(r[k]) for r in runs), 2) for k in keys}  # max is numeric
    return {**medians, "lateness_p99_each": [r["lateness_p99_ms"] for r in runs]}


def ratios(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Largest size against smallest, for each figure the target names."""
    small, large = rows[0], rows[-1]
    found: dict[str, Any] = {"sizes": [small["scheduled"], large["scheduled"]]}
    for key in ("claim_p50_ms", "claim_p99_ms", "claim_buffers", "lateness_p50_ms", "lateness_p99_ms"):
        if small[key]:
            found[key] = round(large[key] / small[key], 2)
    found["within_target"] = all(v <= TARGET_RATIO for k, v in found.items() if k.endswith(("_ms", "_buffers")))
    return found


async def _size_step(conn: asyncpg.Connection, settings: Settings, options: dict[str, Any], size: int,
                     progress: Progress) -> dict[str, Any]:
    """Grow the preload to ``size`` (resuming after a lost connection), then measure."""
    *_, loaded = await store.queue_block(conn, SCALE_QUEUE)
    first, last, leftover = await store.queue_block(conn, CLAIM_QUEUE)  # from an interrupted step
    if leftover:
        await store.delete_block(conn, CLAIM_QUEUE, first, last)
    _, seconds = await preload_future(conn, size - loaded, loaded, progress)
    vacuum_started = time.perf_counter()
    await store.vacuum_analyze(conn)
    vacuum_s = time.perf_counter() - vacuum_started
    # A CHECKPOINT acts on the whole server: only where the operator allows it (--tune-server).
    checkpointed = await store.checkpoint(conn) if options["tune_server"] else None
    claims = await claim_durations(conn, batches=options["claim_batches"], batch=settings.claim_batch,
                                   lease=settings.redispatch_after, progress=progress)
    await store.vacuum_analyze(conn)  # the claim stream's dead rows, before the timer starts
    lateness = await _lateness(settings, options, progress)
    return {"scenario": "scale", "scheduled": size,
            # None where an interrupted step had loaded every row before it was retried
            "preload_jobs_per_s": round((size - loaded) / seconds, 1) if size > loaded and seconds > 0 else None,
            "vacuum_s": round(vacuum_s, 2), "checkpointed": checkpointed, **claims, **lateness}


async def run_scale(settings: Settings, options: dict[str, Any], progress: Progress) -> list[dict[str, Any]]:
    """One row per size. A step that fails, typically because the server went away (a restart, a
    chaos test on a shared machine), is retried on a new connection, keeping the rows loaded."""
    rows: list[dict[str, Any]] = []
    conn = await connect(settings.database_url)
    try:
        for size in sorted(options["sizes"]):
            for attempt in range(STEP_ATTEMPTS):
                try:
                    rows.append(await _size_step(conn, settings, options, size, progress))
                    progress.console.print(f"size {size:,}: {rows[-1]}")  # kept if a later size fails
                    break
                except Exception as exc:  # the server or a fleet process went away: retry the step
                    if attempt == STEP_ATTEMPTS - 1:
                        raise
                    progress.console.print(f"size {size:,}: {type(exc).__name__}: {exc}; retrying the step")
                    await conn.close()
                    await asyncio.sleep(5)
                    conn = await reconnect(settings.database_url)
        if not options["keep"]:
            first, last, _ = await store.queue_block(conn, SCALE_QUEUE)
            await store.delete_block(conn, SCALE_QUEUE, first, last)
    finally:
        await conn.close()
    return rows


async def reconnect(url: str) -> asyncpg.Connection:
    for attempt in range(RECONNECT_ATTEMPTS):
        try:
            return await connect(url)
        except CONNECTION_ERRORS:
            if attempt == RECONNECT_ATTEMPTS - 1:
                raise
            await asyncio.sleep(3)
    raise AssertionError("unreachable")


async def measure(settings: Settings, options: dict[str, Any], progress: Progress) -> Measured:
    """The ``scale`` scenario: one row per size, and the largest size's ratios to the smallest."""
    rows = await run_scale(settings, options, progress)
    each = {str(r["scheduled"]): r.pop("lateness_p99_each") for r in rows}
    summary = {"ratio_largest_to_smallest": ratios(rows), "target_ratio": TARGET_RATIO, "lateness_p99_ms_each_run": each}
    title = (f"chronoq bench scale (claim batch {settings.claim_batch}; steady {options['rate']:g} jobs/s, "
             f"{options['handler']} handler, median of {options['runs']})")
    notes = [f"largest / smallest: {summary['ratio_largest_to_smallest']}"]
    if not options["tune_server"]:
        notes.append("no CHECKPOINT after the preloads (it acts on the whole server; --tune-server runs one): "
                     "the figures may include writing the preload back to disk")
    return Measured(title, rows, summary, notes)
