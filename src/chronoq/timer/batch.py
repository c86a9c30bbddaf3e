"""One dispatch batch, in one transaction: claim the due rows, screen them, publish their messages
with confirms while the rows are marked dispatched, record what the batch decided, commit.

Any number of timers run at once; ``FOR UPDATE SKIP LOCKED`` gives each a disjoint batch and
Postgres's ``now()`` decides what is due, so there is no leader and no host clock involved.
A timer killed at any instruction before its commit leaves its rows locked only until its
connection dies; another timer then publishes them again and the workers' dedup absorbs the
duplicate.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import time
from dataclasses import dataclass, field

import asyncpg

from chronoq._broker.publisher import ConfirmedPublisher, Unpublishable
from chronoq._runtime.config import Settings
from chronoq._runtime.failpoints import armed, failpoint
from chronoq._runtime.hooks import Hooks
from chronoq._store import wheel
from chronoq._store.connection import Connection
from chronoq.timer import recording
from chronoq.timer.messages import build_messages, lease
from chronoq.timer.recording import Refused
from chronoq.timer.screening import Screened, SetAside, screen, unpublishable

log = logging.getLogger("chronoq.timer")

#: Longest wait for the broker's confirms of one batch; past it the batch rolls back and stays
#: due (a broker that is down or blocked on a memory alarm must not hold the rows forever).
PUBLISH_TIMEOUT = 30.0


@dataclass
class Results:
    """What became of a batch's screened rows."""

    sent: list[asyncpg.Record] = field(default_factory=list)
    refused: list[Refused] = field(default_factory=list)
    set_aside: list[SetAside] = field(default_factory=list)


@dataclass(frozen=True)
class Look:
    """What a claim saw of the wheel besides its rows, by the database's clock: enough to sleep
    until the next due row without asking again (timer/wakeups.py)."""

    db_now: float  # epoch seconds: when the claim's transaction began
    due_in: float | None  # seconds from db_now until the first free row due later; None: none
    others_due: bool  # rows due now that the claim did not get, or rows the batch wrote: ask again
    seen_at: float  # this host's monotonic time as the transaction began (just after)
    controls_due_in: float | None = None  # seconds until a limited queue may have work; None: none known


@dataclass
class Phases:
    """When each phase of a batch ended (``time.perf_counter``), for the debug log."""

    claim_started: float
    claimed: float = 0.0
    publish_started: float = 0.0
    confirmed: float = 0.0
    marked: float = 0.0
    written: float = 0.0
    committed: float = 0.0


