"""Jobs submitted over AMQP by services in any language: the JSON they publish.

A submission is the same job as the Python producer's, with JSON-friendly fields (durations in
seconds, times in ISO 8601 with an offset). ``chronoq schema`` prints the JSON Schema generated
from these models; ``schemas/submission.schema.json`` in the repository is kept in sync by a test.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, TypeAdapter, ValidationError, field_validator

from chronoq.errors import InvalidJobError
from chronoq.schemas.job import MAX_ATTEMPTS_LIMIT, MAX_DELAY, MAX_TIMEOUT, JobSpec, build_spec, invalid
from chronoq.schemas.payload import MAX_PAYLOAD_BYTES
from chronoq.schemas.rules import KEY_MAX_LENGTH, MAX_DURATION, QUEUE_NAME_PATTERN, check_key, check_queue_name
from chronoq.schemas.schedule import MAX_BACKFILL_LIMIT, ScheduleSpec, build_schedule

#: Largest submission read: the payload's limit plus room for the other fields. A bigger body
#: is refused before it is parsed.
MAX_SUBMISSION_BYTES = MAX_PAYLOAD_BYTES + 16 * 1024
#: ``run_at`` is an RFC 3339 date-time with an offset: a string of digits (an epoch number,
#: which pydantic would otherwise read as one) is refused.
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?([Zz]|[+-]\d{2}:?\d{2})")


class _Common(BaseModel):
    # Strict: a number given as a string, a boolean given as a number, a float given for an
    # integer are refused, never converted; NaN and infinity are not numbers here.
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    queue: str = Field(description="Job queue, e.g. 'emails.send'.", pattern=QUEUE_NAME_PATTERN, max_length=200)
    payload: Any = Field(None, description=f"Any JSON value; at most {MAX_PAYLOAD_BYTES // 1024} KiB encoded, "
                                           "integers within 64 bits.")
    key: str | None = Field(None, min_length=1, max_length=KEY_MAX_LENGTH,
                            description="Idempotency key: the same key on the same queue is stored once. "
                                        "Printable characters only.")
    max_attempts: int | None = Field(None, ge=1, le=MAX_ATTEMPTS_LIMIT)
    timeout_s: float | None = Field(None, ge=0.001, le=MAX_TIMEOUT.total_seconds(),
                                    description="Handler timeout in seconds (at least a millisecond).")

    @field_validator("queue", mode="before")
    @classmethod
    def _queue(cls, value: object) -> object:
        return check_queue_name(value) if isinstance(value, str) else value

    @field_validator("key", mode="before")
    @classmethod
    def _key(cls, value: object) -> object:
        return check_key(value) if isinstance(value, str) else value


class OnceSubmission(_Common):
    """A one-shot job: run once at ``run_at``, or ``delay_s`` seconds after it is stored."""

    kind: Literal["once"] = "once"
    run_at: datetime | None = Field(None, description="RFC 3339 date-time with a UTC offset, 1970-2999.")
    delay_s: float | None = Field(None, ge=0, le=MAX_DELAY.total_seconds())
    misfire: Literal["skip", "run_once"] = "run_once"
    misfire_grace_s: float | None = Field(None, ge=0, le=MAX_DURATION.total_seconds())
    on_conflict: Literal["keep", "replace"] | None = Field(
        None, description="The key is already stored: 'keep' its job as it is (the default without debounce_s), or "
                          "'replace' its payload and the time of its pending run (a new run if it has already run).")
    debounce_s: float | None = Field(None, ge=0.001, le=MAX_DELAY.total_seconds(),
                                     description="Needs a key; implies 'replace'. Every submission of the key pushes "
                                                 "its pending run out to now + this many seconds.")
    max_wait_s: float | None = Field(None, ge=0.001, le=MAX_DELAY.total_seconds(),
                                     description="With debounce_s: the pending run is never pushed past this many "
                                                 "seconds after its first submission (default 10 x debounce_s).")

    @field_validator("run_at", mode="before")
    @classmethod
    def _run_at(cls, value: object) -> object:
        if not isinstance(value, str):
            return value  # None, or refused as not a date-time
        try:
            if _RFC3339.fullmatch(value) is None:
                raise ValueError(value)
            return datetime.fromisoformat(value.upper())  # RFC 3339 allows a lower-case t and z
        except ValueError:
            raise InvalidJobError(
                "run_at", "must be an RFC 3339 date-time with an offset, e.g. 2030-01-01T09:00:00Z"
            ) from None

    def to_spec(self) -> JobSpec:
        return build_spec(
            queue=self.queue, payload=self.payload, run_at=self.run_at, delay=self.delay_s, key=self.key,
            max_attempts=self.max_attempts, timeout=self.timeout_s, misfire=self.misfire,
            misfire_grace=self.misfire_grace_s, on_conflict=self.on_conflict, debounce=self.debounce_s,
            max_wait=self.max_wait_s,
        )


class CronSubmission(_Common):
    """A recurring job: run at every tick of ``cron`` in ``timezone``."""

    kind: Literal["cron"]
    cron: str = Field(description="5 fields, or 6 with seconds first; @hourly, @daily, ...; @every 5s (1s-24h)",
                      max_length=256)
    timezone: str = Field("UTC", max_length=64, description="IANA time zone, e.g. Europe/Berlin.")
    misfire: Literal["skip", "run_once", "backfill"] = "run_once"
    misfire_grace_s: float | None = Field(None, ge=0, le=MAX_DURATION.total_seconds())
    max_backfill: int | None = Field(None, ge=0, le=MAX_BACKFILL_LIMIT)
    overlap: Literal["allow", "skip"] = "allow"
    jitter_s: float | None = Field(None, ge=0, le=MAX_DURATION.total_seconds(),
                                   description="Each tick is due up to this many seconds after its nominal time "
                                               "(a fixed offset per job and tick); at most the shortest interval "
                                               "between two ticks.")

    def to_spec(self) -> ScheduleSpec:
        return build_schedule(
            queue=self.queue, payload=self.payload, cron=self.cron, timezone=self.timezone, misfire=self.misfire,
            misfire_grace=self.misfire_grace_s, max_backfill=self.max_backfill, overlap=self.overlap,
            jitter=self.jitter_s, key=self.key, max_attempts=self.max_attempts, timeout=self.timeout_s,
        )


def _kind(value: Any) -> str | None:
    """``kind`` decides the model; a submission without one is a one-shot job."""
    kind = value.get("kind", "once") if isinstance(value, dict) else getattr(value, "kind", None)
    return kind if isinstance(kind, str) else None


Submission = Annotated[
    Annotated[OnceSubmission, Tag("once")] | Annotated[CronSubmission, Tag("cron")],
    Discriminator(_kind, custom_error_type="invalid_kind", custom_error_message="kind must be 'once' or 'cron'"),
]
_ADAPTER: TypeAdapter[OnceSubmission | CronSubmission] = TypeAdapter(Submission)


def parse_submission(body: bytes) -> JobSpec | ScheduleSpec:
    """The spec in a submission, or InvalidJobError naming what is wrong. Pydantic parses the
    JSON itself: integers keep their exact value (and one beyond 64 bits is refused, where a
    parser that reads it as a float would store another number)."""
    if len(body) > MAX_SUBMISSION_BYTES:
        raise InvalidJobError("submission", f"{len(body)} bytes, over the limit of {MAX_SUBMISSION_BYTES}")
    try:
        submission = _ADAPTER.validate_json(body)
    except ValidationError as exc:
        error = exc.errors(include_input=False, include_url=False)[0]
        if error["type"] == "json_invalid":
            raise InvalidJobError("submission", "not valid JSON") from None
        if error["type"] == "model_type" or (error["type"] == "invalid_kind" and not error["loc"]):
            raise InvalidJobError("submission", error["msg"]) from None
        if error["loc"] and error["loc"][0] in ("once", "cron"):
            error["loc"] = error["loc"][1:]  # the tag: not a field of the submission
        raise _named(exc, error) from None
    try:
        return submission.to_spec()
    except InvalidJobError as exc:  # the job's rules name the Python field: name the JSON one
        raise InvalidJobError(_JSON_FIELDS.get(exc.field, exc.field), exc.message) from None


#: Submission fields whose name differs from the job's.
_JSON_FIELDS = {"delay": "delay_s", "timeout": "timeout_s", "misfire_grace": "misfire_grace_s", "jitter": "jitter_s",
                "debounce": "debounce_s", "max_wait": "max_wait_s"}


def _named(exc: ValidationError, error: Any) -> InvalidJobError:
    if isinstance((error.get("ctx") or {}).get("error"), InvalidJobError):
        return invalid(exc)
    field = ".".join(str(p) for p in error["loc"]) or "submission"
    return InvalidJobError(field, error["msg"].removeprefix("Value error, "))


def json_schema() -> dict[str, Any]:
    schema = _ADAPTER.json_schema()
    schema["title"] = "chronoq job submission"
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema
