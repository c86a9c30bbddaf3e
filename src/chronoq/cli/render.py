"""Everything the commands print: tables for people, JSON for programs."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from chronoq.schemas.cron import CronTick
from chronoq.schemas.views import JobSummary, JobView, QueueStatus, TickView

# Wide enough for the status table when the output is a pipe or a file.
out = Console(highlight=False, width=None if sys.stdout.isatty() else 160)


def print_json(value: Any) -> None:
    print(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())


def table(title: str | None, columns: Iterable[str], rows: Iterable[Iterable[str]], *, right: Iterable[str] = ()) -> Table:
    aligned = set(right)
    made = Table(title=title)
    for column in columns:
        made.add_column(column, justify="right" if column in aligned else "left")
    for row in rows:
        made.add_row(*row)
    return made


def time(value: datetime | None) -> str:
    return "-" if value is None else value.isoformat(timespec="milliseconds")


def ms(seconds: float | None, unit: str = "") -> str:
    """Milliseconds, with ``unit`` after them, or "-"."""
    return "-" if seconds is None else f"{seconds * 1000:.1f}{unit}"


def queue_table(rows: Iterable[QueueStatus], *, rates: dict[str, float] | None = None) -> Table:
    """The status table; with ``rates``, a throughput column (jobs/s per queue)."""
    counts = ["scheduled", "due", "in flight", "held", "deferred", "succeeded", "failed", "dead", "skipped", "cancelled"]
    columns = ["queue", *counts, "p50 ms", "p99 ms"] + (["jobs/s (10 s)"] if rates is not None else [])
    cells = []
    for r in rows:
        row = [f"{r.queue} (paused)" if r.paused else r.queue,
               *(str(v) for v in (r.scheduled, r.due, r.in_flight, r.held, r.deferred, r.succeeded, r.failed, r.dead,
                                  r.skipped, r.cancelled)), ms(r.lateness_p50_s), ms(r.lateness_p99_s)]
        if rates is not None:
            row.append(f"{rates.get(r.queue, 0.0):.1f}")
        cells.append(row)
    return table("chronoq queues", columns, cells, right=columns[1:])


#: What ``chronoq queues ls --json`` shows of each queue.
QUEUE_CONTROL_FIELDS = ("queue", "paused", "max_running", "rate_count", "rate_period_s", "due", "in_flight", "deferred")


def queue_controls(rows: Iterable[QueueStatus]) -> Table:
    """Each queue's controls and what they hold back."""
    columns = ["queue", "state", "max running", "rate", "due", "running", "deferred"]
    cells = [[r.queue, "paused" if r.paused else "running", "-" if r.max_running is None else str(r.max_running),
              "-" if r.rate_count is None else f"{r.rate_count}/{r.rate_period_s:g}s",
              str(r.due), str(r.in_flight), str(r.deferred)] for r in rows]
    return table("chronoq queues", columns, cells, right=columns[2:])


def job(view: JobView) -> None:
    out.print(
        f"[bold]job {view.id}[/bold]  queue={view.queue}  kind={view.kind}  state={view.state}"
        f"  key={view.key or '-'}  max_attempts={view.max_attempts}  timeout={view.timeout_s}s"
        f"  created={time(view.created_at)}"
    )
    if view.kind == "cron":
        jitter = f"  jitter={view.jitter_s:g}s" if view.jitter_s else ""
        out.print(f"schedule: {view.cron} ({view.timezone})  misfire={view.misfire}  overlap={view.overlap}{jitter}",
                  markup=False)
    rows = []
    for occurrence in view.occurrences:
        state = f"{occurrence.state} (manual run)" if occurrence.manual else occurrence.state
        rows.append([occurrence.occurrence_key, state, str(occurrence.attempt), time(occurrence.run_at),
                     occurrence.reason or occurrence.error or ""])
        rows += [["", f"  attempt {a.attempt}", "", time(a.started_at), f"{a.outcome} {a.error or ''}".strip()]
                 for a in occurrence.attempts]
    out.print(table(None, ("occurrence", "state", "attempt", "when", "outcome / error"), rows))


def last_outcome(outcome: Mapping[str, Any] | None) -> str:
    """What happened to a job's latest finished occurrence: ``succeeded``, ``dead (poison)``, ..."""
    if outcome is None:
        return "-"
    reason = f" ({outcome['reason']})" if outcome["reason"] else ""
    return f"{outcome['state']}{reason} at {time(outcome['finished_at'])}"


def jobs(listed: Iterable[JobSummary], outcomes: Mapping[int, Mapping[str, Any]]) -> None:
    rows = [[str(j.id), j.queue, j.kind, j.state, j.key or "-", f"{j.cron} ({j.timezone})" if j.cron else "-",
             time(j.next_fire_at), last_outcome(outcomes.get(j.id))] for j in listed]
    out.print(table("chronoq jobs", ("id", "queue", "kind", "state", "key", "schedule", "next tick", "last outcome"),
                    rows))


def ticks(job_id: int, listed: Iterable[TickView]) -> None:
    rows = [[time(t.fire_at), f"{t.state} (manual run)" if t.manual else t.state, t.reason or "", str(t.attempt),
             t.detail or ""] for t in listed]
    out.print(table(f"ticks of job {job_id}", ("tick", "state", "reason", "attempt", "detail"), rows))


def dead_counts(listing: Iterable[Mapping[str, Any]]) -> None:
    rows = [[item["queue"], str(item["dead"]), str(item["dead_letter_messages"]), item["last_dead"].isoformat()]
            for item in listing]
    out.print(table("dead occurrences", ("queue", "dead (Postgres)", "messages in dead-letter queue", "last dead"),
                    rows))


def dead_letters(queue: str, limit: int, messages: Iterable[Mapping[str, Any]]) -> None:
    rows = [[str(m.get("job-id", "")), str(m.get("idempotency-key", "")), str(m.get("attempt", "")),
             str(m.get("reason") or m.get("x-first-death-reason") or ""), str(m.get("error", ""))] for m in messages]
    out.print(table(f"dead-letter queue of {queue} (first {limit})", ("job", "occurrence", "attempt", "reason", "error"),
                    rows))


def cron_ticks(ticks: Iterable[CronTick]) -> list[str]:
    """One line per tick: UTC, local time with its offset and zone name, and a DST mark."""
    lines = []
    for t in ticks:
        line = f"{t.at:%Y-%m-%dT%H:%M:%SZ}  {t.local:%Y-%m-%d %H:%M:%S%z} {t.local.tzname() or ''}".rstrip()
        if t.gap:
            line += f"  [gap: {t.wall:%H:%M:%S} does not exist on {t.wall:%Y-%m-%d}, runs at the end of the gap]"
        elif t.fold:
            line += f"  [fold: {t.wall:%H:%M:%S} happens twice, runs once, at the first]"
        lines.append(line)
    return lines
