"""Building the AMQP message for a claimed wheel row, without decoding its payload."""

from __future__ import annotations

from datetime import timedelta

import asyncpg
import orjson

from chronoq._broker.publisher import Outgoing
from chronoq._runtime.tracing import TRACE_HEADERS
from chronoq.schemas.message import MESSAGE_VERSION, message_headers


def job_message(row: asyncpg.Record) -> Outgoing:
    key = row["occurrence_key"]
    attempt = row["attempt"]
    body = orjson.dumps(
        {
            "v": MESSAGE_VERSION,
            "job_id": row["job_id"],
            "queue": row["queue"],
            "occurrence_key": key,
            "fire_at": row["fire_at"],
            "run_at": row["run_at"],
            "attempt": attempt,
            "max_attempts": row["max_attempts"],
            "timeout_s": row["timeout_ms"] / 1000,
            # The payload is already JSON text in Postgres; splice it in as it is.
            "payload": orjson.Fragment(row["payload"] or "null"),
        }
    )
    headers = message_headers(row["job_id"], row["queue"], key, row["fire_at"], row["run_at"], attempt)
    if row["trace"]:
        # W3C trace context of the span that enqueued the job: the handler's span continues it.
        headers.update({k: v for k, v in orjson.loads(row["trace"]).items() if k in TRACE_HEADERS})
    return Outgoing(routing_key=row["queue"], body=body, message_id=f"{key}#{attempt}", headers=headers)


def lease(row: asyncpg.Record, redispatch_after: timedelta) -> timedelta:
    """How long a dispatched occurrence may stay without an outcome before it is re-published:
    the redelivery deadline plus the job's own timeout, so a slow but healthy run is not
    duplicated."""
    return redispatch_after + timedelta(milliseconds=row["timeout_ms"])
