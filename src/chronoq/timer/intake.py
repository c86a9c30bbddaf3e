"""The submissions intake: ingesting jobs that services in other languages submit over AMQP.

A submission is stored exactly like the Python producer stores a job (the same statements,
the idempotency key honoured) and acked only after the commit: the sender's publisher confirm
means "durably accepted by RabbitMQ", and from there chronoq cannot lose it.

A submission that cannot be stored for any reason other than the database being unavailable
(it does not validate, the database refuses it, storing it fails in a way nobody foresaw) goes
to ``<ns>.submissions.rejected`` at once, with the error in the ``x-chronoq-error`` header (never
the payload in a log), then is acked: handing it back would only fail it again, in front of the
submissions behind it. Only "unavailable" (``_runtime/availability.py``) hands it back.

The timer does not wait for the submissions consumer: after a broker kill, the consumer's queue
could refuse it for minutes while every job queue worked, and a timer that exited over it and was
restarted, again and again, would dispatch nothing. Submissions wait in their queue until the
consumer is back; meanwhile a side task keeps trying to subscribe.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging

import asyncpg

from chronoq import lifecycle
from chronoq._broker.connection import BROKER_ERRORS
from chronoq._broker.consumer import Incoming, SubmissionIntake
from chronoq._broker.publisher import ConfirmedPublisher, Outgoing, fitted_headers
from chronoq._broker.topology import Topology
from chronoq._runtime.availability import unavailable
from chronoq._runtime.service import pause
from chronoq._store import jobs as job_store
from chronoq._store.connection import database_errors
from chronoq.errors import ChronoqError
from chronoq.schemas.job import JobSpec
from chronoq.schemas.submission import parse_submission

log = logging.getLogger("chronoq.timer")

#: Pause before handing a submission back when the database is unavailable.
UNAVAILABLE_PAUSE = 1.0
#: Submissions from other languages being stored at once, per timer.
SUBMISSION_PREFETCH = 20
#: Longest wait for the submissions consumer to subscribe, before the timer goes on without it
#: (and keeps trying in the background).
INTAKE_START_TIMEOUT = 10.0
#: Pause between attempts to subscribe.
RETRY_PAUSE = 1.0
#: What keeps the submissions consumer from subscribing; the timer dispatches meanwhile.
_START_ERRORS: tuple[type[BaseException], ...] = (*BROKER_ERRORS, TimeoutError)


class Ingest:
    """Stores one submission, or rejects it with its reason."""

    def __init__(self, pool: asyncpg.Pool, publisher: ConfirmedPublisher, topology: Topology) -> None:
        self.pool = pool
        self.publisher = publisher
        self.topology = topology

    async def handle(self, message: Incoming) -> None:
        try:
            spec = parse_submission(message.body)
            if spec.key is None and message.message_id:
                # A redelivery after our commit (the ack was lost) must not store the job twice:
                # without a key of its own, the submission's AMQP message id is its key.
                digest = hashlib.sha256(message.message_id.encode(errors="replace")).hexdigest()[:32]
                spec = spec.model_copy(update={"key": f"amqp-message:{digest}"})
            with database_errors():
                async with self.pool.acquire() as conn:
                    if isinstance(spec, JobSpec):
                        job_id = (await job_store.enqueue(conn, spec, spec.encoded_payload())).job_id
                    else:
                        job_id = await lifecycle.schedule(conn, spec)
        except Exception as exc:  # classified: unavailable, or this submission's fault
            if unavailable(exc):
                log.warning("submission not stored; returned to the queue",
                            extra={"action": "submission_requeued", "error": type(exc).__name__})
                await asyncio.sleep(UNAVAILABLE_PAUSE)
                await message.requeue()
                return
            if not isinstance(exc, ChronoqError):
                log.error("submission could not be stored; rejected",
                          extra={"action": "submission_failed", "error": type(exc).__name__}, exc_info=exc)
            await self._reject(message, _error_text(exc))
            return
        log.info("submission stored", extra={"action": "submission_stored", "job_id": job_id, "queue": spec.queue})
        await message.ack()

    async def _reject(self, message: Incoming, error: str) -> None:
        own = {"x-chronoq-error": error[:ERROR_HEADER_LIMIT], "x-chronoq-reason": "invalid_submission"}
        headers = fitted_headers(message.headers, own, self.publisher.frame_max())
        try:
            failure = await self.publisher.publish_to_queue(
                self.topology.rejected_submissions_queue,
                Outgoing(routing_key="", body=message.body, message_id="", headers=headers),
            )
        except Exception as exc:  # the broker is unavailable: keep the submission
            failure = exc
        if failure is not None:
            log.warning("rejected submission not copied; returned to the queue",
                        extra={"action": "submission_requeued", "error": type(failure).__name__})
            await asyncio.sleep(UNAVAILABLE_PAUSE)
            await message.requeue()  # keep it until it can be recorded as rejected
            return
        log.warning("submission rejected", extra={"action": "submission_rejected", "error": error[:300]})
        await message.ack()


#: Longest error text in a rejected submission's ``x-chronoq-error`` header.
ERROR_HEADER_LIMIT = 1000


def _error_text(exc: BaseException) -> str:
    """What the sender reads in ``x-chronoq-error``: chronoq's own message (which names the
    field and quotes at most a short prefix of a value), else only the kind of failure."""
    if isinstance(exc, ChronoqError):
        return str(exc)
    return f"the submission could not be stored: {type(exc).__name__}"


class Intake:
    """The submissions consumer's lifecycle: subscribe, or keep trying beside the dispatch loop."""

    def __init__(self, consumer: SubmissionIntake, ingest: Ingest, stopping: asyncio.Event, timer: str) -> None:
        self.consumer = consumer
        self.ingest = ingest
        self.stopping = stopping
        self.timer = timer

    async def start(self) -> bool:
        """Subscribe to the submissions queue; False (logged) if the broker would not let us."""
        try:
            await asyncio.wait_for(self.consumer.start(SUBMISSION_PREFETCH, self.ingest.handle), INTAKE_START_TIMEOUT)
            return True
        except _START_ERRORS as exc:
            log.warning("submission intake unavailable; the timer dispatches meanwhile",
                        extra={"action": "intake_unavailable", "error": f"{type(exc).__name__}: {exc}"[:300]})
            await self.consumer.close()
            return False

    async def retry(self) -> None:
        """Side task: try to subscribe again after a pause, until it works or the timer stops."""
        while not self.stopping.is_set():
            await pause(self.stopping, RETRY_PAUSE)
            if not self.stopping.is_set() and await self.start():
                log.info("submission intake started", extra={"action": "intake_started", "timer": self.timer})
                return

    async def close(self) -> None:
        await self.consumer.close()
