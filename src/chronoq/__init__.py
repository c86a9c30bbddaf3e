"""chronoq: delayed jobs and cron that survive machine death and never silently drop one."""

from chronoq.consumer.context import Cancel, JobContext, Retry
from chronoq.consumer.registry import Worker
from chronoq.errors import ChronoqError, InvalidJobError, JobNotFoundError
from chronoq.producer import Producer
from chronoq.schemas.job import JobSpec, RetryPolicy
from chronoq.schemas.views import JobView

__all__ = [
    "Cancel",
    "ChronoqError",
    "InvalidJobError",
    "JobContext",
    "JobNotFoundError",
    "JobSpec",
    "JobView",
    "Producer",
    "Retry",
    "RetryPolicy",
    "Worker",
]
__version__ = "0.1.0"
