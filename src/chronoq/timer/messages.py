"""Building the AMQP messages for claimed wheel rows, without decoding their payloads: one
message per job, or, for a packed queue, one message per ``pack_size`` jobs of the queue."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import timedelta
from typing import Any

import asyncpg
import orjson

from chronoq._broker.publisher import Outgoing
from chronoq._runtime.tracing import TRACE_HEADERS
from chronoq.schemas.message import MESSAGE_VERSION, message_headers, pack_headers
from chronoq.timer.screening import MAX_TRACE_CHARS, SetAside


def _envelope(row: asyncpg.Record, dispatch_id: int) -> dict[str, Any]:
    return {
        "v": MESSAGE_VERSION,
        "job_id": row["job_id"],
        "queue": row["queue"],
        "occurrence_key": row["occurrence_key"],
        "fire_at": row["fire_at"],
        "run_at": row["run_at"],
        "attempt": row["attempt"],
        "dispatch_id": dispatch_id,
        "max_attempts": row["max_attempts"],
        "timeout_s": row["timeout_ms"] / 1000,
        # The payload is already JSON text in Postgres; splice it in as it is.
        "payload": orjson.Fragment(row["payload"] or "null"),
    }


def _trace(row: asyncpg.Record) -> dict[str, str]:
    """W3C trace context of the span that enqueued the job: the handler's span continues it.
    A context that is not what the producer writes (too long, not an object of strings) is
    left out: the job runs untraced."""
    text = row["trace"]
    if not text or len(text) > MAX_TRACE_CHARS:
        return {}
    try:
        context = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {}
    if not isinstance(context, dict):
        return {}
    return {k: v for k, v in context.items() if k in TRACE_HEADERS and isinstance(v, str)}


def job_message(row: asyncpg.Record, dispatch_id: int) -> Outgoing:
    key = row["occurrence_key"]
    attempt = row["attempt"]
    headers = message_headers(row["job_id"], row["queue"], key, row["fire_at"], row["run_at"], attempt)
    headers.update(_trace(row))
    return Outgoing(routing_key=row["queue"], body=orjson.dumps(_envelope(row, dispatch_id)), message_id=f"{key}#{attempt}",
                    headers=headers)


def pack_message(rows: Sequence[asyncpg.Record], dispatch_id: int) -> Outgoing:
    """Many due jobs of one queue in one message (a packed queue): ``{"v": 1, "pack": [...]}``,
    each element a job message, with its trace context under ``trace``."""
    first, last = rows[0], rows[-1]
    body = orjson.dumps({"v": MESSAGE_VERSION, "pack": [{**_envelope(r, dispatch_id), "trace": _trace(r)} for r in rows]})
    headers = {
        **pack_headers(first["queue"], len(rows)),
        "x-chronoq-job-ids": f"{first['job_id']}..{last['job_id']}",
    }
    return Outgoing(routing_key=first["queue"], body=body,
                    message_id=f"pack:{first['occurrence_key']}#{first['attempt']}+{len(rows)}", headers=headers)


def build_messages(
    rows: list[asyncpg.Record], dispatch_id: int, packed: Collection[str], pack_size: int
) -> tuple[list[Outgoing], list[list[asyncpg.Record]], list[SetAside]]:
    """One message per job, except for packed queues: up to ``pack_size`` jobs of one queue
    per message. Returns the messages, for each the rows it carries, and the rows whose
    message could not be built (set aside)."""
    messages: list[Outgoing] = []
    carried: list[list[asyncpg.Record]] = []
    unbuilt: list[SetAside] = []
    by_queue: dict[str, list[asyncpg.Record]] = {}
    for r in rows:
        if r["queue"] in packed:
            by_queue.setdefault(r["queue"], []).append(r)
            continue
        try:
            messages.append(job_message(r, dispatch_id))
        except Exception as exc:  # this row's stored values, not the batch's
            unbuilt.append((r, "unpublishable", f"message not built: {type(exc).__name__}"))
            continue
        carried.append([r])
    for queue_rows in by_queue.values():
        for start in range(0, len(queue_rows), pack_size):
            chunk = queue_rows[start : start + pack_size]
            try:
                messages.append(pack_message(chunk, dispatch_id))
            except Exception as exc:  # as above; the pack's rows run alone next time
                unbuilt += [(r, "unpublishable", f"message not built: {type(exc).__name__}") for r in chunk]
                continue
            carried.append(chunk)
    return messages, carried, unbuilt


def lease(row: asyncpg.Record, redispatch_after: timedelta) -> timedelta:
    """How long a dispatched occurrence may stay without an outcome before it is re-published:
    the redelivery deadline plus the job's own timeout, so a slow but healthy run is not
    duplicated."""
    return redispatch_after + timedelta(milliseconds=row["timeout_ms"])
