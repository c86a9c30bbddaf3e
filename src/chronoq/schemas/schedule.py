"""The recurring job spec: a cron expression in a time zone, with missed-run and overlap policies
and jitter; and the rule that places a tick's due time within its jitter."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import Field, field_validator, model_validator

from chronoq.errors import InvalidJobError, wrong_type
from chronoq.schemas.cron import CronError, CronSchedule, ZoneError
from chronoq.schemas.job import SpecFields, duration_field, retry_with, validated
from chronoq.schemas.policies import Misfire, Overlap
from chronoq.schemas.rules import MAX_DURATION, check_int, human_duration

DEFAULT_MAX_BACKFILL = 100
MAX_BACKFILL_LIMIT = 100_000


class ScheduleSpec(SpecFields):
    """A recurring job: run ``payload`` on ``queue`` at every tick of ``cron`` in ``timezone``."""

    cron: str
    timezone: str = "UTC"
    misfire: Misfire = "run_once"
    max_backfill: int = Field(DEFAULT_MAX_BACKFILL, ge=0, le=MAX_BACKFILL_LIMIT)
    overlap: Overlap = "allow"
    #: Each tick is due at its nominal time plus a deterministic offset in [0, jitter)
    #: (:func:`tick_due`), to spread jobs that share a schedule. At most the shortest interval
    #: between two ticks of ``cron``, so that ticks keep their order.
    jitter: timedelta = Field(timedelta(0), ge=timedelta(0), le=MAX_DURATION)

    _jitter = duration_field("jitter")

    @field_validator("max_backfill", mode="before")
    @classmethod
    def _max_backfill(cls, value: object) -> int:
        return check_int(value, "max_backfill", 0, MAX_BACKFILL_LIMIT)

    @model_validator(mode="after")
    def _schedule(self) -> ScheduleSpec:
        cron = self.schedule()  # raises CronError, turned into InvalidJobError by build_schedule
        check_jitter(self.jitter, cron)
        return self

    def schedule(self) -> CronSchedule:
        return CronSchedule.parse(self.cron, self.timezone)


def check_jitter(jitter: timedelta, cron: CronSchedule) -> None:
    """InvalidJobError naming ``jitter`` if it is longer than the shortest interval between two
    ticks of ``cron``."""
    if jitter > timedelta(0):
        shortest = cron.shortest_interval()
        if jitter > shortest:
            raise InvalidJobError("jitter", f"{human_duration(jitter)} is longer than the shortest interval between "
                                            f"two ticks of {cron.expression!r} ({human_duration(shortest)})")


def tick_due(job_id: int, fire_at: datetime, jitter_ms: int) -> datetime:
    """When the tick ``fire_at`` of job ``job_id`` is due: its nominal time plus an offset in
    ``[0, jitter_ms)`` milliseconds, a hash of the job id and the nominal tick. Every timer and
    every restart computes the same offset; jobs sharing a schedule spread over the window."""
    if jitter_ms <= 0:
        return fire_at
    text = f"{job_id}@{fire_at.astimezone(UTC).isoformat()}".encode()
    digest = hashlib.blake2b(text, digest_size=8, person=b"chronoq-jitter").digest()
    return fire_at + timedelta(milliseconds=int.from_bytes(digest, "big") % jitter_ms)


def parse_schedule(cron: str, timezone: str) -> CronSchedule:
    """CronSchedule or InvalidJobError naming the field (``cron`` or ``timezone``)."""
    try:
        return CronSchedule.parse(cron, timezone)
    except CronError as exc:
        raise InvalidJobError("timezone" if isinstance(exc, ZoneError) else "cron", str(exc)) from None


def build_schedule(**fields: Any) -> ScheduleSpec:
    """ScheduleSpec from keyword arguments; any problem becomes InvalidJobError naming the field."""
    max_attempts = fields.pop("max_attempts", None)
    if max_attempts is not None:
        fields["retry"] = retry_with(fields.get("retry"), max_attempts)
    fields = {k: v for k, v in fields.items() if v is not None}
    for name in ("cron", "timezone"):
        if name in fields and not isinstance(fields[name], str):
            raise wrong_type(name, "a string", fields[name])
    if "cron" in fields:
        parse_schedule(fields["cron"], fields.get("timezone", "UTC"))
    spec: ScheduleSpec = validated(ScheduleSpec, fields)
    spec.encoded_payload()
    return spec
