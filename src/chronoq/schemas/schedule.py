"""The recurring job spec: a cron expression in a time zone, with missed-run and overlap policies."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator

from chronoq.errors import InvalidJobError, wrong_type
from chronoq.schemas.cron import CronError, CronSchedule, ZoneError
from chronoq.schemas.job import SpecFields, retry_with, validated
from chronoq.schemas.policies import Misfire, Overlap
from chronoq.schemas.rules import check_int

DEFAULT_MAX_BACKFILL = 100
MAX_BACKFILL_LIMIT = 100_000


class ScheduleSpec(SpecFields):
    """A recurring job: run ``payload`` on ``queue`` at every tick of ``cron`` in ``timezone``."""

    cron: str
    timezone: str = "UTC"
    misfire: Misfire = "run_once"
    max_backfill: int = Field(DEFAULT_MAX_BACKFILL, ge=0, le=MAX_BACKFILL_LIMIT)
    overlap: Overlap = "allow"

    @field_validator("max_backfill", mode="before")
    @classmethod
    def _max_backfill(cls, value: object) -> int:
        return check_int(value, "max_backfill", 0, MAX_BACKFILL_LIMIT)

    @model_validator(mode="after")
    def _schedule(self) -> ScheduleSpec:
        self.schedule()  # raises CronError, turned into InvalidJobError by build_schedule
        return self

    def schedule(self) -> CronSchedule:
        return CronSchedule.parse(self.cron, self.timezone)


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
