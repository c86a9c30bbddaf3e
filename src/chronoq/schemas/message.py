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
CONTENT_TYPE = "application/json"
APP_ID = "chronoq"


class JobMessage(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    # Bounds are those of the database columns, so that a forged or corrupted message fails here,
    # as a rejected message, and never as a database error that would look like an outage.
    v: int = MESSAGE_VERSION
    job_id: int = Field(ge=1, le=2**63 - 1)
    queue: str = Field(min_length=1, max_length=200)
    occurrence_key: str = Field(min_length=1, max_length=400, pattern=r"^[^\x00]+$")
    fire_at: datetime = Field(strict=True)  # the occurrence's nominal time (RFC 3339, not a number)
    run_at: datetime = Field(strict=True)  # when this attempt was due
    attempt: int = Field(ge=1, le=1_000_000)
    max_attempts: int = Field(ge=1, le=1000)
    timeout_s: float = Field(gt=0, le=24 * 3600, allow_inf_nan=False)
    payload: Any = None

    def headers(self) -> dict[str, Any]:
        return {
            "x-chronoq-job-id": self.job_id,
            "x-chronoq-queue": self.queue,
            "x-chronoq-occurrence": self.fire_at.isoformat(),
            "x-chronoq-attempt": self.attempt,
            "x-chronoq-idempotency-key": self.occurrence_key,
        }

    def body(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json"))