class Batches:
    """Runs batches on one connection. After a batch failed for a reason that is not an outage,
    the dispatch loop sets ``one_at_a_time``: the next batches claim one row each, for as many
    rows as that batch had, so that the row that fails is found and held alone."""

    def __init__(self, pool: asyncpg.Pool, publisher: ConfirmedPublisher, settings: Settings, hooks: Hooks,
                 timer: str) -> None:
        self.pool = pool
        self.publisher = publisher
        self.settings = settings
        self.hooks = hooks
        self.timer = timer
        self.claimed_keys: list[str] = []  # of the last batch
        self.one_at_a_time = 0
        self.look: Look | None = None  # what the last batch's claim saw of the wheel, if it claimed any

    async def run_once(self, *, controls: bool = False) -> int:
        """Claim, screen, publish and record one batch in one transaction. Returns rows claimed.

        With ``controls``, the batch dispatches the due rows of limited queues, as many as their
        limits let through, for the queues no other timer's batch is dispatching: it holds their
        control rows until it commits. If there are none, or without ``controls``, it claims free
        rows; those of paused or limited queues are marked controlled, not published.

        A row that cannot be published (stored values outside the input contract, a message the
        broker can never take) is set aside, recorded dead with its reason, in the same
        transaction; the rest of the batch goes on. A row the broker refused for now (unroutable,
        nacked, a queue declared elsewhere with other arguments) stays due after a pause."""
        phases = Phases(claim_started=time.perf_counter())
        async with self.pool.acquire() as conn, conn.transaction():
            # The transaction's now() on this host's clock, taken once BEGIN has answered: never
            # before the database's, so a sleep planned from it never ends before the due time.
            began = time.monotonic()
            rows = await self._claim(conn, began, controls)
            claimed = len(rows)
            if any(r["control"] for r in rows):
                rows = await self._control(conn, rows)
            if any(r["kind"] is None for r in rows):
                rows = await recording.drop_orphans(conn, rows)
            if not rows:
                if not claimed:
                    self.one_at_a_time = 0  # nothing due: no row left to find the failing one among
                return claimed
            phases.claimed = time.perf_counter()
            screened = screen(rows)
            results = await self._publish(conn, screened, phases)
            await self._record(conn, screened, results)
            phases.written = time.perf_counter()
        if (screened.plans or results.refused) and self.look is not None:
            # The batch wrote rows the claim could not see (a schedule's next tick, extra runs,
            # rows put back): the wheel is asked again before the timer sleeps.
            self.look = dataclasses.replace(self.look, others_due=True)
        phases.committed = time.perf_counter()
        self._report(screened, results, phases.committed - phases.claimed)
        if self.one_at_a_time:
            self.one_at_a_time -= 1
        if log.isEnabledFor(logging.DEBUG):
            self._log_phases(claimed, screened.rows, results, phases)
        return claimed

    async def _claim(self, conn: Connection, began: float, controls: bool) -> list[asyncpg.Record]:
        limit = 1 if self.one_at_a_time else self.settings.claim_batch
        self.claimed_keys = []  # until the claim returns: a failure before it has no rows to blame
        self.look = None
        # While one row at a time is tried, a batch of a limited queue is one row of one queue.
        limited = await wheel.lock_controlled_queues(conn, 1 if self.one_at_a_time else None) if controls else []
        if limited:
            rows = await wheel.claim_limited(conn, limited, limit)
            if rows:  # free rows may be due meanwhile: the wheel is asked again before a sleep
                self.look = Look(rows[0]["db_epoch"], None, True, began, rows[0]["controls_due_in"])
        else:
            rows = await wheel.claim_due(conn, limit)
            if rows:
                self.look = Look(rows[0]["db_epoch"], rows[0]["next_due_in"], rows[0]["due_now"] > len(rows), began,
                                 rows[0]["controls_due_in"])
        self.claimed_keys = [r["occurrence_key"] for r in rows]
        if rows:
            failpoint("timer.after_claim")
        return rows

    async def _control(self, conn: Connection, rows: list[asyncpg.Record]) -> list[asyncpg.Record]:
        """Mark the rows of paused or limited queues controlled; the rest of the batch goes on."""
        controlled = [r for r in rows if r["control"]]
        await wheel.mark_controlled(conn, [r["occurrence_key"] for r in controlled])
        if type(self.hooks) is not Hooks:
            for r in controlled:
                self.hooks.deferred(r["queue"], r["control"])
        if self.look is not None:
            self.look = dataclasses.replace(self.look, others_due=True)  # their queues' claim comes next
        return [r for r in rows if not r["control"]]

    async def _publish(self, conn: Connection, screened: Screened, phases: Phases) -> Results:
        """Publish the rows' messages and wait for the broker's confirms, while the same rows
        are marked dispatched on the batch's connection."""
        phases.publish_started = time.perf_counter()
        dispatch_id = secrets.randbits(63)  # tells this batch's copies from any other
        messages, carried, unbuilt = build_messages(screened.to_publish, dispatch_id, self.settings.packed,
                                                    self.settings.pack_size)
        to_publish = [r for rows in carried for r in rows]
        publishing = asyncio.ensure_future(self.publisher.publish(messages))
        # The mark travels while the confirms do: it only commits after them, and a row the
        # broker refuses is put back (recording.postpone), so it takes no time on the batch's path.
        marking = asyncio.ensure_future(wheel.mark_dispatched(
            conn,
            [r["occurrence_key"] for r in to_publish],
            [lease(r, self.settings.redispatch_after) for r in to_publish],
            dispatch_id,
        ))
        try:
            if armed("timer.before_confirm"):
                # Die with the publishes in flight: some frames out, their confirms not awaited.
                await asyncio.wait({publishing}, timeout=0.001)
                failpoint("timer.before_confirm")
            failures = await asyncio.wait_for(publishing, PUBLISH_TIMEOUT)
            phases.confirmed = time.perf_counter()
        finally:
            # The connection must be idle again before the transaction commits or rolls back.
            # (gather also retrieves the mark's error when the publish failed first.)
            await asyncio.gather(marking, return_exceptions=True)
        marking.result()
        phases.marked = time.perf_counter()
        self.hooks.confirm_latency(phases.confirmed - phases.publish_started)
        failpoint("timer.after_confirm")
        results = Results(set_aside=[*screened.set_aside, *unbuilt])
        for rows, failure in zip(carried, failures, strict=True):
            if failure is None:
                results.sent += rows
            elif isinstance(failure, Unpublishable):
                results.set_aside += [(r, "unpublishable", str(failure)) for r in rows]
            else:
                results.refused += [(r, failure) for r in rows]
        return results

    async def _record(self, conn: Connection, screened: Screened, results: Results) -> None:
        """Write down the batch's decisions before it commits; a head set aside has no plan to
        apply (it left the wheel)."""
        if results.refused:
            await recording.postpone(conn, results.refused)
        if results.set_aside:
            await recording.set_aside(conn, results.set_aside)
        await recording.apply_plans(conn, [(row, plan) for row, plan in screened.plans
                                           if not _among(row, results.set_aside)])
        failpoint("timer.before_commit")

    def _report(self, screened: Screened, results: Results, seconds: float) -> None:
        hooks = self.hooks
        if type(hooks) is Hooks:
            return  # nobody is observing: no per-row work on the claim path
        hooks.batch_claimed(len(screened.rows), seconds)
        for r in results.sent:
            hooks.dispatched(r["queue"], (r["db_now"] - r["run_at"]).total_seconds())
        for r, _ in results.refused:
            hooks.publish_refused(r["queue"])
        for r, reason, _ in results.set_aside:
            hooks.set_aside(r["queue"] if not unpublishable(r) else "-", reason)
        for row, plan in screened.plans:
            for skip in plan.skipped:
                hooks.tick_skipped(row["queue"], skip.reason)

    def _log_phases(self, claimed: int, rows: list[asyncpg.Record], results: Results, phases: Phases) -> None:
        """The phases of the batch: every job in it waits for all of them (the worker's fence
        waits for this commit), so this is where lateness below saturation goes."""
        log.debug(
            "dispatched batch",
            extra={
                "action": "batch_dispatched",
                "timer": self.timer,
                "claimed": claimed,
                "published": len(results.sent),
                "refused": len(results.refused),
                "set_aside": len(results.set_aside),
                # From the earliest row's run time to the claim's transaction start.
                "wake_ms": round((rows[0]["db_now"] - min(r["run_at"] for r in rows)).total_seconds() * 1000, 2)
                if rows else None,
                "claim_ms": round((phases.claimed - phases.claim_started) * 1000, 2),
                "confirm_ms": round((phases.confirmed - phases.publish_started) * 1000, 2),
                "mark_wait_ms": round((phases.marked - phases.confirmed) * 1000, 2),  # the mark outlasting the confirms
                "apply_ms": round((phases.written - phases.marked) * 1000, 2),
                "commit_ms": round((phases.committed - phases.written) * 1000, 2),
            },
        )


def _among(row: asyncpg.Record, items: list[SetAside]) -> bool:
    return any(r is row for r, _, _ in items)
