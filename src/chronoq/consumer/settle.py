"""From a lane's deliveries to their settlement: parse each once, run the jobs, decide every
delivery's outcome, and tell the broker, in one place.

A failure outside the handlers decides the outcome of a whole group:

- a service is unavailable (Postgres, RabbitMQ): nothing was recorded, the deliveries go back to
  the queue after a pause, so that an outage does not become a hot redelivery loop;
- Postgres refused the group's commit for what a handler wrote (``CommitRefused``): the jobs
  run again one by one, and only the one that fails alone is recorded dead as unprocessable
  and dead-lettered;
- anything else is chronoq's fault, never the job's: logged as an error (ids, no payload) and
  the deliveries go back to the queue after the same pause; no occurrence ends dead for it.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections import Counter
from collections.abc import Sequence

import asyncpg

from chronoq._broker.consumer import Incoming
from chronoq._runtime.availability import unavailable
from chronoq._runtime.failpoints import failpoint
from chronoq._runtime.hooks import Hooks
from chronoq.consumer import failures
from chronoq.consumer.acks import ChannelAcks
from chronoq.consumer.delivery import Deliveries, Job, Parsed, Rejected
from chronoq.consumer.group import CommitRefused, GroupExecutor
from chronoq.consumer.handler_times import HandlerTimes
from chronoq.consumer.outcome import Outcome, Settlement, Verdict, pack_settlement
from chronoq.schemas.message import PACK_HEADER

log = logging.getLogger("chronoq.worker")

#: Pause before deliveries that could not be recorded are handed back to the broker, so that
#: an outage (or a fault of chronoq's) does not turn into a hot redelivery loop.
UNAVAILABLE_PAUSE = 1.0
#: Occurrence keys a log line names at most.
_KEYS_SHOWN = 20


#: A delivery's settlement, and each job it carried (a pack carries many) with its verdict.
Decided = tuple[Incoming, Settlement, list[tuple[Parsed, Verdict]]]


def _verdict(parsed: Parsed, verdicts: dict[Job, Verdict]) -> Verdict:
    return verdicts[parsed] if isinstance(parsed, Job) else Verdict(Outcome.REJECTED)


def _single(message: Incoming, parsed: Parsed, verdict: Verdict) -> Decided:
    return message, verdict.outcome.settlement, [(parsed, verdict)]


class Settler:
    def __init__(
        self, pool: asyncpg.Pool, executor: GroupExecutor, deliveries: Deliveries, acks: ChannelAcks,
        times: HandlerTimes, hooks: Hooks, outcomes: Counter[str],
    ) -> None:
        self.pool = pool
        self.executor = executor
        self.deliveries = deliveries
        self.acks = acks
        self.times = times
        self.hooks = hooks
        self.outcomes = outcomes  # deliveries settled, by outcome

    async def settle(self, group: list[Incoming]) -> None:
        """Packs first, each settled on its own, then the single-job deliveries as one group
        (whose ``multiple`` ack cannot touch a pack already settled). Cancelled (shutdown's
        second stage): what is left unsettled goes back to the queue."""
        try:
            singles = []
            for message in group:
                if PACK_HEADER in message.headers:
                    await self._settle_pack(message)
                else:
                    singles.append(message)
            if singles:
                await self._settle_singles(singles)
        except asyncio.CancelledError:
            await asyncio.shield(self.acks.release(group))
            raise

    async def _settle_singles(self, group: list[Incoming]) -> None:
        parsed = [(m, self.deliveries.parse(m.body, m.headers, m.redelivered)) for m in group]
        jobs = [p for _, p in parsed if isinstance(p, Job)]
        # A redelivery (its worker died, or its group was handed back) runs alone: a crash it
        # causes then counts against it only, never against innocent neighbours.
        alone = [job for job in jobs if job.redelivered] if len(jobs) > 1 else []
        together = [job for job in jobs if job not in alone]
        verdicts = await self._run(together) if together else {}
        await self._settle_all([_single(m, p, _verdict(p, verdicts)) for m, p in parsed if p not in alone])
        for message, p in parsed:
            if isinstance(p, Job) and p in alone:
                verdict = (await self._run([p]))[p]
                await self._settle_all([_single(message, p, verdict)])

    async def _settle_pack(self, message: Incoming) -> None:
        """A packed message: its jobs run as one group (or, redelivered, each alone: one of them
        may be what killed the last worker), and the pack is settled once all are decided."""
        parsed = self.deliveries.parse_pack(message.body, message.redelivered)
        if not parsed:  # not a pack at all
            await self._settle_all([_single(message, Rejected("-"), Verdict(Outcome.REJECTED))])
            return
        jobs = [p for p in parsed if isinstance(p, Job)]
        verdicts: dict[Job, Verdict] = {}
        if message.redelivered:
            for job in jobs:
                verdicts.update(await self._run([job]))
        elif jobs:
            verdicts = await self._run(jobs)
        decided = [(p, _verdict(p, verdicts)) for p in parsed]
        await self._settle_all([(message, pack_settlement([v.outcome for _, v in decided]), decided)])

    async def _settle_all(self, decided: Sequence[Decided]) -> None:
        """The one place a decided delivery meets the broker: acked with the others (one
        ``multiple`` ack once every earlier delivery of the channel is settled), or requeued,
        or dead-lettered, each at once; then each job it carried is counted."""
        done = []
        for message, how, _ in decided:
            if how is Settlement.ACK:
                done.append(message)
            else:
                await self.acks.settle(message, "requeue" if how is Settlement.REQUEUE else "dead_letter")
        await self.acks.done(done)
        for _, _, carried in decided:
            for parsed, verdict in carried:
                self._observe(parsed, verdict)

    def _observe(self, parsed: Parsed, verdict: Verdict) -> None:
        if verdict.outcome is Outcome.HANDED_BACK:
            return  # nothing happened to it: it comes back
        self.outcomes[verdict.outcome.value] += 1
        queue = parsed.attempt.queue if isinstance(parsed, Job) else parsed.queue
        if verdict.lateness_s is not None:  # its handler ran
            self.times.observe(queue, verdict.seconds)
        if type(self.hooks) is not Hooks:  # no per-job work when unobserved
            if verdict.lateness_s is not None:
                self.hooks.job_started(queue, verdict.lateness_s)
            self.hooks.job_finished(queue, verdict.outcome.value, verdict.seconds)

    async def _run(self, jobs: list[Job]) -> dict[Job, Verdict]:
        """Run ``jobs`` as one group and decide each one's outcome, whatever fails."""
        try:
            async with self.pool.acquire() as conn:
                verdicts = await self.executor.run(conn, jobs)
            failpoint("consumer.after_commit")
            return verdicts
        except Exception as exc:  # a worker must outlive anything one group can throw
            if isinstance(exc, CommitRefused):
                return await self._refused(jobs, exc)
            await self._hand_back(jobs, exc)
            return {job: Verdict(Outcome.HANDED_BACK) for job in jobs}

    async def _refused(self, jobs: list[Job], exc: CommitRefused) -> dict[Job, Verdict]:
        """A handler's writes made Postgres refuse the commit: run each job alone, so that only
        the one that cannot be committed is recorded dead (and dead-lettered, with its error)."""
        if len(jobs) > 1:
            log.error("group refused at commit; its jobs run one by one",
                      extra={"action": "group_split", "error": type(exc.__cause__).__name__, "count": len(jobs)})
            verdicts: dict[Job, Verdict] = {}
            for job in jobs:
                verdicts.update(await self._run([job]))
            return verdicts
        (job,) = jobs
        log.error("delivery rejected: its writes cannot be committed",
                  extra={"action": "delivery_rejected", "job_id": job.attempt.job_id, "occurrence": job.key,
                         "error": type(exc.__cause__).__name__})
        async with self.pool.acquire() as conn:
            await failures.bury_unprocessable(conn, job, failures.describe(exc.__cause__ or exc))
        return {job: Verdict(Outcome.REJECTED)}

    async def _hand_back(self, jobs: list[Job], exc: Exception) -> None:
        keys = [job.key for job in jobs[:_KEYS_SHOWN]]
        if unavailable(exc):
            log.warning("deliveries not processed; returned to the queue",
                        extra={"action": "delivery_requeued", "error": type(exc).__name__, "count": len(jobs)})
        else:
            # The error's text may quote the statement's values: its type, state and frames only.
            log.error("internal error while running or recording a group; its deliveries return to the queue",
                      extra={"action": "internal_error", "error": type(exc).__name__,
                             "sqlstate": getattr(exc, "sqlstate", None), "count": len(jobs), "occurrences": keys,
                             "job_ids": [job.attempt.job_id for job in jobs[:_KEYS_SHOWN]],
                             "where": "".join(traceback.format_tb(exc.__traceback__)[-5:])})
        await asyncio.sleep(UNAVAILABLE_PAUSE)
