"""Deliberately broken workers, so that a fault-injection run can show its checker catches them.

The product has no switch for these: the harness starts such a worker through this module,
which patches the worker's code in its own process and then runs chronoq's command line as
``python -m chronoq`` would. Usage (``chaos/fleet.py`` builds it)::

    python -m chaos.mutants no_fence[,ack_before_commit] worker chaos.handlers:worker

- ``no_fence``: no dedup and no fence (consumer/fence.py): every delivery runs, whether its
  occurrence has ended, its attempt moved on, or another copy ran in the same group.
- ``ack_before_commit``: a group of deliveries is acked before it runs, so a crash before its
  commit loses the broker's copy.
"""

from __future__ import annotations

import runpy
import sys
from collections.abc import Callable

from chronoq._broker.consumer import Incoming
from chronoq._store.outcomes import OccurrenceStatus
from chronoq.consumer.delivery import Job
from chronoq.consumer.fence import Fence
from chronoq.consumer.outcome import Verdict
from chronoq.consumer.settle import Settler


def no_fence() -> None:
    def admit_all(self: Fence, jobs: list[Job], statuses: dict[str, OccurrenceStatus]) -> tuple[dict[Job, Verdict], list[Job]]:
        return {}, list(jobs)

    Fence.admit = admit_all  # type: ignore[method-assign]
    Fence.may_run_uncounted = lambda self, status: True  # type: ignore[method-assign]
    Fence.still_live = lambda self, job, locked: True  # type: ignore[method-assign]
    Fence.check_recorded = lambda self, recorded, expected: None  # type: ignore[method-assign]


def ack_before_commit() -> None:
    settle_singles = Settler._settle_singles

    async def acked_first(self: Settler, group: list[Incoming]) -> None:
        await group[-1].ack(multiple=True)
        await settle_singles(self, group)

    Settler._settle_singles = acked_first  # type: ignore[method-assign]


MUTANTS: dict[str, Callable[[], None]] = {"no_fence": no_fence, "ack_before_commit": ack_before_commit}


def main() -> None:
    if len(sys.argv) < 2 or not all(name in MUTANTS for name in sys.argv[1].split(",")):
        sys.exit(f"usage: python -m chaos.mutants {{{'|'.join(MUTANTS)}}}[,...] CHRONOQ-ARGUMENTS...")
    for name in sys.argv[1].split(","):
        MUTANTS[name]()
    sys.argv = ["chronoq", *sys.argv[2:]]
    runpy.run_module("chronoq", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
