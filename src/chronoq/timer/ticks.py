"""Judging a claimed head row: which of its job's due ticks run, which are skipped and why,
and which tick becomes the next head. Pure: the timer turns the plan into SQL."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache

import asyncpg

from chronoq.schemas.cron import CronError, CronSchedule
from chronoq.schemas.policies import Skip, judge
from chronoq.schemas.schedule import tick_due

#: Ticks judged per head per claim. A long outage of a frequent schedule is worked through in
#: several claims, each bounded, instead of one giant transaction.
MAX_TICKS_PER_CLAIM = 1000


@dataclass(frozen=True)
class Plan:
    publish: bool  # the claimed row itself runs now
    park: bool = False  # a paused one-shot: keep it, undecided, until resumed
    wait: bool = False  # a one-shot's trailing run while its earlier run is live: judged again shortly
    cancelled: bool = False  # the job was cancelled while this row was claimed
    skipped: list[Skip] = field(default_factory=list)
    extra_runs: list[datetime] = field(default_factory=list)  # other ticks to run now
    next_head: datetime | None = None
    next_head_run_at: datetime | None = None  # when the next head is due: its tick plus its jitter offset
    next_head_parked: bool = False
    backfilled: int = 0


@lru_cache(maxsize=4096)
def schedule(expression: str, timezone: str) -> CronSchedule:
    return CronSchedule.parse(expression, timezone)


def plan_head(row: asyncpg.Record) -> Plan:
    """Raises CronError only if a stored schedule has become unusable (it was valid when
    stored); the timer then leaves the row due and reports it."""
    now: datetime = row["db_now"]
    paused = row["job_state"] == "paused"
    fire_at: datetime = row["fire_at"]
    grace = timedelta(milliseconds=row["misfire_grace_ms"])
    if row["job_state"] == "cancelled":
        return Plan(publish=False, cancelled=True)
    if row["kind"] == "once":
        # Every one-shot job passes here once, on the claim path: its single tick runs unless
        # it is paused, or late under `skip` (what judge() decides for one tick, without lists).
        if paused:
            return Plan(publish=False, park=True)
        if row["previous_running"]:  # overlap 'skip': a replaced job's trailing run follows the earlier one
            return Plan(publish=False, wait=True)
        if row["misfire"] == "skip" and now - fire_at > grace:
            return Plan(publish=False, skipped=[Skip(fire_at, "misfire", "skip: 1 missed")])
        return Plan(publish=True)
    jitter_ms = row["cron_jitter_ms"] or 0
    policy = dict(
        now=now,
        # Lateness counts from the nominal tick; the jitter window is not lateness.
        grace=grace + timedelta(milliseconds=jitter_ms),
        misfire=row["misfire"],
        max_backfill=row["max_backfill"],
        backfilled=row["backfilled"],
        overlap=row["overlap"],
        previous_running=bool(row["previous_running"]),
    )

    cron = schedule(row["cron"], row["timezone"])
    later = cron.ticks_between(fire_at, now, MAX_TICKS_PER_CLAIM)
    more_follow = len(later) == MAX_TICKS_PER_CLAIM
    if jitter_ms:
        # A later tick whose jittered due time has not come is not due yet: from the first such
        # tick on, the ticks wait, that one as the next head.
        cut = next((i for i, t in enumerate(later) if tick_due(row["job_id"], t, jitter_ms) > now), len(later))
        more_follow = more_follow and cut == len(later)
        later = later[:cut]
    ticks = [fire_at, *later]
    verdict = judge(ticks, more_follow=more_follow, paused=paused, **policy)
    try:
        next_head: datetime | None = cron.next_after(ticks[-1])
    except CronError:
        next_head = None  # the schedule has no tick left (past year 9999)
    return Plan(
        publish=fire_at in verdict.run,
        skipped=verdict.skip,
        extra_runs=[t for t in verdict.run if t != fire_at],
        next_head=next_head,
        next_head_run_at=None if next_head is None else tick_due(row["job_id"], next_head, jitter_ms),
        next_head_parked=paused,
        backfilled=verdict.backfilled,
    )
