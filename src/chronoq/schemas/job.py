"""The job spec: what a producer asks for, validated before anything is stored."""

from __future__ import annotations

import math
import random
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from chronoq.errors import InvalidJobError
from chronoq.schemas.payload import MAX_PAYLOAD_BYTES, encode_payload

#: Queue names: what RabbitMQ and a shell accept without quoting, and what reads well in the
#: management UI. ``amq.*`` is reserved by RabbitMQ. At most 200 characters so that the
#: namespaced RabbitMQ name stays under AMQP's 255-byte limit.
QUEUE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}$"
_QUEUE_RE = re.compile(QUEUE_NAME_PATTERN)
KEY_MAX_LENGTH = 200

#: The supported range of run times. Postgres could store more, but a job for the year 3000 is
#: a bug in the caller far more often than a plan.
EARLIEST_RUN_AT = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_RUN_AT = datetime(3000, 1, 1, tzinfo=UTC)
_LATEST_TIMESTAMP = LATEST_RUN_AT.timestamp()
_NO_DELAY = timedelta(0)

DEFAULT_MAX_ATTEMPTS = 5
DEFAULT_TIMEOUT = timedelta(minutes=1)
#: RabbitMQ closes the channel of a consumer that holds a delivery longer than its
#: consumer_timeout (30 minutes by default), cancelling every handler on that channel; a handler
#: timeout must stay below it. Longer work belongs in several jobs.
MAX_TIMEOUT = timedelta(minutes=25)


def check_queue_name(queue: object) -> str:
    if not isinstance(queue, str):
        raise InvalidJobError("queue", f"must be a string, not {type(queue).__name__}")
    if queue.startswith("amq."):
        raise InvalidJobError("queue", f"{queue[:40]!r}: names starting with 'amq.' are reserved by RabbitMQ")
    if not _QUEUE_RE.match(queue):
        raise InvalidJobError(
            "queue",
            f"{queue[:40]!r} does not match {QUEUE_NAME_PATTERN} "
            "(1-200 of letters, digits, '_', '.', ':', '-'; first a letter or digit)",
        )
    return queue


class RetryPolicy(BaseModel):
    """How failed attempts are retried: exponential backoff with jitter, capped."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_attempts: int = Field(DEFAULT_MAX_ATTEMPTS, ge=1, le=1000)
    backoff_base: timedelta = Field(timedelta(seconds=1), ge=timedelta(0))
    backoff_cap: timedelta = Field(timedelta(hours=1), ge=timedelta(0))
    #: Share of each delay that is randomised, so that jobs which failed together do not
    #: retry together (a thundering herd against a recovering dependency).
    jitter: float = Field(0.2, ge=0.0, le=1.0)

    def backoff(self, failed_attempt: int, rng: random.Random | None = None) -> timedelta:
        """Delay before the attempt after ``failed_attempt`` (1-based)."""
        exponent = min(failed_attempt - 1, 62)
        raw = min(self.backoff_cap.total_seconds(), self.backoff_base.total_seconds() * 2**exponent)
        spread = raw * self.jitter
        return timedelta(seconds=raw - spread + (rng or random).random() * spread)


class JobSpec(BaseModel):
    """A one-shot job: run ``payload`` on ``queue`` at ``run_at`` (or after ``delay``)."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    queue: str
    payload: Any = None
    run_at: datetime | None = None
    delay: timedelta | None = None
    key: str | None = Field(None, min_length=1, max_length=KEY_MAX_LENGTH)
    retry: RetryPolicy = RetryPolicy()
    timeout: timedelta = Field(DEFAULT_TIMEOUT, gt=timedelta(0), le=MAX_TIMEOUT)
    #: A one-shot job claimed more than ``misfire_grace`` late (the system was down) runs anyway
    #: (``run_once``, the default) or is recorded skipped (``skip``: e.g. a reminder that is
    #: pointless an hour late).
    misfire: Literal["skip", "run_once"] = "run_once"
    misfire_grace: timedelta = Field(timedelta(minutes=5), ge=timedelta(0))

    @field_validator("queue", mode="before")
    @classmethod
    def _queue(cls, value: object) -> str:
        return check_queue_name(value)

    @field_validator("run_at")
    @classmethod
    def _run_at(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("naive datetime: give a time zone (for example datetime.now(UTC))")
        if not EARLIEST_RUN_AT <= value < LATEST_RUN_AT:
            raise ValueError(f"outside the supported range {EARLIEST_RUN_AT:%Y}-{LATEST_RUN_AT:%Y}")
        return value.astimezone(UTC)

    @field_validator("delay", mode="before")
    @classmethod
    def _delay(cls, value: object) -> object:
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("must be a finite number of seconds")
        return value

    @field_validator("delay")
    @classmethod
    def _delay_range(cls, value: timedelta | None) -> timedelta | None:
        if value is not None:
            if value < _NO_DELAY:
                raise ValueError("must not be negative")
            # time.time(), not datetime.now(): this runs for every job of a bulk enqueue.
            if value.total_seconds() > _LATEST_TIMESTAMP - time.time():
                raise ValueError(f"reaches past the supported range (before {LATEST_RUN_AT:%Y})")
        return value

    @field_validator("key")
    @classmethod
    def _key(cls, value: str | None) -> str | None:
        if value is not None and ("\x00" in value or not value.isprintable()):
            raise ValueError("must be printable text without NUL")
        return value

    @model_validator(mode="after")
    def _one_time(self) -> "JobSpec":
        if self.run_at is not None and self.delay is not None:
            raise ValueError("give run_at or delay, not both")
        return self

    def encoded_payload(self) -> bytes:
        return encode_payload(self.payload)


def build_spec(**fields: Any) -> JobSpec:
    """JobSpec from keyword arguments; any problem becomes InvalidJobError naming the field."""
    return prepare_spec(**fields)[0]


def prepare_spec(**fields: Any) -> tuple[JobSpec, bytes]:
    """``build_spec``, plus the payload as it is stored (encoding it is what validates it)."""
    max_attempts = fields.pop("max_attempts", None)
    if max_attempts is not None:
        retry = fields.get("retry") or RetryPolicy()
        fields["retry"] = _retry_with(retry, max_attempts)
    fields = {k: v for k, v in fields.items() if v is not None}
    try:
        spec = JobSpec(**fields)
    except ValidationError as exc:
        raise invalid(exc) from None
    return spec, spec.encoded_payload()


def _retry_with(retry: RetryPolicy, max_attempts: object) -> RetryPolicy:
    try:
        return RetryPolicy(**{**retry.model_dump(), "max_attempts": max_attempts})
    except ValidationError as exc:
        raise invalid(exc) from None


def invalid(exc: ValidationError) -> InvalidJobError:
    error = exc.errors()[0]
    field = ".".join(str(part) for part in error["loc"]) or "job"
    message = error["msg"].removeprefix("Value error, ").removeprefix(f"{field}: ")
    return InvalidJobError(field, message)


__all__ = [
    "DEFAULT_MAX_ATTEMPTS",
    "MAX_PAYLOAD_BYTES",
    "QUEUE_NAME_PATTERN",
    "JobSpec",
    "RetryPolicy",
    "build_spec",
    "check_queue_name",
    "prepare_spec",
]
