"""Parsing a delivery, once, at the edge: either a job this worker can run, or a rejection.

Nothing downstream asks whether a delivery parsed: a group runs ``Job`` values only, and a
``Rejected`` one goes straight to its settlement (the dead-letter queue, or with its pack).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import orjson
from pydantic import ValidationError

from chronoq._store import outcomes
from chronoq.consumer.registry import Handler, Worker
from chronoq.schemas.message import JobMessage, PackMessage

log = logging.getLogger("chronoq.worker")


@dataclass(frozen=True, eq=False)  # compared by identity: a group may hold two copies of one job
class Job:
    """A delivery that parsed and names a queue this worker handles: all a group needs to run it."""

    message: JobMessage
    handler: Handler
    attempt: outcomes.Attempt
    headers: dict[str, Any]  # the message's headers (a packed job's: its trace context)
    redelivered: bool  # delivered before, or its pack was: runs alone, its start counted first

    @property
    def key(self) -> str:
        return self.attempt.occurrence_key

    @property
    def timeout(self) -> timedelta:
        return self.handler.timeout or timedelta(seconds=self.message.timeout_s)


@dataclass(frozen=True)
class Rejected:
    """A delivery that can never run here: malformed, or for a queue without handler."""

    queue: str  # "-" if it did not parse


Parsed = Job | Rejected


class Deliveries:
    """Turns message bodies into ``Job`` or ``Rejected`` values for one worker."""

    def __init__(self, worker: Worker, name: str) -> None:
        self.worker = worker
        self.name = name  # the worker's, recorded with every attempt

    def parse(self, body: bytes, headers: dict[str, Any], redelivered: bool) -> Parsed:
        try:
            message = JobMessage.model_validate_json(body)
        except ValidationError as exc:
            # Field locations and error types only: the message text would quote the payload.
            problems = [(".".join(map(str, e["loc"])), e["type"]) for e in exc.errors()][:5]
            log.warning("malformed message rejected", extra={"action": "message_rejected", "problems": problems})
            return Rejected("-")
        return self._job(message, headers, redelivered)

    def parse_pack(self, body: bytes, redelivered: bool) -> list[Parsed]:
        """The jobs of a packed message (many jobs of one queue). An element that does not
        validate is ``Rejected``; a body that is not a pack at all gives none."""
        try:
            pack = PackMessage.model_validate_json(body)
        except ValidationError:
            try:  # corrupted or forged: keep what validates
                elements = orjson.loads(body)["pack"]
                if not isinstance(elements, list):
                    raise TypeError("pack is not a list")
            except (orjson.JSONDecodeError, KeyError, TypeError):
                log.warning("malformed pack rejected", extra={"action": "message_rejected"})
                return []
            return [self.parse(orjson.dumps(e), {}, redelivered) for e in elements]
        return [self._job(job, dict(job.trace), redelivered) for job in pack.pack]

    def _job(self, message: JobMessage, headers: dict[str, Any], redelivered: bool) -> Parsed:
        handler = self.worker.get(message.queue)
        if handler is None:
            log.warning("message for a queue without handler",
                        extra={"action": "message_rejected", "queue": message.queue})
            return Rejected(message.queue)
        attempt = outcomes.Attempt(message.occurrence_key, message.job_id, message.queue, message.fire_at,
                                   message.run_at, message.attempt, self.name)
        return Job(message, handler, attempt, headers, redelivered)
