"""Printing benchmark results as a table and writing them, with the environment, as JSON."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from chronoq.bench import statements

MEDIAN_OF = ("e2e_jobs_per_s", "drain_jobs_per_s", "lateness_p50_ms", "lateness_p99_ms", "lateness_max_ms",
             "single_jobs_per_s", "bulk_jobs_per_s", "achieved_rate", "timer_worker_cpu_pct", "pg_transactions",
             "pg_transactions_per_max_idle", "pg_statements_per_max_idle", "timer_pg_wakeups_per_max_idle",
             "worker_pg_wakeups_per_max_idle")


@dataclass
class Measured:
    """A scenario whose rows are not repeats of one measurement (one row per size, per phase,
    per interval): its table has no median row, its JSON a ``summary`` instead of medians."""

    title: str
    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    notes: list[str] = field(default_factory=list)  # printed under the table


#: A run's CPU breakdown (bench/cpu.py): {process class: ms per job, "total": ...}.
CPU_KEY = "cpu_ms_per_job"
#: The same as percent of one core over the run's window (``idle``).
CPU_SHARE_KEY = "cpu_percent_of_core"
#: The CPU breakdowns a run may carry, with the title of their table.
CPU_TABLES = {
    CPU_KEY: "CPU ms per job, by process (burst, steady: from the due instant to the last job done; enqueue: "
             "during the bulk enqueue)",
    CPU_SHARE_KEY: "CPU % of one core, by process (idle: over the window)",
}


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over runs of every figure present (and of the CPU breakdowns, by class)."""
    keys = [k for k in MEDIAN_OF if any(r.get(k) is not None for r in runs)]
    medians = {k: round(statistics.median(r[k] for r in runs if r.get(k) is not None), 2) for k in keys}
    for key in CPU_TABLES:
        breakdowns = [r[key] for r in runs if r.get(key)]
        if breakdowns:
            classes = dict.fromkeys(c for b in breakdowns for c in b)
            medians[key] = {c: round(statistics.median(b.get(c, 0.0) for b in breakdowns), 3) for c in classes}
    return medians


def show(console: Console, title: str, runs: list[dict[str, Any]], *, medians: bool = True) -> None:
    """One row per run; with ``medians``, a last row of medians (off where rows are not repeats,
    e.g. one row per size)."""
    columns = [k for k in runs[0] if k not in ("scenario", *CPU_TABLES, statements.STATEMENTS_KEY)]
    table = Table(title=title)
    table.add_column("run")
    for c in columns:
        table.add_column(c.replace("_", " "), justify="right")
    for n, r in enumerate(runs, start=1):
        table.add_row(str(n), *(str(r.get(c, "")) for c in columns))
    if medians and len(runs) > 1:
        median = summarise(runs)
        table.add_row("median", *(str(median.get(c, "")) for c in columns), style="bold")
    console.print(table)
    for key, cpu_title in CPU_TABLES.items():
        if any(r.get(key) for r in runs):
            _show_cpu(console, cpu_title, [r.get(key) or {} for r in runs])
    statements.show(console, runs)


def _show_cpu(console: Console, title: str, breakdowns: list[dict[str, float]]) -> None:
    """CPU by process class, one column per run (bench/cpu.py)."""
    classes = list(dict.fromkeys(c for b in breakdowns for c in b))
    table = Table(title=title)
    table.add_column("process")
    for n in range(1, len(breakdowns) + 1):
        table.add_column(f"run {n}", justify="right")
    for c in classes:
        table.add_row(c, *(str(b.get(c, "")) for b in breakdowns), style="bold" if c == "total" else None)
    console.print(table)


def write(out_dir: Path, name: str, runs: list[dict[str, Any]], environment: dict[str, Any], args: dict[str, Any],
          summary: dict[str, Any] | None = None) -> Path:
    """``summary`` replaces the medians where the rows are not repeats of one measurement."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = out_dir / f"{name}-{stamp}.json"
    document = {"scenario": name, "arguments": args, "runs": runs,
                **({"median": summarise(runs)} if summary is None else {"summary": summary}),
                "environment": environment}
    path.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2, default=str))
    return path
