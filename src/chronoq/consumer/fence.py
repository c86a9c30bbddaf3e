"""The fence: which deliveries of a group may run, judged on the occurrences the group locked.

A delivery runs only if its occurrence is live at the delivery's attempt and nothing else ran it
first: a copy of an occurrence that has ended is a duplicate, a copy of an attempt that has moved
on is stale, and a first delivery that may have run before uncounted goes back to run alone. The
group holds the locks until it commits, so nothing can end these occurrences meanwhile.

These decisions are all in this class, so that the fault-injection harness can replace it with a
build that has no fence (chaos/mutants.py) and show that its checker catches the duplicates.
"""

from __future__ import annotations

from chronoq._store.outcomes import OccurrenceStatus
from chronoq.consumer.delivery import Job
from chronoq.consumer.outcome import Outcome, Verdict


class Fence:
    def __init__(self, delivery_limit: int) -> None:
        self.delivery_limit = delivery_limit

    def admit(self, jobs: list[Job], statuses: dict[str, OccurrenceStatus]) -> tuple[dict[Job, Verdict], list[Job]]:
        """The verdicts of the jobs that must not run, and the jobs that may, in order."""
        verdicts: dict[Job, Verdict] = {}
        runnable: list[Job] = []
        seen: set[str] = set()
        for job in jobs:
            status = statuses[job.key]
            if status.terminal_state is not None or job.key in seen:
                verdicts[job] = Verdict(Outcome.DUPLICATE)  # ended already, or a second copy within this group
            elif status.live_attempt != job.attempt.attempt:
                # A later attempt is live, or the message names no live occurrence (forged, or
                # its job deleted): nothing to run.
                verdicts[job] = Verdict(Outcome.STALE)
            else:
                seen.add(job.key)
                runnable.append(job)
        return verdicts, runnable

    def may_run_uncounted(self, status: OccurrenceStatus) -> bool:
        """Whether a first delivery may run in its group, its start not counted. Not if it was
        started before without an outcome (its worker died), or is not the one copy of this
        attempt a committed timer batch published first (published again after its lease ran
        out, or by a batch that rolled back): an earlier copy may have run uncounted and killed
        its worker. It goes back to the queue, uncounted here, and runs alone as a redelivery,
        its start counted first. (Past the limit it is buried in this group.)"""
        return status.starts is None or status.starts > self.delivery_limit or status.only_copy

    def still_live(self, job: Job, locked: set[str]) -> bool:
        """Whether the group locked the job's occurrence live: else it ended between its start
        and the lock."""
        return job.key in locked

    def check_recorded(self, recorded: int, expected: int) -> None:
        """Every success must have been recorded: impossible otherwise while the group holds the
        locks, so the group rolls back rather than ack what it did not record."""
        if recorded != expected:
            raise RuntimeError(f"recorded {recorded} of {expected} results; rolling back the group")
