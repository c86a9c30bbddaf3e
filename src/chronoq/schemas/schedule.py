"""The recurring job spec: a cron expression in a time zone, with missed-run and overlap policies."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import BaseModel, Field, field_validator, model_validator

from chronoq.errors import InvalidJobError
from chronoq.schemas.cron import CronError, CronSchedule
from chronoq.schemas.job import (
    STRICT_MODEL,
    DEFAULT_MISFIRE_GRACE,
    DEFAULT_TIMEOUT,
    MAX_TIMEOUT,
    RetryPolicy,
    duration_field,
    retry_with,
    validated,
)
from chronoq.schemas.payload import encode_payload
from chronoq.schemas.policies import Misfire, Overlap
from chronoq.schemas.rules import KEY_MAX_LENGTH, MAX_DURATION, check_int, check_key, check_queue_name

DEFAULT_MAX_BACKFILL = 100
MAX_BACKFILL_LIMIT = 100_000


class ScheduleSpec(BaseModel):
    """A recurring job: run ``payload`` on ``queue`` at every tick of ``cron`` in ``timezone``."""

    model_config = STRICT_MODEL

    queue: str
    payload: Any = None
    cron: str
    timezone: str = "UTC"
    misfire: Misfire = "run_once"
    misfire_grace: timedelta = Field(DEFAULT_MISFIRE_GRACE, ge=timedelta(0), le=MAX_DURATION)
    max_backfill: int = Field(DEFAULT_MAX_BACKFILL, ge=0, le=MAX_BACKFILL_LIMIT)
    overlap: Overlap = "allow"
    key: str | None = Field(None, min_length=1, max_length=KEY_MAX_LENGTH)
    retry: RetryPolicy = RetryPolicy()
    timeout: timedelta = Field(DEFAULT_TIMEOUT, gt=timedelta(0), le=MAX_TIMEOUT)

    _timeout = duration_field("timeout", maximum=MAX_TIMEOUT, positive=True)
    _misfire_grace = duration_field("misfire_grace")
    _retry = field_validator("retry", mode="before")(lambda value: retry_with(value))

    @field_validator("queue", mode="before")
    @classmethod
    def _queue(cls, value: object) -> str:
        return check_queue_name(value)

    @field_validator("key", mode="before")
    @classmethod
    def _key(cls, value: object) -> str | None:
        return check_key(value)

    @field_validator("max_backfill", mode="before")
    @classmethod
    def _max_backfill(cls, value: object) -> int:
        return check_int(value, "max_backfill", 0, MAX_BACKFILL_LIMIT)

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
    """ScheduleSpec from keyword arguments; any problem becomes InvalidJobError naming the field."""
    max_attempts = fields.pop("max_attempts", None)
    if max_attempts is not None:
        fields["retry"] = retry_with(fields.get("retry"), max_attempts)
    fields = {k: v for k, v in fields.items() if v is not None}
    for name in ("cron", "timezone"):
        if name in fields and not isinstance(fields[name], str):
            raise InvalidJobError(name, f"must be a string, not {type(fields[name]).__name__}")
    if "cron" in fields:
        parse_schedule(fields["cron"], fields.get("timezone", "UTC"))
    spec: ScheduleSpec = validated(ScheduleSpec, fields)
    spec.encoded_payload()
    return spec
