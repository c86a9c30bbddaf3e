"""The recurring job spec: a cron expression in a time zone, with missed-run and overlap policies."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from chronoq.errors import InvalidJobError
from chronoq.schemas.cron import CronError, CronSchedule
from chronoq.schemas.job import DEFAULT_TIMEOUT, KEY_MAX_LENGTH, MAX_TIMEOUT, RetryPolicy, check_queue_name, invalid
from chronoq.schemas.payload import encode_payload
from chronoq.schemas.policies import Misfire, Overlap

DEFAULT_MISFIRE_GRACE = timedelta(minutes=5)
DEFAULT_MAX_BACKFILL = 100
MAX_BACKFILL_LIMIT = 100_000


class ScheduleSpec(BaseModel):
    """A recurring job: run ``payload`` on ``queue`` at every tick of ``cron`` in ``timezone``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    queue: str
    payload: Any = None
    cron: str
    timezone: str = "UTC"
    misfire: Misfire = "run_once"
    misfire_grace: timedelta = Field(DEFAULT_MISFIRE_GRACE, ge=timedelta(0))
    max_backfill: int = Field(DEFAULT_MAX_BACKFILL, ge=0, le=MAX_BACKFILL_LIMIT)
    overlap: Overlap = "allow"
    key: str | None = Field(None, min_length=1, max_length=KEY_MAX_LENGTH)
    retry: RetryPolicy = RetryPolicy()
    timeout: timedelta = Field(DEFAULT_TIMEOUT, gt=timedelta(0), le=MAX_TIMEOUT)

    @field_validator("queue", mode="before")
    @classmethod
    def _queue(cls, value: object) -> str:
        return check_queue_name(value)

    @model_validator(mode="after")
    def _schedule(self) -> "ScheduleSpec":
        self.schedule()  # raises CronError, turned into InvalidJobError by build_schedule
        return self

    def schedule(self) -> CronSchedule:
        return CronSchedule.parse(self.cron, self.timezone)

    def encoded_payload(self) -> bytes:
        return encode_payload(self.payload)


def parse_schedule(cron: str, timezone: str) -> CronSchedule:
    """CronSchedule or InvalidJobError naming the field (``cron`` or ``timezone``)."""
    try:
        return CronSchedule.parse(cron, timezone)
    except CronError as exc:
        raise InvalidJobError(_cron_field(str(exc)), str(exc)) from None


def _cron_field(message: str) -> str:
    return "timezone" if "zone" in message.lower() else "cron"


def build_schedule(**fields: Any) -> ScheduleSpec:
    max_attempts = fields.pop("max_attempts", None)
    if max_attempts is not None:
        retry = fields.get("retry") or RetryPolicy()
        try:
            fields["retry"] = RetryPolicy(**{**retry.model_dump(), "max_attempts": max_attempts})
        except ValidationError as exc:
            raise invalid(exc) from None
    fields = {k: v for k, v in fields.items() if v is not None}
    for name in ("cron", "timezone"):
        if name in fields and not isinstance(fields[name], str):
            raise InvalidJobError(name, f"must be a string, not {type(fields[name]).__name__}")
    if "cron" in fields:
        parse_schedule(fields["cron"], fields.get("timezone", "UTC"))
    try:
        spec = ScheduleSpec(**fields)
    except ValidationError as exc:
        raise invalid(exc) from None
    spec.encoded_payload()
    return spec
