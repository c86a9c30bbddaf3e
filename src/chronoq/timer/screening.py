"""Screening claimed rows: what each row of a batch becomes before anything is published.

A stored job whose values break the input contract cannot be published. Every entry point
validates a job before storing it, so such a row was written some other way (by hand, by an older
version, by a future SQL entry point with a bug). It must not stop the batch it was claimed in:
the timer sets it aside, recorded dead with the reason, and publishes the rest. A head row (the
next tick of a recurring job, or a one-shot job's only one) is judged by its plan, which may
publish it, skip it, or leave it parked.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg

from chronoq.errors import InvalidJobError
from chronoq.schemas.job import MAX_ATTEMPTS_LIMIT
from chronoq.schemas.message import MAX_TIMEOUT_S
from chronoq.schemas.payload import MAX_PAYLOAD_BYTES
from chronoq.schemas.rules import MAX_JOB_ID, check_queue_name
from chronoq.timer.ticks import Plan, plan_head

#: Largest stored payload published, as Postgres renders it (jsonb's text adds a space after
#: every ':' and ',', so a payload at the producer's limit renders somewhat longer).
MAX_STORED_PAYLOAD_CHARS = 4 * MAX_PAYLOAD_BYTES
#: Longest trace context carried as headers; a longer one is left out, the job still runs.
MAX_TRACE_CHARS = 2048

#: A claimed row set aside as dead: (row, reason, detail).
SetAside = tuple[asyncpg.Record, str, str]


@dataclass
class Screened:
    """A batch's claimed rows, judged."""

    rows: list[asyncpg.Record] = field(default_factory=list)  # every row that can be published
    to_publish: list[asyncpg.Record] = field(default_factory=list)  # those whose message goes out now
    plans: list[tuple[asyncpg.Record, Plan]] = field(default_factory=list)  # the head rows' plans
    set_aside: list[SetAside] = field(default_factory=list)


def screen(rows: list[asyncpg.Record]) -> Screened:
    """Set aside the rows that can never be published and plan the heads; pure."""
    screened = Screened()
    for row in rows:
        problem = unpublishable(row)
        if problem is None:
            screened.rows.append(row)
        else:
            screened.set_aside.append((row, "unpublishable", problem))
    screened.to_publish = [r for r in screened.rows if not r["head"]]
    for row in (r for r in screened.rows if r["head"]):
        try:
            plan = plan_head(row)
        except Exception as exc:  # a stored schedule that cannot be judged
            screened.set_aside.append((row, "invalid_schedule", f"{type(exc).__name__}: {exc}"))
            continue
        screened.plans.append((row, plan))
        if plan.publish:
            screened.to_publish.append(row)
    return screened


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
