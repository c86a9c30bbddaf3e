"""Pydantic models and pure rules, no I/O: job specs, policies, the AMQP message, job views."""

from chronoq.schemas.job import (
    MAX_PAYLOAD_BYTES,
    QUEUE_NAME_PATTERN,
    JobSpec,
    RetryPolicy,
)
from chronoq.schemas.message import JobMessage
from chronoq.schemas.views import AttemptView, JobView, OccurrenceView

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "QUEUE_NAME_PATTERN",
    "AttemptView",
    "JobMessage",
    "JobSpec",
    "JobView",
    "OccurrenceView",
    "RetryPolicy",
]
