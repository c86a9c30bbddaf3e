"""Missed-run and overlap policies, as pure decisions over lists of ticks.

A timer that claims a job's head tick late — the system was down or overloaded — asks
:func:`judge` what to do with every tick that fell due since. Each tick ends up either run or
skipped with a reason; none is dropped without a record.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

Misfire = Literal["skip", "run_once", "backfill"]
Overlap = Literal["allow", "skip"]
SkipReason = Literal["misfire", "overlap", "paused", "backfill_cap"]

MISFIRE_POLICIES: tuple[str, ...] = ("skip", "run_once", "backfill")
OVERLAP_POLICIES: tuple[str, ...] = ("allow", "skip")


@dataclass(frozen=True)
class Skip:
    fire_at: datetime
    reason: SkipReason
    detail: str


@dataclass(frozen=True)
class Verdict:
    run: list[datetime] = field(default_factory=list)  # oldest first
    skip: list[Skip] = field(default_factory=list)
    backfilled: int = 0  # missed ticks run so far in this outage, including this verdict's


def judge(
    ticks: Sequence[datetime],
    *,
    now: datetime,
    grace: timedelta,
    misfire: Misfire,
    max_backfill: int,
    backfilled: int = 0,
    more_follow: bool = False,
    paused: bool = False,
    overlap: Overlap = "allow",
    previous_running: bool = False,
) -> Verdict:
    """Decide every tick in ``ticks`` (all due by ``now``, oldest first).

    A tick is *missed* when it is more than ``grace`` late; the others are on time and run.
    ``more_follow`` says that further missed ticks come in a later call (the work is bounded
    per call), so ``run_once`` waits for the last call to pick the latest tick.
    """
    if paused:
        return Verdict(skip=[Skip(t, "paused", "job paused") for t in ticks], backfilled=backfilled)
    missed = [t for t in ticks if now - t > grace]
    on_time = [t for t in ticks if now - t <= grace]
    run: list[datetime] = []
    skip: list[Skip] = []
    label = f"{misfire}: {len(missed)} missed"
    if misfire == "skip":
        skip += [Skip(t, "misfire", label) for t in missed]
    elif misfire == "run_once":
        if missed and not more_follow:
            run.append(missed[-1])
            skip += [Skip(t, "misfire", f"{label}, coalesced into {missed[-1].isoformat()}") for t in missed[:-1]]
        else:
            # The latest missed tick comes in a later batch of this outage: it runs, these coalesce.
            skip += [Skip(t, "misfire", f"{label}, coalesced into a later tick") for t in missed]
    else:
        budget = max(max_backfill - backfilled, 0)
        run += missed[:budget]
        skip += [Skip(t, "backfill_cap", f"backfill: cap of {max_backfill} reached") for t in missed[budget:]]
        backfilled += min(budget, len(missed))
    run += on_time
    if on_time:
        backfilled = 0  # a tick ran on time, so the outage is over: a later one gets a fresh budget
    if overlap == "skip" and run:
        # Only the first tick runs, and not even that one while the previous occurrence runs.
        kept, rest = ([], run) if previous_running else (run[:1], run[1:])
        skip += [Skip(t, "overlap", "previous occurrence still running") for t in rest]
        run = kept
    return Verdict(run=run, skip=sorted(skip, key=lambda s: s.fire_at), backfilled=backfilled)
