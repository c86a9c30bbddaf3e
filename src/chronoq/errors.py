"""The error root and the typed errors chronoq raises.

Every error a caller can see derives from :class:`ChronoqError`; driver errors (asyncpg,
aio-pika) are translated at the boundary with ``raise ... from exc`` so callers never need to
import a driver to handle a failure.
"""

from __future__ import annotations


class ChronoqError(Exception):
    """Root of every error chronoq raises on purpose."""


#: Longest field name and message an InvalidJobError carries: it names the problem and may quote
#: a short prefix of a value, never the whole of a hostile one.
FIELD_LIMIT = 300
MESSAGE_LIMIT = 500


class InvalidJobError(ChronoqError, ValueError):
    """A job spec, payload or argument is invalid. Nothing was stored. ``field`` names what is
    wrong (``payload.items[3]``, ``delay``, ``queue``); ``message`` says why."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field if len(field) <= FIELD_LIMIT else field[: FIELD_LIMIT - 3] + "..."
        self.message = message if len(message) <= MESSAGE_LIMIT else message[: MESSAGE_LIMIT - 3] + "..."
        super().__init__(f"{self.field}: {self.message}")


class ConfigError(ChronoqError):
    """A setting has a bad value; raised at start-up, naming the setting."""


class JobNotFoundError(ChronoqError, LookupError):
    """No job has this id."""

    def __init__(self, job_id: int) -> None:
        self.job_id = job_id
        super().__init__(f"no job with id {job_id}")


class UnknownQueueError(ChronoqError):
    """A queue is unknown where it must exist: a worker asked to consume a queue it has no
    handler for, or a dead-letter queue that was never declared."""


class ServiceUnavailableError(ChronoqError):
    """Postgres or RabbitMQ could not be reached."""


class ReadOnlyDatabaseError(ServiceUnavailableError):
    """Postgres refused to write: the connection is to a standby (a replica, or the old primary
    rebuilt as one after a failover) or its transaction is read-only. Nothing was stored. Raised
    for a caller's own ``connection=``; chronoq's own connections always find the primary.

    An outage to its caller, as the rest of ServiceUnavailableError: the same call succeeds on a
    connection to the primary, which a pool connecting with ``target_session_attrs=read-write``
    gives it (the usual cause is a pool that may pick any host of a multi-host URL)."""


class TopologyError(ChronoqError):
    """RabbitMQ refused a declaration (for example a queue exists with other arguments)."""


class JobStateError(ChronoqError):
    """The job is in a state that does not allow the operation (e.g. pausing a cancelled job)."""


# One wording for each kind of error, wherever it is raised.


def describe(exc: BaseException) -> str:
    """An exception as error text: its type, then its message if it has one."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def wrong_type(field: str, expected: str, value: object) -> InvalidJobError:
    """A value of the wrong type: the field, what it must be, and the type it is (never the value)."""
    return InvalidJobError(field, f"must be {expected}, not {type(value).__name__}")


def cannot_connect(service: str, why: str | BaseException) -> ServiceUnavailableError:
    """Postgres or RabbitMQ could not be reached: which, and why."""
    return ServiceUnavailableError(f"cannot connect to {service}: {describe(why) if isinstance(why, BaseException) else why}")


def bad_setting(setting: str, problem: str) -> ConfigError:
    """A setting whose value does not work, by its name (``database_url``, ``amqp_url``)."""
    return ConfigError(f"{setting}: {problem}")
