"""A queue's limits: how many of its occurrences may run at once, and how many may be dispatched
in any sliding window of a period. The Producer and the CLI check them here, once."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from chronoq.errors import wrong_type
from chronoq.schemas.rules import check_int, to_duration

#: Largest ``max_running``: a limit above it would not limit anything a fleet can run.
MAX_RUNNING_LIMIT = 100_000
#: Largest count of a rate limit. Each claim for a rate-limited queue counts the dispatches in
#: its window, so the count bounds that work; a higher rate is the same count over a shorter period.
MAX_RATE_COUNT = 10_000
#: Longest period of a rate limit.
MAX_RATE_PERIOD = timedelta(days=1)


@dataclass(frozen=True)
class Rate:
    """At most ``count`` dispatches in any window of ``period``."""

    count: int
    period: timedelta

    def __str__(self) -> str:
        return f"{self.count}/{self.period.total_seconds():g}s"


@dataclass(frozen=True)
class QueueLimits:
    """None: no limit of that kind."""

    max_running: int | None = None
    rate: Rate | None = None


def check_limits(max_running: object = None, rate: object = None) -> QueueLimits:
    """``max_running``: an integer 1..100,000 or None. ``rate``: a ``(count, period)`` pair (period
    a timedelta or seconds), a :class:`Rate`, or None."""
    running = None if max_running is None else check_int(max_running, "max_running", 1, MAX_RUNNING_LIMIT)
    return QueueLimits(running, None if rate is None else check_rate(rate))


def check_rate(rate: object) -> Rate:
    if isinstance(rate, Rate):
        count, period = rate.count, rate.period
    elif isinstance(rate, tuple) and len(rate) == 2:
        count, period = rate
    else:
        raise wrong_type("rate", "a (count, period) pair", rate)
    return Rate(check_int(count, "rate", 1, MAX_RATE_COUNT),
                to_duration(period, "rate", maximum=MAX_RATE_PERIOD, positive=True))
