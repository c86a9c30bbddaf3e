"""Recording a batch's decisions in the wheel, inside the batch's transaction: rows that leave it
(orphans, rows set aside as dead), rows the broker refused for now, and what judging the head rows
decided (skipped ticks, extra runs, next heads)."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import asyncpg

from chronoq import lifecycle
from chronoq._store import wheel
from chronoq._store.connection import Connection
from chronoq.schemas.rules import short
from chronoq.timer.screening import SetAside
from chronoq.timer.ticks import Plan

log = logging.getLogger("chronoq.timer")

#: Pause before retrying a row the broker refused (unroutable or nacked).
UNPUBLISHED_PAUSE = timedelta(seconds=2)
#: Set-aside rows logged per batch (all are recorded in Postgres).
SET_ASIDE_LOGGED = 10
#: Refused rows logged per batch (all are postponed).
REFUSED_LOGGED = 10

#: How often a trailing run waiting for its job's earlier run looks again: a tenth of how long it
#: has been due, within these bounds (soon after a short run ends, rarely during a long one).
WAIT_POLL_MIN = timedelta(milliseconds=200)
WAIT_POLL_MAX = timedelta(seconds=5)

#: Rows the broker refused, with its error.
Refused = tuple[asyncpg.Record, BaseException]


async def drop_orphans(conn: Connection, rows: list[asyncpg.Record]) -> list[asyncpg.Record]:
    """Occurrences whose job no longer exists (deleted by hand): nothing to run, nowhere to
    record an outcome. They leave the wheel in this batch's transaction; returns the rest."""
    orphans = [r for r in rows if r["kind"] is None]
    await wheel.drop(conn, [r["occurrence_key"] for r in orphans])  # one statement for all
    for r in orphans:
        log.warning("dropped an occurrence whose job no longer exists",
                    extra={"action": "orphan_dropped", "job_id": r["job_id"], "occurrence": r["occurrence_key"]})
    return [r for r in rows if r["kind"] is not None]


async def set_aside(conn: Connection, items: list[SetAside]) -> None:
    """Rows that can never be dispatched leave the wheel, each recorded dead with its reason
    (``jobs show`` and ``status`` show them), instead of being retried forever in front of
    every other row."""
    for row, reason, detail in items[:SET_ASIDE_LOGGED]:
        log.error("occurrence set aside: it cannot be dispatched", extra={
            "action": "occurrence_set_aside", "job_id": row["job_id"], "queue": short(row["queue"]),
            "occurrence": short(row["occurrence_key"]), "reason": reason, "error": detail[:300]})
    await wheel.drop(conn, [r["occurrence_key"] for r, _, _ in items])
    await wheel.record_set_aside(conn, [(r, reason, detail[:500]) for r, reason, detail in items])


async def postpone(conn: Connection, refused: list[Refused]) -> None:
    """Rows the broker refused for now stay due, after a pause."""
    first_error = f"{type(refused[0][1]).__name__}: {refused[0][1]}"[:500]
    for row, failure in refused[:REFUSED_LOGGED]:
        log.warning(
            "broker refused message",
            extra={
                "action": "publish_refused",
                "occurrence": row["occurrence_key"],
                "queue": row["queue"],
                "error": type(failure).__name__,
            },
        )
    await wheel.postpone(conn, [r for r, _ in refused], UNPUBLISHED_PAUSE, first_error)


async def apply_plans(conn: Connection, plans: list[tuple[asyncpg.Record, Plan]]) -> None:
    """Write down what judging the head rows decided: skipped ticks, extra runs, next heads.
    Runs after the published heads stopped being heads, so the one-head-per-job index holds."""
    unrun: list[tuple[int, str, datetime, str, str, str | None]] = []
    drop: list[str] = []
    park: list[str] = []
    wait: list[str] = []
    add: list[tuple[int, str, datetime, datetime, datetime, bool, int]] = []
    for row, plan in plans:
        job_id, queue, now = row["job_id"], row["queue"], row["db_now"]
        if plan.park:
            park.append(row["occurrence_key"])
            continue
        if plan.wait:
            wait.append(row["occurrence_key"])
            continue
        if plan.cancelled:
            drop.append(row["occurrence_key"])
            unrun.append((job_id, queue, row["fire_at"], "cancelled", "cancelled by request", None))
            continue
        if not plan.publish:
            drop.append(row["occurrence_key"])
        unrun += [(job_id, queue, s.fire_at, "skipped", s.reason, s.detail) for s in plan.skipped]
        add += [(job_id, queue, t, now, now, False, 0) for t in plan.extra_runs]
        if plan.next_head is not None:
            run_at = plan.next_head_run_at or plan.next_head
            due = lifecycle.head_due(run_at, paused=plan.next_head_parked)
            add.append((job_id, queue, plan.next_head, run_at, due, True, plan.backfilled))
        for s in plan.skipped[:3]:
            log.info("tick skipped", extra={"action": "tick_skipped", "job_id": job_id, "queue": queue,
                                            "occurrence": s.fire_at.isoformat(), "reason": s.reason,
                                            "skipped_in_batch": len(plan.skipped)})
    await wheel.drop(conn, drop)
    await wheel.park(conn, park)
    await wheel.defer(conn, wait, WAIT_POLL_MIN, WAIT_POLL_MAX)
    await wheel.record_unrun(conn, unrun)
    await wheel.add(conn, add)
