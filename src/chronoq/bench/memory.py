"""``chronoq bench memory``: resident memory of one timer and one worker process, idle with no
scheduled jobs, idle with ``--preload`` (default 10^6) jobs scheduled in the future, and while
draining a burst of ``--jobs`` due at once. Read from ``/proc/<pid>/status``: VmRSS (now) and
VmHWM (the peak since the process started); during the burst VmRSS is also sampled every 50 ms.

A job due later is a row in Postgres, never a message or a timer in a process, so neither
figure should depend on the number of scheduled jobs. (Celery, for contrast, holds every ETA
job it has taken in worker memory: see docs/benchmarks.md.)
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

from rich.progress import Progress

from chronoq._runtime.config import Settings
from chronoq._store import bench as store
from chronoq.bench import scenarios
from chronoq.bench.pipeline import Pipeline, pipeline
from chronoq.bench.report import Measured
from chronoq.bench.scale import SCALE_QUEUE, preload_future

SAMPLE_EVERY = 0.05


def status_mib(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM of a process, in MiB (the kernel reports kB)."""
    found: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            found[name] = round(int(value.split()[0]) / 1024, 1)
    return found


def _row(phase: str, scheduled: int, pids: dict[str, int], peaks: dict[str, float] | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {"scenario": "memory", "phase": phase, "scheduled": scheduled}
    for role in ("timer", "worker"):
        now = status_mib(pids[f"{role}-0"])
        row[f"{role}_rss_mib"] = (peaks or {}).get(role, now["VmRSS"])
        row[f"{role}_hwm_mib"] = now["VmHWM"]
    return row


async def _sample_peaks(pids: dict[str, int], peaks: dict[str, float]) -> None:
    while True:
        for role in ("timer", "worker"):
            peaks[role] = max(peaks.get(role, 0.0), status_mib(pids[f"{role}-0"])["VmRSS"])
        await asyncio.sleep(SAMPLE_EVERY)


async def _phases(p: Pipeline, options: dict[str, Any], progress: Progress) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    settle = options["settle"]
    rows = []
    await asyncio.sleep(settle)
    rows.append(_row("idle", 0, p.pids))
    block, _ = await preload_future(p.conn, options["preload"], 0, progress)
    try:
        await asyncio.sleep(settle)  # the timer has looked at the wheel at least once (max idle 5 s)
        rows.append(_row("idle", options["preload"], p.pids))
        peaks: dict[str, float] = {}
        sampler = asyncio.ensure_future(_sample_peaks(p.pids, peaks))
        try:
            burst = await scenarios.burst(p, jobs=options["jobs"], mode=options["handler"], progress=progress)
        finally:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
        rows.append(_row(f"draining a burst of {options['jobs']:,} (peak)", options["preload"], p.pids, peaks))
    finally:
        if not options["keep"]:
            await store.delete_block(p.conn, SCALE_QUEUE, *block)
    return rows, {"burst_drain_jobs_per_s": burst["drain_jobs_per_s"], "burst_lateness_p99_ms": burst["lateness_p99_ms"]}


async def measure(settings: Settings, options: dict[str, Any], progress: Progress) -> Measured:
    async with pipeline(settings, timers=1, workers=1) as p:
        rows, burst = await _phases(p, options, progress)
    idle, loaded = rows[0], rows[1]
    summary = {
        "growth_with_scheduled_mib": {role: round(loaded[f"{role}_rss_mib"] - idle[f"{role}_rss_mib"], 1)
                                      for role in ("timer", "worker")},
        **burst,
        "source": "/proc/<pid>/status VmRSS, VmHWM",
    }
    title = f"chronoq bench memory (one timer, one worker; {options['handler']} handler)"
    notes = [f"RSS change from 0 to {options['preload']:,} scheduled jobs (MiB): {summary['growth_with_scheduled_mib']}"]
    return Measured(title, rows, summary, notes)
