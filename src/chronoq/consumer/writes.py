"""How the handlers of a group keep their writes apart: optimistically, or each in a savepoint.

A group runs many handlers in one transaction, and each must keep its own outcome: a failing
handler's writes through ``ctx.db`` are undone, its neighbours' stay. A savepoint per handler
does that, at two round trips per handler that uses ``ctx.db`` (open, then release), which is most
of what such a handler costs. Most handlers succeed, so a group first runs **optimistically**:
its handlers write straight into the transaction, with no savepoint.

Then, if a handler fails (raises, times out, returns what cannot be stored, or swallowed a
database error that left the transaction aborted) **after using** ``ctx.db``, its writes cannot be
undone alone: the whole transaction rolls back (``UndoAlone``) and the group runs again **with
savepoints**. The failed handler is not called again: its failure, taken from the first run, is
recorded in the second. Its neighbours run a second time: their ``ctx.db`` writes are still
committed once (the first run's were rolled back), but what they did outside the database happens
again (at-least-once, as after any crash). A handler that fails **without** having used ``ctx.db``
wrote nothing to undo: its failure is recorded and the optimistic group goes on.

Which handler left the transaction aborted is known only if the error passed through ``ctx.db``
(``JobConnection`` notices every one; a nested ``ctx.db.transaction()`` may have undone it, which
one ``SELECT`` tells). An error it cannot see (a prepared statement's, say) aborts the transaction
unnoticed: the next statement fails with ``InFailedSQLTransactionError``, and the group runs again
with savepoints, where each release finds its culprit, and no failure is carried over.

To keep that rare, a queue whose handler failed after using ``ctx.db`` runs its next groups with
savepoints from the start (``SavepointPolicy``).

Whatever the mode, handlers' statements are planned with Postgres's default (``auto``) and
chronoq's own with the session's setting: ``GroupWrites`` switches between the two, once each way
around the handlers of a group, and only when a handler uses ``ctx.db``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import asyncpg

from chronoq._store import savepoints
from chronoq._store.connection import Connection
from chronoq.consumer.delivery import Job
from chronoq.consumer.outcome import Ending

#: Groups of a queue that run with savepoints from the start after one of its handlers failed
#: having used ``ctx.db``. A rerun costs about a group's handlers again; savepoints cost a round
#: trip per handler. Ten groups keep a queue that fails like that every few groups from rerunning
#: again and again, and cost a one-off failure no more than a round trip per job for ten groups.
CAREFUL_GROUPS = 10


@dataclass(frozen=True)
class Failure:
    """A handler's run that failed: what ended it and how long it ran."""

    exc: BaseException
    ending: Ending
    seconds: float


class UndoAlone(Exception):
    """An optimistic group's handler failed after using ``ctx.db``: roll the group back and run
    it again with savepoints, the failures in ``carried`` recorded instead of run again."""

    def __init__(self, carried: dict[Job, Failure]) -> None:
        super().__init__("a handler's writes must be undone alone")
        self.carried = carried


class GroupWrites:
    """One transaction of a group: what is sent around its handlers' use of ``ctx.db``."""

    def __init__(self, conn: Connection, *, savepoints: bool) -> None:
        self._conn = conn
        self.savepoints = savepoints
        self._planning_for_handlers = False

    async def open_job(self) -> None:
        """A handler's first use of ``ctx.db``, before its statement runs."""
        if not self._planning_for_handlers:
            # Outside the savepoint: undoing a handler's writes keeps it.
            await savepoints.plan_for_handlers(self._conn)
            self._planning_for_handlers = True
        if self.savepoints:
            await savepoints.open_job(self._conn)

    async def keep_job(self, noticed: BaseException | None) -> None:
        """A handler that used ``ctx.db`` returned. Raises if it left the transaction aborted
        (``noticed``: the first error raised through its ``ctx.db``)."""
        if self.savepoints:
            await savepoints.keep_job(self._conn)
        elif noticed is not None:
            await savepoints.check_usable(self._conn)

    async def undo_job(self, job: Job, failure: Failure, noticed: BaseException | None) -> None:
        """A handler that used ``ctx.db`` failed: its writes are undone, alone if they can be."""
        if self.savepoints:
            await savepoints.undo_job(self._conn)
            return
        # An aborted transaction met at its first error was aborted before it ran: not its failure.
        own = not isinstance(noticed, asyncpg.InFailedSQLTransactionError)
        raise UndoAlone({job: failure} if own else {})

    async def before_own_statement(self) -> None:
        """Before chronoq's own statements in this transaction."""
        if self._planning_for_handlers:
            await savepoints.plan_for_chronoq(self._conn)
            self._planning_for_handlers = False


class SavepointPolicy:
    """Which groups run with savepoints from the start: those holding a queue whose handler
    failed after using ``ctx.db`` within its last ``CAREFUL_GROUPS`` groups."""

    def __init__(self) -> None:
        self._careful: dict[str, int] = {}  # queue: groups left to run with savepoints

    def savepoints_for(self, queues: Iterable[str]) -> bool:
        """Whether a group of these queues runs with savepoints (and counts it)."""
        careful = False
        for queue in set(queues):
            left = self._careful.get(queue)
            if left is not None:
                careful = True
                if left > 1:
                    self._careful[queue] = left - 1
                else:
                    del self._careful[queue]
        return careful

    def failed_after_writing(self, queue: str) -> None:
        self._careful[queue] = CAREFUL_GROUPS
