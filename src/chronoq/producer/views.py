"""Read models from rows: a JobView from the job row, its live occurrences, results and attempts;
the tick ledger; job listings."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime

from chronoq._store import reads, schedules
from chronoq._store.connection import Connection
from chronoq.schemas.views import AttemptView, JobSummary, JobView, OccurrenceView, TickView


async def load_job(conn: Connection, job_id: int) -> JobView | None:
    # One snapshot for all four reads, so an occurrence cannot appear both live and finished.
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        job = await reads.job(conn, job_id)
        if job is None:
            return None
        live = await reads.live_occurrences(conn, job_id)
        finished = await reads.results(conn, job_id)
        failed = await reads.attempts(conn, job_id)

    attempts: dict[str, list[AttemptView]] = defaultdict(list)
    for a in failed:
        attempts[a["occurrence_key"]].append(
            AttemptView(
                attempt=a["attempt"], outcome=a["outcome"], error=a["error"],
                started_at=a["started_at"], finished_at=a["finished_at"], worker=a["worker"],
            )
        )
    occurrences = []
    for r in finished:
        history = list(attempts.get(r["occurrence_key"], []))
        if r["state"] == "succeeded":
            history.append(
                AttemptView(
                    attempt=r["attempt"], outcome="succeeded", started_at=r["started_at"],
                    finished_at=r["finished_at"], worker=r["worker"],
                )
            )
        occurrences.append(
            OccurrenceView(
                occurrence_key=r["occurrence_key"], fire_at=r["fire_at"], state=r["state"],
                attempt=r["attempt"], run_at=r["run_at"], reason=r["reason"], error=r["error"],
                result=r["result"], started_at=r["started_at"], finished_at=r["finished_at"],
                attempts=history, manual=r["manual"],
            )
        )
    for w in live:
        if w["dispatched_at"] is not None and not w["is_due"]:
            state = "dispatched"
        elif w["control"] is not None:
            state = "deferred"
        elif w["attempt"] > 1:
            state = "retrying"
        else:
            state = "scheduled"
        occurrences.append(
            OccurrenceView(
                occurrence_key=w["occurrence_key"], fire_at=w["fire_at"], state=state,
                attempt=w["attempt"], run_at=w["run_at"], dispatches=w["dispatches"],
                reason=w["control"], error=w["last_error"], attempts=attempts.get(w["occurrence_key"], []),
                manual=w["manual"],
            )
        )
    occurrences.sort(key=lambda o: o.fire_at)
    return JobView(
        id=job["id"], queue=job["queue"], kind=job["kind"], state=_job_state(job["kind"], job["state"], occurrences),
        cron=job["cron"], timezone=job["timezone"], misfire=job["misfire"], overlap=job["overlap"],
        jitter_s=job["cron_jitter_ms"] / 1000,
        key=job["key"], payload=job["payload"], max_attempts=job["max_attempts"],
        timeout_s=job["timeout_ms"] / 1000, created_at=job["created_at"], occurrences=occurrences,
    )


def _job_state(kind: str, stored: str, occurrences: list[OccurrenceView]) -> str:
    """A one-shot job's state is its occurrence's; a recurring job's is the job row's
    (active, paused, cancelled), as is any paused or cancelled job's."""
    if kind == "cron" or stored != "active" or not occurrences:
        return stored
    return occurrences[-1].state


async def load_ticks(conn: Connection, job_id: int, since: datetime | None, limit: int) -> list[TickView]:
    rows = await schedules.ticks(conn, job_id, since or datetime.min.replace(tzinfo=UTC), limit)
    return [TickView(**dict(r)) for r in rows]


async def load_summaries(conn: Connection, queue: str | None, state: str | None, limit: int) -> list[JobSummary]:
    return [JobSummary(**dict(r)) for r in await schedules.list_jobs(conn, queue, state, limit)]
