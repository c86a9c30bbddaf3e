"""The job spec: what a producer asks for, validated before anything is stored."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from chronoq.errors import InvalidJobError, wrong_type
from chronoq.schemas.payload import MAX_PAYLOAD_BYTES, encode_payload
from chronoq.schemas.rules import (
    KEY_MAX_LENGTH,
    MAX_DURATION,
    QUEUE_NAME_PATTERN,
    check_aware_time,
    check_int,
    check_key,
    check_queue_name,
    short,
    to_duration,
)

#: The supported range of run times. Postgres could store more, but a job for the year 3000 is
#: a bug in the caller far more often than a plan.
EARLIEST_RUN_AT = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_RUN_AT = datetime(3000, 1, 1, tzinfo=UTC)
_LATEST_TIMESTAMP = LATEST_RUN_AT.timestamp()
_PAST_RANGE = f"reaches past the supported range (before {LATEST_RUN_AT:%Y})"
#: Longest delay: the whole supported range (a delay reaching past it is refused when it is given).
MAX_DELAY = LATEST_RUN_AT - EARLIEST_RUN_AT

DEFAULT_MAX_ATTEMPTS = 5
MAX_ATTEMPTS_LIMIT = 1000
DEFAULT_TIMEOUT = timedelta(minutes=1)
DEFAULT_MISFIRE_GRACE = timedelta(minutes=5)
#: RabbitMQ closes the channel of a consumer that holds a delivery longer than its
#: consumer_timeout (30 minutes by default), cancelling every handler on that channel; a handler
#: timeout must stay below it. Longer work belongs in several jobs.
MAX_TIMEOUT = timedelta(minutes=25)
#: A debounced job's ``max_wait`` when none is given, in debounce periods: a key enqueued
#: without pause still runs at least this often, never starved by its own stream of enqueues.
DEFAULT_MAX_WAIT_DEBOUNCES = 10

#: Pydantic checks what these validators return strictly: each takes the caller's value and
#: returns it in the model's type, or raises InvalidJobError naming the field.
STRICT_MODEL = ConfigDict(frozen=True, extra="forbid", strict=True, arbitrary_types_allowed=True)


def duration_field(name: str, *, maximum: timedelta = MAX_DURATION, positive: bool = False) -> Any:
    def check(value: object) -> timedelta:
        return to_duration(value, name, maximum=maximum, positive=positive)

    return field_validator(name, mode="before")(check)


class RetryPolicy(BaseModel):
    """How failed attempts are retried: exponential backoff with jitter, capped."""

    model_config = STRICT_MODEL

    max_attempts: int = Field(DEFAULT_MAX_ATTEMPTS, ge=1, le=MAX_ATTEMPTS_LIMIT)
    backoff_base: timedelta = Field(timedelta(seconds=1), ge=timedelta(0), le=MAX_DURATION)
    backoff_cap: timedelta = Field(timedelta(hours=1), ge=timedelta(0), le=MAX_DURATION)
    #: Share of each delay that is randomised, so that jobs which failed together do not
    #: retry together (a thundering herd against a recovering dependency).
    jitter: float = Field(0.2, ge=0.0, le=1.0, allow_inf_nan=False)

    _backoff_base = duration_field("backoff_base")
    _backoff_cap = duration_field("backoff_cap")

    @field_validator("max_attempts", mode="before")
    @classmethod
    def _max_attempts(cls, value: object) -> int:
        return check_int(value, "max_attempts", 1, MAX_ATTEMPTS_LIMIT)

    def backoff(self, failed_attempt: int, rng: random.Random | None = None) -> timedelta:
        """Delay before the attempt after ``failed_attempt`` (1-based)."""
        exponent = min(failed_attempt - 1, 62)
        raw = min(self.backoff_cap.total_seconds(), self.backoff_base.total_seconds() * 2**exponent)
        spread = raw * self.jitter
        return timedelta(seconds=raw - spread + (rng or random).random() * spread)


_DEFAULT_RETRY = RetryPolicy()


class SpecFields(BaseModel):
    """What one-shot and recurring jobs share, checked by the same rules."""

    model_config = STRICT_MODEL

    queue: str
    payload: Any = None
    key: str | None = Field(None, min_length=1, max_length=KEY_MAX_LENGTH)
    retry: RetryPolicy = _DEFAULT_RETRY
    timeout: timedelta = Field(DEFAULT_TIMEOUT, gt=timedelta(0), le=MAX_TIMEOUT)
    misfire_grace: timedelta = Field(DEFAULT_MISFIRE_GRACE, ge=timedelta(0), le=MAX_DURATION)

    _timeout = duration_field("timeout", maximum=MAX_TIMEOUT, positive=True)
    _misfire_grace = duration_field("misfire_grace")
    _retry = field_validator("retry", mode="before")(lambda value: retry_with(value))
    _queue = field_validator("queue", mode="before")(lambda value: check_queue_name(value))
    _key = field_validator("key", mode="before")(lambda value: check_key(value))

    def encoded_payload(self) -> bytes:
        return encode_payload(self.payload)


class JobSpec(SpecFields):
    """A one-shot job: run ``payload`` on ``queue`` at ``run_at`` (or after ``delay``)."""

    run_at: datetime | None = None
    delay: timedelta | None = None
    #: A one-shot job claimed more than ``misfire_grace`` late (the system was down) runs anyway
    #: (``run_once``, the default) or is recorded skipped (``skip``: e.g. a reminder that is
    #: pointless an hour late).
    misfire: Literal["skip", "run_once"] = "run_once"
    #: What an enqueue whose key is already stored does: ``keep`` the stored job as it is, or
    #: ``replace`` its payload and the time of its pending run (docs/keys.md). Left out (None):
    #: ``replace`` with ``debounce``, else ``keep`` (``replaces`` says which).
    on_conflict: Literal["keep", "replace"] | None = None
    #: Every enqueue of the key pushes the pending run out to now + ``debounce`` (and replaces
    #: its payload), never past ``max_wait`` after the enqueue that created that run.
    debounce: timedelta | None = None
    max_wait: timedelta | None = None

    _debounce = duration_field("debounce", maximum=MAX_DELAY, positive=True)
    _max_wait = duration_field("max_wait", maximum=MAX_DELAY, positive=True)

    @field_validator("on_conflict", mode="before")
    @classmethod
    def _on_conflict(cls, value: object) -> str | None:
        if value is not None and (not isinstance(value, str) or value not in ("keep", "replace")):
            raise InvalidJobError("on_conflict", f"must be 'keep' or 'replace', not {short(value)}")
        return value

    @field_validator("run_at", mode="before")
    @classmethod
    def _run_at(cls, value: object) -> datetime | None:
        if value is None:
            return None
        return check_aware_time(value, "run_at", earliest=EARLIEST_RUN_AT, latest=LATEST_RUN_AT)

    @field_validator("delay", mode="before")
    @classmethod
    def _delay(cls, value: object) -> timedelta | None:
        if value is None:
            return None
        delay = to_duration(value, "delay", maximum=MAX_DELAY, too_long=_PAST_RANGE)
        # time.time(), not datetime.now(): this runs for every job of a bulk enqueue.
        if delay.total_seconds() > _LATEST_TIMESTAMP - time.time():
            raise InvalidJobError("delay", _PAST_RANGE)
        return delay

    @model_validator(mode="after")
    def _one_time(self) -> JobSpec:
        if self.run_at is not None and self.delay is not None:
            raise InvalidJobError("job", "give run_at or delay, not both")
        if self.key is None and self.debounce is not None:
            raise InvalidJobError("debounce", "needs a key: the enqueues of one key are debounced together")
        if self.key is None and self.on_conflict == "replace":
            raise InvalidJobError("on_conflict", "'replace' needs a key: it replaces the job stored under that key")
        if self.debounce is None:
            if self.max_wait is not None:
                raise InvalidJobError("max_wait", "applies only with debounce")
            return self
        if self.on_conflict == "keep":
            raise InvalidJobError("on_conflict", "debounce replaces the pending run: give 'replace' or leave it out")
        for name in ("run_at", "delay"):
            if getattr(self, name) is not None:
                raise InvalidJobError(name, "cannot be combined with debounce, which sets the due time")
        if self.debounce.total_seconds() > _LATEST_TIMESTAMP - time.time():
            raise InvalidJobError("debounce", _PAST_RANGE)
        if self.max_wait is not None and self.max_wait < self.debounce:
            raise InvalidJobError("max_wait", "must be at least debounce")
        return self

    @property
    def replaces(self) -> bool:
        """Whether an enqueue of a stored key replaces its job (``replace``, or ``debounce``)."""
        return self.on_conflict == "replace" or (self.on_conflict is None and self.debounce is not None)

    @property
    def waits_at_most(self) -> timedelta | None:
        """A debounced job's ``max_wait``, given or by default; None if it is not debounced."""
        if self.debounce is None:
            return None
        return self.max_wait or self.debounce * DEFAULT_MAX_WAIT_DEBOUNCES


