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

MEDIAN_OF = ("e2e_jobs_per_s", "drain_jobs_per_s", "lateness_p50_ms", "lateness_p99_ms", "lateness_max_ms",
             "single_jobs_per_s", "bulk_jobs_per_s", "achieved_rate")


@dataclass
class Measured:
    """A scenario whose rows are not repeats of one measurement (one row per size, per phase,
    per interval): its table has no median row, its JSON a ``summary`` instead of medians."""

    title: str
    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    notes: list[str] = field(default_factory=list)  # printed under the table


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over runs of every figure present."""
    keys = [k for k in MEDIAN_OF if any(r.get(k) is not None for r in runs)]
    return {k: round(statistics.median(r[k] for r in runs if r.get(k) is not None), 2) for k in keys}


def show(console: Console, title: str, runs: list[dict[str, Any]], *, medians: bool = True) -> None:
    """One row per run; with ``medians``, a last row of medians (off where rows are not repeats,
    e.g. one row per size)."""
    columns = [k for k in runs[0] if k not in ("scenario",)]
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
