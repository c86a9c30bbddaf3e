"""Screening claimed rows: a stored job whose values break the input contract cannot be published.

Every entry point validates a job before storing it, so such a row was written some other way (by
hand, by an older version, by a future SQL entry point with a bug). It must not stop the batch it
was claimed in: the timer sets it aside, recorded dead with the reason, and publishes the rest.
"""

from __future__ import annotations

import asyncpg

from chronoq.errors import InvalidJobError
from chronoq.schemas.job import MAX_ATTEMPTS_LIMIT
from chronoq.schemas.message import MAX_TIMEOUT_S
from chronoq.schemas.payload import MAX_PAYLOAD_BYTES
from chronoq.schemas.rules import MAX_JOB_ID, check_queue_name

#: Largest stored payload published, as Postgres renders it (jsonb's text adds a space after
#: every ':' and ',', so a payload at the producer's limit renders somewhat longer).
MAX_STORED_PAYLOAD_CHARS = 4 * MAX_PAYLOAD_BYTES
#: Longest trace context carried as headers; a longer one is left out, the job still runs.
MAX_TRACE_CHARS = 2048


def unpublishable(row: asyncpg.Record) -> str | None:
    """Why this claimed row can never be published, or None if it can."""
    try:
        check_queue_name(row["queue"])
    except InvalidJobError as exc:
        return f"stored queue name is invalid: {exc.message}"
    if not 1 <= row["job_id"] <= MAX_JOB_ID:
        return "stored job id is out of range"
    if row["timeout_ms"] is None or not 0 < row["timeout_ms"] <= MAX_TIMEOUT_S * 1000:
        return "stored timeout is out of range"
    if row["max_attempts"] is None or not 1 <= row["max_attempts"] <= MAX_ATTEMPTS_LIMIT:
        return "stored max_attempts is out of range"
    if not 1 <= row["attempt"] <= 1_000_000:
        return "attempt number is out of range"
    payload = row["payload"]
    if payload is not None and len(payload) > MAX_STORED_PAYLOAD_CHARS:
        return f"stored payload of {len(payload)} characters is over the limit"
    return None