def build_spec(**fields: Any) -> JobSpec:
    """JobSpec from keyword arguments; any problem becomes InvalidJobError naming the field."""
    return prepare_spec(**fields)[0]


def prepare_spec(**fields: Any) -> tuple[JobSpec, bytes]:
    """``build_spec``, plus the payload as it is stored (encoding it is what validates it)."""
    max_attempts = fields.pop("max_attempts", None)
    if max_attempts is not None:
        fields["retry"] = retry_with(fields.get("retry"), max_attempts)
    fields = {k: v for k, v in fields.items() if v is not None}
    spec = validated(JobSpec, fields)
    return spec, spec.encoded_payload()


def revalidated(spec: JobSpec) -> tuple[JobSpec, bytes]:
    """A JobSpec checked again from its fields, as a new one would be: a spec changed after it
    was built (``model_copy(update=...)`` skips validation) is held to the same rules."""
    return prepare_spec(**{name: getattr(spec, name) for name in JobSpec.model_fields})


def retry_with(retry: object, max_attempts: object = None) -> RetryPolicy:
    """``retry`` (default: the default policy) checked again from its fields, with
    ``max_attempts`` in it if given: a policy changed after it was built does not pass unchecked."""
    if retry is None:
        retry = RetryPolicy()
    if not isinstance(retry, RetryPolicy):
        raise wrong_type("retry", "a RetryPolicy", retry)
    if retry is _DEFAULT_RETRY and max_attempts is None:
        return retry
    fields = {n: getattr(retry, n) for n in RetryPolicy.model_fields}
    if max_attempts is not None:
        fields["max_attempts"] = max_attempts
    return validated(RetryPolicy, fields)


_Model = TypeVar("_Model", bound=BaseModel)


def validated(model: type[_Model], fields: dict[str, Any]) -> _Model:
    """``model(**fields)``, with a failure as InvalidJobError naming the field."""
    try:
        return model(**fields)
    except ValidationError as exc:
        raise invalid(exc) from None


def invalid(exc: ValidationError) -> InvalidJobError:
    """The first problem pydantic found, as InvalidJobError. An InvalidJobError a validator
    raised keeps its own field and message; pydantic's own messages never quote the input."""
    error = exc.errors(include_input=False, include_url=False)[0]
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, InvalidJobError):
        return cause
    field = ".".join(str(part) for part in error["loc"]) or "job"
    message = error["msg"].removeprefix("Value error, ").removeprefix(f"{field}: ")
    return InvalidJobError(field, message)


__all__ = [
    "DEFAULT_MAX_ATTEMPTS",
    "KEY_MAX_LENGTH",
    "MAX_PAYLOAD_BYTES",
    "QUEUE_NAME_PATTERN",
    "JobSpec",
    "RetryPolicy",
    "build_spec",
    "check_queue_name",
    "prepare_spec",
    "revalidated",
]
