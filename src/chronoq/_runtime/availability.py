"""Whether a failure means "a service is unavailable, try the same work again later".

The classification is narrow on purpose: only an unreachable or overloaded Postgres or RabbitMQ,
a broken connection, or a conflict that changed nothing is "unavailable". Anything else is not
an outage, and the caller says whose fault it is: the work's (the timer sets a message the
broker refuses aside, with its reason) or chronoq's own (the worker logs an error and hands the
delivery back; consumer/settle.py).
"""

from __future__ import annotations

from chronoq._broker.connection import broker_unavailable
from chronoq._runtime.failpoints import FailpointError
from chronoq._store.connection import database_unavailable
from chronoq.errors import ServiceUnavailableError


def unavailable(exc: BaseException) -> bool:
    return (
        isinstance(exc, (ServiceUnavailableError, TimeoutError, FailpointError))
        or database_unavailable(exc)
        or broker_unavailable(exc)
    )
