"""Jobs submitted over AMQP by services in any language: the JSON they publish.

A submission is the same job as the Python producer's, with JSON-friendly fields (durations in
seconds, times in ISO 8601 with an offset). ``chronoq schema`` prints the JSON Schema generated
from these models; ``schemas/submission.schema.json`` in the repository is kept in sync by a test.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from chronoq.errors import InvalidJobError
from chronoq.schemas.job import JobSpec, build_spec
from chronoq.schemas.schedule import ScheduleSpec, build_schedule


class _Common(BaseModel):
    model_config = ConfigDict(extra="forbid")

    queue: str = Field(description="Job queue, e.g. 'emails.send'.")
    payload: Any = Field(None, description="Any JSON value; at most 256 KiB encoded.")
    key: str | None = Field(None, description="Idempotency key: the same key on the same queue is stored once.")
    max_attempts: int | None = Field(None, ge=1, le=1000)
    timeout_s: float | None = Field(None, gt=0, description="Handler timeout in seconds.")


class OnceSubmission(_Common):
    """A one-shot job: run once at ``run_at``, or ``delay_s`` seconds after it is stored."""

    kind: Literal["once"] = "once"
    run_at: datetime | None = Field(None, description="ISO 8601 with a UTC offset.")
    delay_s: float | None = Field(None, ge=0)
    misfire: Literal["skip", "run_once"] = "run_once"
    misfire_grace_s: float | None = Field(None, ge=0)

    def to_spec(self) -> JobSpec:
        return build_spec(
            queue=self.queue, payload=self.payload, run_at=self.run_at, delay=self.delay_s, key=self.key,
            max_attempts=self.max_attempts, timeout=self.timeout_s, misfire=self.misfire,
            misfire_grace=self.misfire_grace_s,
        )


class CronSubmission(_Common):
    """A recurring job: run at every tick of ``cron`` in ``timezone``."""

    kind: Literal["cron"]
    cron: str = Field(description="5 fields, or 6 with seconds last; @hourly, @daily, ...")
    timezone: str = "UTC"
    misfire: Literal["skip", "run_once", "backfill"] = "run_once"
    misfire_grace_s: float | None = Field(None, ge=0)
    max_backfill: int | None = Field(None, ge=0)
    overlap: Literal["allow", "skip"] = "allow"

    def to_spec(self) -> ScheduleSpec:
        return build_schedule(
            queue=self.queue, payload=self.payload, cron=self.cron, timezone=self.timezone, misfire=self.misfire,
            misfire_grace=timedelta(seconds=self.misfire_grace_s) if self.misfire_grace_s is not None else None,
            max_backfill=self.max_backfill, overlap=self.overlap, key=self.key, max_attempts=self.max_attempts,
            timeout=self.timeout_s,
        )


Submission = Annotated[OnceSubmission | CronSubmission, Field(discriminator="kind")]
_ADAPTER: TypeAdapter[OnceSubmission | CronSubmission] = TypeAdapter(Submission)


def parse_submission(body: bytes) -> JobSpec | ScheduleSpec:
    """The spec in a submission, or InvalidJobError naming what is wrong."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidJobError("submission", f"not valid JSON: {exc}") from None
    if isinstance(data, dict) and "kind" not in data:
        data["kind"] = "once"  # the documented default
    try:
        submission = _ADAPTER.validate_python(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(p) for p in error["loc"]) or "submission"
        raise InvalidJobError(field, error["msg"]) from None
    return submission.to_spec()


def json_schema() -> dict[str, Any]:
    schema = _ADAPTER.json_schema()
    schema["title"] = "chronoq job submission"
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema
