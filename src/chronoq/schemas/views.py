"""Read models: what ``Producer.get`` and ``chronoq jobs show`` return."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from chronoq.schemas.cron import CronTick

OccurrenceState = Literal[
    "scheduled", "dispatched", "retrying", "deferred", "succeeded", "dead", "skipped", "cancelled"
]


class ScheduledJob(int):
    """What ``Producer.schedule`` returns: the job's id, an ``int`` as it always was, carrying the
    schedule's next three ticks in ``next_ticks`` (UTC and local time, with DST marks), so that a
    misread expression shows at once."""

    next_ticks: tuple[CronTick, ...]

    def __new__(cls, job_id: int, next_ticks: Sequence[CronTick] = ()) -> ScheduledJob:
        scheduled = super().__new__(cls, job_id)
        scheduled.next_ticks = tuple(next_ticks)
        return scheduled

    @property
    def job_id(self) -> int:
        return int(self)


class AttemptView(BaseModel):
    model_config = ConfigDict(frozen=True)

    attempt: int
    outcome: str
    error: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    worker: str | None = None


class OccurrenceView(BaseModel):
    model_config = ConfigDict(frozen=True)

    occurrence_key: str
    fire_at: datetime
    state: OccurrenceState
    attempt: int
    run_at: datetime | None = None
    dispatches: int = 0
    reason: str | None = None
    error: str | None = None
    result: Any = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempts: list[AttemptView] = []
    manual: bool = False  # a run asked for by trigger(), not a tick of the schedule


class JobView(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: int
    queue: str
    kind: Literal["once", "cron"]
    state: str
    key: str | None
    payload: Any
    max_attempts: int
    timeout_s: float
    created_at: datetime
    occurrences: list[OccurrenceView]
    cron: str | None = None
    timezone: str | None = None
    misfire: str = "run_once"
    overlap: str = "allow"
    jitter_s: float = 0.0  # recurring jobs: each tick is due within this many seconds after it


class QueueStatus(BaseModel):
    """One queue's counts: live occurrences by phase now, outcomes over the status window."""

    model_config = ConfigDict(frozen=True)

    queue: str
    scheduled: int
    due: int
    in_flight: int
    #: Live occurrences waiting after a failed publish (refused by the broker, or held after their
    #: dispatch failed alone), with the error in ``jobs show``.
    held: int = 0
    succeeded: int
    failed: int
    dead: int
    skipped: int
    cancelled: int
    lateness_p50_s: float | None
    lateness_p99_s: float | None
    #: Due occurrences that the queue's pause or limits hold back.
    deferred: int = 0
    paused: bool = False
    max_running: int | None = None
    #: At most ``rate_count`` dispatches in any window of ``rate_period_s`` seconds.
    rate_count: int | None = None
    rate_period_s: float | None = None


class TickView(BaseModel):
    """One nominal tick of a job and what happened to it, or one manual run (``manual``: asked
    for by ``trigger`` at ``fire_at``, under its own ``occurrence_key``)."""

    model_config = ConfigDict(frozen=True)

    fire_at: datetime
    state: str  # scheduled | paused | due | dispatched | retrying | succeeded | dead | skipped | cancelled
    reason: str | None = None  # for skipped: misfire | overlap | paused | backfill_cap
    detail: str | None = None
    attempt: int = 0
    finished_at: datetime | None = None
    occurrence_key: str | None = None  # the idempotency key: ``job@tick``, ``job@manual:time`` for a manual run
    manual: bool = False


class JobSummary(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: int
    queue: str
    kind: str
    state: str
    key: str | None
    cron: str | None
    timezone: str | None
    created_at: datetime
    next_fire_at: datetime | None
