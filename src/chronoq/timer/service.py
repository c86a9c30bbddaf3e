"""The timer: claim due rows, publish them with confirms, mark them dispatched, in one
transaction per batch; sleep until the next due time or a NOTIFY.

Any number of timers run at once; ``FOR UPDATE SKIP LOCKED`` gives each a disjoint batch and
Postgres's ``now()`` decides what is due, so there is no leader and no host clock involved.
A timer killed at any instruction before its commit leaves its rows locked only until its
connection dies; another timer then publishes them again and the workers' dedup absorbs the
duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import secrets
import socket
import time
from datetime import datetime, timedelta

import asyncpg

from chronoq._broker.connection import BROKER_ERRORS, BrokerConnection
from chronoq._broker.connection import connect as connect_broker
from chronoq._broker.consumer import SubmissionIntake
from chronoq._broker.publisher import ConfirmedPublisher, Outgoing, Unpublishable
from chronoq._broker.topology import Topology
from chronoq._runtime.availability import unavailable
from chronoq._runtime.config import Settings
from chronoq._runtime.failpoints import armed, failpoint
from chronoq._runtime.hooks import Hooks
from chronoq._runtime.service import start_or_close
from chronoq._store import maintenance, wheel
from chronoq._store.connection import CONNECTION_ERRORS, Connection, connect, create_pool
from chronoq._store.wheel import INFINITY
from chronoq.schemas.rules import short
from chronoq.timer.ingest import Ingest
from chronoq.timer.messages import job_message, lease, pack_message
from chronoq.timer.screening import unpublishable
from chronoq.timer.ticks import Plan, plan_head

log = logging.getLogger("chronoq.timer")

NOTIFY_CHANNEL = "chronoq_due"
#: Pause before retrying a row the broker refused (unroutable or nacked).
UNPUBLISHED_PAUSE = timedelta(seconds=2)
#: Pause after the database or broker failed, before trying again.
FAILURE_PAUSE = 1.0
#: Longest wait for the broker's confirms of one batch; past it the batch rolls back and stays
#: due (a broker that is down or blocked on a memory alarm must not hold the rows forever).
PUBLISH_TIMEOUT = 30.0
#: How often a timer prunes history older than the retention period, and rows per batch.
PRUNE_INTERVAL = 60.0
PRUNE_BATCH = 10_000
#: Submissions from other languages being stored at once, per timer.
SUBMISSION_PREFETCH = 20
#: Longest wait for the submissions consumer to subscribe, before the timer goes on without it
#: (and keeps trying in the background).
INTAKE_START_TIMEOUT = 10.0
#: Pause when due rows exist but are all locked by other timers' batches.
LOCKED_ROWS_PAUSE = 0.05
#: Seconds between counts of the due backlog (the chronoq_due_backlog gauge): see next_due.
BACKLOG_INTERVAL = 1.0
#: How long a row whose one-row batch failed for an unknown reason waits before it is tried
#: again, out of the way of every other row.
HOLD_PAUSE = timedelta(seconds=30)
#: Set-aside rows logged per batch (all are recorded in Postgres).
SET_ASIDE_LOGGED = 10

# A claimed row set aside as dead: (row, reason, detail).
SetAside = tuple[asyncpg.Record, str, str]
#: Rows the broker refused, with its error.
Refused = tuple[asyncpg.Record, BaseException]
#: What keeps the submission intake from starting; the timer dispatches meanwhile.
_INTAKE_START_ERRORS: tuple[type[BaseException], ...] = (*BROKER_ERRORS, TimeoutError)


class Timer:
    def __init__(self, settings: Settings, *, name: str | None = None, hooks: Hooks | None = None) -> None:
        self.settings = settings
        self.hooks = hooks or Hooks()
        self.name = name or f"timer@{socket.gethostname()}:{os.getpid()}"
        self.topology = Topology(settings.namespace, settings.queue_type, settings.delivery_limit)
        self._pool: asyncpg.Pool | None = None
        self._dispatch_pool: asyncpg.Pool | None = None
        self._listener: asyncpg.Connection | None = None
        self._broker: BrokerConnection | None = None
        self._publisher: ConfirmedPublisher | None = None
        self._intake: SubmissionIntake | None = None
        self._intake_retry: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self.ready = asyncio.Event()  # set once connected and listening
        # Host monotonic time at which the timer plans to look again; a NOTIFY for an earlier
        # due time wakes it sooner. `_clock_offset` maps database epoch to host monotonic time.
        self._planned_wake = 0.0
        self._clock_offset = 0.0
        self._claimed_nothing_while_due = False
        self._backlog_due = 0.0  # host monotonic time of the next backlog count
        # After a batch failed for a reason that is not an outage, the timer claims one row at a
        # time for as many rows as that batch had, so the row that fails is found and held alone.
        self._claimed_keys: list[str] = []
        self._one_at_a_time = 0

    async def start(self) -> None:
        # Only the timer's own statements run on its sessions: no reset on release (OwnSession).
        self._pool = await create_pool(self.settings.database_url, min_size=1, max_size=3, application_name=self.name,
                                       own_sessions=True)
        # The batches commit without waiting for the WAL flush (about half a millisecond here,
        # on every job's way to its worker). A commit lost in a Postgres crash undoes the batch
        # as a timer crash before its commit does: its rows are due again, published again, and
        # the workers' dedup absorbs the copies. Nothing committed later can survive without it:
        # WAL is flushed in order, and a worker's outcome for one of these jobs comes after it
        # (the worker's lock waits for this commit).
        self._dispatch_pool = await create_pool(
            self.settings.database_url, min_size=1, max_size=1, application_name=f"{self.name}-dispatch",
            synchronous_commit=False, own_sessions=True,
        )
        async with self._pool.acquire() as conn:
            if not await maintenance.autovacuum_enabled(conn):
                # Every dispatch and outcome leaves a dead row in the wheel; without vacuum they
                # pile up in front of the due_at index and every claim slows down.
                log.warning("autovacuum is off on this server: vacuum chronoq.wheel regularly",
                            extra={"action": "autovacuum_off"})
        self._broker = await connect_broker(self.settings.amqp_url, name=self.name)
        self._publisher = ConfirmedPublisher(self._broker, self.topology)
        self._intake = SubmissionIntake(self._broker, self.topology)
        if not await self._start_intake():
            # The wheel does not wait for the submissions consumer: after a broker kill, the
            # consumer's queue could refuse it for minutes while every job queue worked, and a
            # timer that exited over it and was restarted, again and again, would dispatch nothing.
            # Submissions wait in their queue until the consumer is back.
            self._intake_retry = asyncio.create_task(self._retry_intake(), name="intake")
        await self._listen()

    async def _start_intake(self) -> bool:
        """Subscribe to the submissions queue; False (logged) if the broker would not let us."""
        assert self._intake is not None and self._pool is not None and self._publisher is not None
        handle = Ingest(self._pool, self._publisher, self.topology).handle
        try:
            await asyncio.wait_for(self._intake.start(SUBMISSION_PREFETCH, handle), INTAKE_START_TIMEOUT)
            return True
        except _INTAKE_START_ERRORS as exc:
            log.warning("submission intake unavailable; the timer dispatches meanwhile",
                        extra={"action": "intake_unavailable", "error": f"{type(exc).__name__}: {exc}"[:300]})
            await self._intake.close()
            return False

    async def _retry_intake(self) -> None:
        while not self._stopping.is_set():
            await self._pause(FAILURE_PAUSE)
            if not self._stopping.is_set() and await self._start_intake():
                log.info("submission intake started", extra={"action": "intake_started", "timer": self.name})
                return

    async def _listen(self) -> None:
        try:
            self._listener = await connect(self.settings.database_url, application_name=f"{self.name}-listen")
            await self._listener.add_listener(NOTIFY_CHANNEL, self._on_notify)
        except Exception:  # the timer still works without NOTIFY, only with max-idle lateness
            log.warning("notify listener unavailable", extra={"action": "timer_listen_failed"}, exc_info=True)
            self._listener = None

    def _on_notify(self, _conn: Connection, _pid: int, _channel: str, payload: object) -> None:
        try:
            due_host = int(str(payload)) / 1000 - self._clock_offset
        except ValueError:
            return
        if due_host < self._planned_wake:
            self._wake.set()

    async def close(self) -> None:
        if self._intake_retry is not None:
            self._intake_retry.cancel()
            await asyncio.gather(self._intake_retry, return_exceptions=True)
            self._intake_retry = None
        if self._intake is not None:
            await self._intake.close()
            self._intake = None
        if self._listener is not None:
            await self._listener.close()
            self._listener = None
        if self._publisher is not None:
            await self._publisher.close()
        if self._broker is not None:
            await self._broker.close()
            self._broker = None
        for pool in (self._dispatch_pool, self._pool):
            if pool is not None:
                await pool.close()
        self._dispatch_pool = self._pool = None

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def run_once(self) -> int:
        """Claim, judge, publish and mark one batch in one transaction. Returns rows handled.

        A row that cannot be published (stored values outside the input contract, a message the
        broker can never take) is set aside, recorded dead with its reason, in the same
        transaction; the rest of the batch goes on. A row the broker refused for now (unroutable,
        nacked, a queue declared elsewhere with other arguments) stays due after a pause."""
        assert self._dispatch_pool is not None and self._publisher is not None, "call start() first"
        claim_started = time.perf_counter()
        limit = 1 if self._one_at_a_time else self.settings.claim_batch
        async with self._dispatch_pool.acquire() as conn, conn.transaction():
            rows = await wheel.claim_due(conn, limit)
            self._claimed_keys = [r["occurrence_key"] for r in rows]
            if not rows:
                return 0
            failpoint("timer.after_claim")
            claimed = len(rows)
            if any(r["kind"] is None for r in rows):
                rows = await self._drop_orphans(conn, rows)
                if not rows:
                    return claimed
            started = time.perf_counter()
            set_aside: list[SetAside] = []
            screened = []
            for row in rows:
                problem = unpublishable(row)
                if problem is None:
                    screened.append(row)
                else:
                    set_aside.append((row, "unpublishable", problem))
            rows = screened
            to_publish = [r for r in rows if not r["head"]]
            plans: list[tuple[asyncpg.Record, Plan]] = []
            for row in (r for r in rows if r["head"]):
                try:
                    plan = plan_head(row)
                except Exception as exc:  # a stored schedule that cannot be judged
                    set_aside.append((row, "invalid_schedule", f"{type(exc).__name__}: {exc}"))
                    continue
                plans.append((row, plan))
                if plan.publish:
                    to_publish.append(row)
            publish_started = time.perf_counter()
            dispatch_id = secrets.randbits(63)  # tells this batch's copies from any other
            messages, carried, unbuilt = self._messages(to_publish, dispatch_id)
            set_aside += unbuilt
            to_publish = [r for rows_ in carried for r in rows_]
            publishing = asyncio.ensure_future(self._publisher.publish(messages))
            # The mark travels while the confirms do: it only commits after them, and a row the
            # broker refuses is put back below, so it takes no time on the batch's path.
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
                confirmed = time.perf_counter()
            finally:
                # The connection must be idle again before the transaction commits or rolls back.
                # (gather also retrieves the mark's error when the publish failed first.)
                await asyncio.gather(marking, return_exceptions=True)
            marking.result()
            marked = time.perf_counter()
            self.hooks.confirm_latency(confirmed - publish_started)
            failpoint("timer.after_confirm")
            sent: list[asyncpg.Record] = []
            refused: list[Refused] = []
            for rows_, failure in zip(carried, failures, strict=True):
                if failure is None:
                    sent += rows_
                elif isinstance(failure, Unpublishable):
                    set_aside += [(r, "unpublishable", str(failure)) for r in rows_]
                else:
                    refused += [(r, failure) for r in rows_]
            if refused:
                await self._postpone(conn, refused)
            if set_aside:
                await self._set_aside(conn, set_aside)
            await self._apply(conn, [(row, plan) for row, plan in plans if not _among(row, set_aside)])
            failpoint("timer.before_commit")
            written = time.perf_counter()
        committed = time.perf_counter()
        self._report(rows, sent, refused, plans, set_aside, committed - started)
        if self._one_at_a_time:
            self._one_at_a_time -= 1
        if log.isEnabledFor(logging.DEBUG):
            # The phases of the batch: every job in it waits for all of them (the worker's
            # fence waits for this commit), so this is where lateness below saturation goes.
            log.debug(
                "dispatched batch",
                extra={
                    "action": "batch_dispatched",
                    "timer": self.name,
                    "claimed": claimed,
                    "published": len(sent),
                    "refused": len(refused),
                    "set_aside": len(set_aside),
                    # From the earliest row's run time to the claim's transaction start.
                    "wake_ms": round((rows[0]["db_now"] - min(r["run_at"] for r in rows)).total_seconds() * 1000, 2)
                    if rows else None,
                    "claim_ms": round((started - claim_started) * 1000, 2),
                    "confirm_ms": round((confirmed - publish_started) * 1000, 2),
                    "mark_wait_ms": round((marked - confirmed) * 1000, 2),  # the mark outlasting the confirms
                    "apply_ms": round((written - marked) * 1000, 2),
                    "commit_ms": round((committed - written) * 1000, 2),
                },
            )
        return claimed

    async def _drop_orphans(self, conn: Connection, rows: list[asyncpg.Record]) -> list[asyncpg.Record]:
        """Occurrences whose job no longer exists (deleted by hand): nothing to run, nowhere to
        record an outcome. They leave the wheel in this batch's transaction; returns the rest."""
        orphans = [r for r in rows if r["kind"] is None]
        await wheel.drop(conn, [r["occurrence_key"] for r in orphans])  # one statement for all
        for r in orphans:
            log.warning("dropped an occurrence whose job no longer exists",
                        extra={"action": "orphan_dropped", "job_id": r["job_id"], "occurrence": r["occurrence_key"]})
        return [r for r in rows if r["kind"] is not None]

    def _messages(
        self, rows: list[asyncpg.Record], dispatch_id: int
    ) -> tuple[list[Outgoing], list[list[asyncpg.Record]], list[SetAside]]:
        """One message per job, except for packed queues: up to ``pack_size`` jobs of one queue
        per message. Returns the messages, for each the rows it carries, and the rows whose
        message could not be built (set aside)."""
        packed = self.settings.packed
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
        size = self.settings.pack_size
        for queue_rows in by_queue.values():
            for start in range(0, len(queue_rows), size):
                chunk = queue_rows[start : start + size]
                try:
                    messages.append(pack_message(chunk, dispatch_id))
                except Exception as exc:  # as above; the pack's rows run alone next time
                    unbuilt += [(r, "unpublishable", f"message not built: {type(exc).__name__}") for r in chunk]
                    continue
                carried.append(chunk)
        return messages, carried, unbuilt

    def _report(self, rows: list[asyncpg.Record], sent: list[asyncpg.Record], refused: list[Refused],
                plans: list[tuple[asyncpg.Record, Plan]], set_aside: list[SetAside], seconds: float) -> None:
        hooks = self.hooks
        if type(hooks) is Hooks:
            return  # nobody is observing: no per-row work on the claim path
        hooks.batch_claimed(len(rows), seconds)
        for r in sent:
            hooks.dispatched(r["queue"], (r["db_now"] - r["run_at"]).total_seconds())
        for r, _ in refused:
            hooks.publish_refused(r["queue"])
        for r, reason, _ in set_aside:
            hooks.set_aside(r["queue"] if not unpublishable(r) else "-", reason)
        for row, plan in plans:
            for skip in plan.skipped:
                hooks.tick_skipped(row["queue"], skip.reason)

    async def _apply(self, conn: Connection, plans: list[tuple[asyncpg.Record, Plan]]) -> None:
        """Write down what judging the head rows decided: skipped ticks, extra runs, next heads.
        Runs after the published heads stopped being heads, so the one-head-per-job index holds."""
        unrun: list[tuple[int, str, datetime, str, str, str | None]] = []
        drop: list[str] = []
        park: list[str] = []
        add: list[tuple[int, str, datetime, datetime, datetime, bool, int]] = []
        for row, plan in plans:
            job_id, queue, now = row["job_id"], row["queue"], row["db_now"]
            if plan.park:
                park.append(row["occurrence_key"])
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
                due = INFINITY if plan.next_head_parked else plan.next_head
                add.append((job_id, queue, plan.next_head, plan.next_head, due, True, plan.backfilled))
            for s in plan.skipped[:3]:
                log.info("tick skipped", extra={"action": "tick_skipped", "job_id": job_id, "queue": queue,
                                                "occurrence": s.fire_at.isoformat(), "reason": s.reason,
                                                "skipped_in_batch": len(plan.skipped)})
        await wheel.drop(conn, drop)
        await wheel.park(conn, park)
        await wheel.record_unrun(conn, unrun)
        await wheel.add(conn, add)

    async def _set_aside(self, conn: Connection, items: list[SetAside]) -> None:
        """Rows that can never be dispatched leave the wheel, each recorded dead with its reason
        (``jobs show`` and ``status`` show them), instead of being retried forever in front of
        every other row."""
        for row, reason, detail in items[:SET_ASIDE_LOGGED]:
            log.error("occurrence set aside: it cannot be dispatched", extra={
                "action": "occurrence_set_aside", "job_id": row["job_id"], "queue": short(row["queue"]),
                "occurrence": short(row["occurrence_key"]), "reason": reason, "error": detail[:300]})
        await wheel.drop(conn, [r["occurrence_key"] for r, _, _ in items])
        await wheel.record_set_aside(conn, [(r, reason, detail[:500]) for r, reason, detail in items])

    async def _postpone(self, conn: Connection, refused: list[Refused]) -> None:
        first_error = f"{type(refused[0][1]).__name__}: {refused[0][1]}"[:500]
        for row, failure in refused[:10]:
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

    async def prune_once(self) -> dict[str, int] | None:
        """Delete one batch of expired history per table. None: another timer holds the turn."""
        assert self._pool is not None
        async with self._pool.acquire() as conn:
            counts = await wheel.prune(conn, self.settings.retention, PRUNE_BATCH)
        if counts and any(counts.values()):
            log.info("pruned history", extra={"action": "history_pruned", **counts})
        return counts

    async def _prune_forever(self) -> None:
        """Side task: prune in batches, with a pause between rounds, until stopped. Errors are
        logged and retried next round; pruning never stops dispatching."""
        while not self._stopping.is_set():
            try:
                counts = await self.prune_once()
                busy = counts is not None and any(n >= PRUNE_BATCH for n in counts.values())
            except Exception as exc:  # next round tries again
                log.warning("pruning failed", extra={"action": "prune_failed", "error": type(exc).__name__})
                busy = False
            await self._pause(0.1 if busy else PRUNE_INTERVAL)

    async def _sleep_until_due(self, claimed_nothing: bool) -> None:
        assert self._pool is not None
        # Until the new wake time is known, any NOTIFY must wake us: clear first, never after.
        self._planned_wake = math.inf
        self._wake.clear()
        count_backlog = time.monotonic() >= self._backlog_due
        async with self._pool.acquire() as conn:
            db_now, due_in, backlog = await wheel.next_due(conn, count_backlog=count_backlog)
        host_now = time.monotonic()
        if backlog is not None:
            self.hooks.due_backlog(backlog)
            self._backlog_due = host_now + BACKLOG_INTERVAL
        self._clock_offset = db_now - host_now
        wait = self.settings.timer_max_idle.total_seconds()
        if due_in is not None:
            wait = min(max(due_in, 0.0), wait)
            if claimed_nothing and due_in <= 0:
                # Due rows that the claim did not get: either one just became due (claim again
                # at once) or, if that happens twice running, another timer holds them mid-batch
                # (pause instead of spinning on them).
                wait = LOCKED_ROWS_PAUSE if self._claimed_nothing_while_due else 0.0
                self._claimed_nothing_while_due = True
            else:
                self._claimed_nothing_while_due = False
        self._planned_wake = host_now + wait
        if wait <= 0 or self._wake.is_set() or self._stopping.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=wait)

    async def run(self) -> None:
        """Start, turn the wheel until stop(), close. A batch in progress always finishes."""
        await start_or_close(self.start, self.close, log, unavailable=(*CONNECTION_ERRORS, *BROKER_ERRORS))
        self.ready.set()
        log.info("timer started", extra={"action": "timer_started", "timer": self.name})
        pruner = asyncio.create_task(self._prune_forever(), name="pruner")
        try:
            while not self._stopping.is_set():
                if not await self._broker_reachable():
                    break
                try:
                    handled = await self.run_once()
                    if handled < self.settings.claim_batch and not self._one_at_a_time \
                            and not self._stopping.is_set():
                        await self._sleep_until_due(claimed_nothing=handled == 0)
                except Exception as exc:  # a timer must outlive anything one batch can throw
                    if unavailable(exc):
                        await self._recover(exc, expected=True)
                    else:
                        await self._isolate(exc)
        finally:
            pruner.cancel()
            await asyncio.gather(pruner, return_exceptions=True)
            await self.close()
            log.info("timer stopped", extra={"action": "timer_stopped", "timer": self.name})

    async def _isolate(self, exc: Exception) -> None:
        """A batch failed, and not because a service is unavailable: something in one of its rows
        breaks it. Its rows are due again (the batch rolled back); claim them one at a time, and
        hold the one whose own batch fails, so that no single row stops the others."""
        keys = self._claimed_keys
        if len(keys) == 1:
            log.error("dispatch of one occurrence failed; it is held and tried again later",
                      extra={"action": "occurrence_held", "occurrence": short(keys[0]),
                             "error": type(exc).__name__, "pause_s": HOLD_PAUSE.total_seconds()}, exc_info=exc)
            assert self._pool is not None
            try:
                async with self._pool.acquire() as conn:
                    await wheel.hold(conn, keys[0], HOLD_PAUSE, f"dispatch failed: {type(exc).__name__}: {exc}"[:500])
            except Exception as hold_failed:  # the next round finds it again
                await self._recover(hold_failed, expected=unavailable(hold_failed))
            return
        log.error("dispatch failed; claiming one row at a time to find the cause",
                  extra={"action": "timer_isolating", "rows": len(keys), "error": type(exc).__name__}, exc_info=exc)
        self._one_at_a_time = max(len(keys), 1)

    async def _broker_reachable(self) -> bool:
        """Wait, claiming nothing, while the broker connection is down; False if stopped first.
        A claimed batch would wait for a publish that cannot happen with its rows locked, out of
        reach of the timers that can still publish, and would delay a SIGTERM by its timeout."""
        assert self._broker is not None, "call start() first"
        if self._broker.connected.is_set():
            return True
        log.warning("waiting for the broker", extra={"action": "timer_waiting_for_broker", "timer": self.name})
        back = asyncio.ensure_future(self._broker.connected.wait())
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({back, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in (back, stopping):
                waiter.cancel()
        return not self._stopping.is_set()  # the connection logs its own restoration

    async def _recover(self, exc: Exception, *, expected: bool) -> None:
        """The batch rolled back and its rows stay due; wait a moment and carry on."""
        log.log(
            logging.WARNING if expected else logging.ERROR,
            "dispatch failed; retrying",
            extra={"action": "timer_retry", "error": f"{type(exc).__name__}: {exc}"[:300]},
            exc_info=not expected,
        )
        await self._pause(FAILURE_PAUSE)
        if self._listener is None or self._listener.is_closed():
            await self._listen()

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)


def _among(row: asyncpg.Record, items: list[SetAside]) -> bool:
    return any(r is row for r, _, _ in items)
