"""The AMQP job message: what a timer publishes and a worker consumes.

The body is a self-describing JSON envelope, so that a message read in the RabbitMQ management
UI (or by a consumer in another language) says what it is without a database lookup. The same
identifiers travel as headers for the UI's message view.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field

MESSAGE_VERSION = 1
#: Longest handler timeout a message may carry.
MAX_TIMEOUT_S = 24 * 3600
CONTENT_TYPE = "application/json"
APP_ID = "chronoq"


def message_headers(job_id: int, queue: str, occurrence_key: str, fire_at: datetime, run_at: datetime,
                    attempt: int) -> dict[str, Any]:
    """The ``x-chronoq-*`` headers every job message carries, for the RabbitMQ management UI."""
    return {
        "x-chronoq-job-id": job_id,
        "x-chronoq-queue": queue,
        "x-chronoq-occurrence": fire_at.isoformat(),
        "x-chronoq-run-at": run_at.isoformat(),
        "x-chronoq-attempt": attempt,
        "x-chronoq-idempotency-key": occurrence_key,
    }


def pack_headers(queue: str, jobs: int) -> dict[str, Any]:
    """Headers of a packed message (many jobs of one queue): ``x-chronoq-pack`` is the count."""
    return {"x-chronoq-queue": queue, PACK_HEADER: jobs}


PACK_HEADER = "x-chronoq-pack"


class JobMessage(BaseModel):
    # Strict: a forged message with a number as a string or a bool as a number is rejected,
    # never read as another job.
    model_config = ConfigDict(frozen=True, extra="ignore", strict=True)

    # Bounds are those of the database columns, so that a forged or corrupted message fails here,
    # as a rejected message, and never as a database error that would look like an outage.
    v: int = MESSAGE_VERSION
    job_id: int = Field(ge=1, le=2**63 - 1)
    queue: str = Field(min_length=1, max_length=200)
    occurrence_key: str = Field(min_length=1, max_length=400, pattern=r"^[^\x00]+$")
    fire_at: datetime = Field(strict=True)  # the occurrence's nominal time (RFC 3339, not a number)
    run_at: datetime = Field(strict=True)  # when this attempt was due
    attempt: int = Field(ge=1, le=1_000_000)
    # The publishing timer batch's random id (wheel.dispatch_id): tells the first
    # copy of an attempt from copies published again. Absent: treated as published again.
    dispatch_id: int | None = Field(default=None, ge=0, le=2**63 - 1)
    max_attempts: int = Field(ge=1, le=1000)
    timeout_s: float = Field(gt=0, le=MAX_TIMEOUT_S, allow_inf_nan=False)
    payload: Any = None

    def headers(self) -> dict[str, Any]:
        return message_headers(self.job_id, self.queue, self.occurrence_key, self.fire_at, self.run_at, self.attempt)

    def body(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json"))


class PackedJob(JobMessage):
    """One job of a packed message, with the trace context its own message would carry."""

    trace: dict[str, str] = Field(default_factory=dict, max_length=8)


class PackMessage(BaseModel):
    """Many due jobs of one queue in one AMQP message (a packed queue)."""

    model_config = ConfigDict(frozen=True, extra="ignore", strict=True)

    v: int = MESSAGE_VERSION
    pack: list[PackedJob] = Field(min_length=1, max_length=1000)
