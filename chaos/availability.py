"""Availability: for each fault, how long until jobs start again.

A fault's availability is the time from the moment it struck (its ``t`` in the history) until the
first start of an occurrence whose due time (``fire_at``) is at or after that moment. Starts are
read where Postgres recorded them: ``started_at`` of every outcome (``chronoq.results``) and of
every failed attempt (``chronoq.attempts``), and the counted starts of the start log
(``chaos_wheel_log``, ``clock_timestamp()`` of each rise of an attempt's start count: a worker
counts a start before running a redelivery; a first delivery's start is only in its outcome).
The workload always has something falling due (three per-second cron jobs, one-shot jobs spread
over the run), so on a healthy system this is the lateness of the next due occurrence, well under
a second; after a fault it is how long the system took to run new work again. Occurrences due
before the fault are left out: a backlog drained by a surviving worker would otherwise hide an
outage of dispatching. A fault after which nothing due later ever started counts as ``never``.

A fault that lasts (a node down or hung until ``recovered``, a paused worker until
``continued``, timers down until ``up``) can let a few jobs start and then stall: its
``worst_during_s`` is the longest wait, from any moment while it lasted, until an occurrence due
at or after that moment started (sampled every half second).

Each summary per kind gives count, p50, max and the max of ``worst_during_s``; the availability
targets are reported beside them (a RabbitMQ node's death 10 s, a Postgres failover 15 s), not
judged.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

#: Seconds until jobs start again that chronoq aims at, per fault kind.
TARGETS_S = {"node_kill": 10.0, "postgres_failover": 15.0}


def started(log: Iterable[Mapping[str, Any]], ended: Iterable[Mapping[str, Any]]) -> list[tuple[float, str]]:
    """(time, occurrence key) of every start Postgres recorded, in time order: ``started_at`` of
    the ``ended`` attempts (outcomes and failed attempts), and the rows of the start log where an
    attempt's start count went up (the others are dispatches)."""
    seen: dict[tuple[str, int], int] = {}
    found = [(r["started_at"].timestamp(), r["occurrence_key"]) for r in ended if r["started_at"] is not None]
    for row in sorted(log, key=lambda r: r["at"]):
        pair = (row["occurrence_key"], row["attempt"])
        if row["starts"] > seen.get(pair, 0):
            found.append((row["at"].timestamp(), row["occurrence_key"]))
        seen[pair] = max(seen.get(pair, 0), row["starts"])
    return sorted(found)


def seconds_until_jobs_start(t: float, started: list[tuple[float, str]], due: Mapping[str, float]) -> float | None:
    """From ``t`` to the first start of an occurrence due at or after ``t`` (None if none)."""
    at = [s for s, _ in started]
    for s, key in started[bisect.bisect_left(at, t):]:
        if due.get(key, float("-inf")) >= t:
            return round(s - t, 3)
    return None


#: Step between the moments sampled while a fault lasts.
SAMPLE_S = 0.5
#: Where a fault's history entry says it ended, in order of preference.
FAULT_ENDS = ("recovered", "continued", "up", "end")


def worst_during(fault: dict, started: list[tuple[float, str]], due: Mapping[str, float]) -> float | None:
    """The longest wait from a moment while ``fault`` lasted until a newly due occurrence started
    (None if, from some moment, none ever did)."""
    end = next(fault[key] for key in FAULT_ENDS if key in fault)
    worst = 0.0
    moment = fault["t"]
    while moment <= end:
        wait = seconds_until_jobs_start(moment, started, due)
        if wait is None:
            return None
        worst = max(worst, wait)
        moment += SAMPLE_S
    return round(worst, 3)


def _summary(values: list[float | None], worst: list[float | None] | None = None) -> dict[str, Any]:
    measured = sorted(v for v in values if v is not None)
    summary = {"count": len(values), "never": len(values) - len(measured),
               "p50": measured[(len(measured) - 1) // 2] if measured else None, "max": measured[-1] if measured else None}
    if worst is not None:
        summary["worst_during_max"] = None if None in worst else max(w for w in worst if w is not None)
    return summary


def measure(history: list[dict], started: list[tuple[float, str]], due: Mapping[str, float]) -> dict[str, Any]:
    """Writes ``availability_s`` into each fault of ``history`` (and ``after_promotion_s`` into
    failovers); returns the summary per kind with the targets. ``started``: see ``started``."""
    per_kind: dict[str, list[float | None]] = defaultdict(list)
    worst: dict[str, list[float | None]] = defaultdict(list)
    promoted: list[float | None] = []
    for fault in history:
        fault["availability_s"] = seconds_until_jobs_start(fault["t"], started, due)
        fault["worst_during_s"] = worst_during(fault, started, due)
        per_kind[fault["fault"]].append(fault["availability_s"])
        worst[fault["fault"]].append(fault["worst_during_s"])
        if "promoted" in fault:
            fault["after_promotion_s"] = seconds_until_jobs_start(fault["promoted"], started, due)
            promoted.append(fault["after_promotion_s"])
    by_kind = {kind: _summary(values, worst[kind]) for kind, values in sorted(per_kind.items())}
    targets = {kind: {"target_s": target, "max_s": by_kind[kind]["max"],
                      "met": by_kind[kind]["never"] == 0 and (by_kind[kind]["max"] or 0.0) <= target}
               for kind, target in TARGETS_S.items() if kind in by_kind}
    return {"per_kind": by_kind, "postgres_after_promotion": _summary(promoted) if promoted else None, "targets": targets}
