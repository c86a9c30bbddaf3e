"""``chronoq bench SCENARIO``: run a scenario ``runs`` times against real processes, print a
table with medians, write JSON with versions, settings and machine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from chronoq._runtime.config import Settings
from chronoq._store.migrate import migrate as apply_migrations
from chronoq.bench import churn, idle, memory, plot, scale, scenarios
from chronoq.bench.environment import describe
from chronoq.bench.pipeline import Pipeline, pipeline
from chronoq.bench.report import show, write

#: `steady --find-max`: the highest offered rate whose p99 lateness stays under this.
FIND_MAX_P99_MS = 100.0


#: Scenarios whose rows are sizes, phases or intervals rather than repeats.
MEASURED = {"scale": scale.measure, "churn": churn.measure, "memory": memory.measure}
PROGRESS_COLUMNS = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
#: Redraws per second. The bench shares the machine with what it measures: rich's default of
#: 10 redraws cost ~15 % of a core during a burst on 2 cores (CPU sampled per process).
PROGRESS_REFRESH = 2


async def run_bench(settings: Settings, scenario: str, options: dict[str, Any]) -> int:
    console = Console(highlight=False)
    if scenario == "plot":
        console.print(f"plot: {plot.plot(options['inputs'], Path(options['output']))}")
        return 0
    if scenario in MEASURED:
        return await _run_measured(settings, scenario, options, console)
    async with pipeline(settings, timers=options["timers"], workers=options["workers"]) as p:
        environment = await describe(settings, p.conn)
        logs = p.logs
        with Progress(*PROGRESS_COLUMNS, console=console, transient=True, refresh_per_second=PROGRESS_REFRESH) as progress:
            if scenario == "idle":
                runs = await _idle(p, options, progress)
            else:
                await scenarios.warm_up(p, scenario, options, progress)
                runs = [await _run(p, scenario, options, progress) for _ in range(options["runs"])]
    title = f"chronoq bench {scenario} ({options['workers']} worker(s), {options['timers']} timer(s))"
    show(console, title, runs)
    path = write(Path(options["out"]), scenario, runs, environment, options)
    console.print(f"results: {path}")
    # With --log-level DEBUG the timer's log has each batch's phases (wake, claim, confirm, commit).
    console.print(f"timer and worker logs: {logs}")
    return 0


async def _run(p: Pipeline, scenario: str, options: dict[str, Any], progress: Progress) -> dict[str, Any]:
    if scenario == "burst":
        return await scenarios.burst(p, jobs=options["jobs"], mode=options["handler"], progress=progress)
    if scenario == "steady" and options.get("find_max"):
        return await _find_max(p, options, progress)
    if scenario == "steady":
        return await scenarios.steady(p, rate=options["rate"], duration=options["duration"], mode=options["handler"],
                                      progress=progress)
    return await scenarios.enqueue_rates(p, jobs=options["jobs"], concurrency=options["concurrency"])


async def _idle(p: Pipeline, options: dict[str, Any], progress: Progress) -> list[dict[str, Any]]:
    """``runs`` idle windows with the same jobs scheduled, removed at the end unless ``keep``."""
    block = await idle.prepare(p, options["preload"], progress)
    try:
        return [await idle.idle(p, duration=options["duration"], scheduled=options["preload"], progress=progress)
                for _ in range(options["runs"])]
    finally:
        if not options["keep"]:
            await idle.remove(p, block)


async def _run_measured(settings: Settings, scenario: str, options: dict[str, Any], console: Console) -> int:
    await apply_migrations(settings.database_url)
    conn = await asyncpg.connect(settings.database_url)
    try:
        environment = await describe(settings, conn)
    finally:
        await conn.close()
    with Progress(*PROGRESS_COLUMNS, console=console, transient=True, refresh_per_second=PROGRESS_REFRESH) as progress:
        measured = await MEASURED[scenario](settings, options, progress)
    show(console, measured.title, measured.rows, medians=False)
    for note in measured.notes:
        console.print(note)
    path = write(Path(options["out"]), scenario, measured.rows, environment, options, measured.summary)
    console.print(f"results: {path}")
    return 0


async def _find_max(p: Pipeline, options: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """Bisect the offered rate between ``rate`` (must pass) and 10x it: six runs at most."""
    low, high = options["rate"], options["rate"] * 10
    best = await scenarios.steady(p, rate=low, duration=options["duration"], mode=options["handler"], progress=progress)
    if best["lateness_p99_ms"] > FIND_MAX_P99_MS:
        return {**best, "max_rate_under_100ms_p99": None}
    for _ in range(5):
        rate = (low + high) / 2
        result = await scenarios.steady(p, rate=rate, duration=options["duration"], mode=options["handler"], progress=progress)
        if result["lateness_p99_ms"] <= FIND_MAX_P99_MS:
            best, low = result, rate
        else:
            high = rate
    return {**best, "max_rate_under_100ms_p99": round(low, 1)}
