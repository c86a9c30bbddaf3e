"""The input contract: the rules every value obeys before chronoq stores or sends it.

Every entry point (the Python API, AMQP submissions, the CLI) checks its values with these
functions, so a value refused on one path is refused on all of them, with the same
:class:`InvalidJobError` naming the field. The bounds are those of what Postgres and RabbitMQ
store, tightened to what a caller can mean: whatever the database would refuse is refused here,
before anything is sent.

Types are strict: a number given as a string, a boolean given as a number, an epoch number given
as a time are refused, never converted.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta

from chronoq.errors import InvalidJobError, wrong_type

#: Queue names: what RabbitMQ and a shell accept without quoting, and what reads well in the
#: management UI. ``amq.*`` is reserved by RabbitMQ. At most 200 characters so that the
#: namespaced RabbitMQ name stays under AMQP's 255-byte limit. The whole name must match (a
#: final newline does not pass, as it would with Python's ``$``).
QUEUE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}$"
_QUEUE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}")
KEY_MAX_LENGTH = 200
#: Job ids are Postgres bigints.
MAX_JOB_ID = 2**63 - 1
#: Longest duration accepted for a grace period or a retry backoff: long enough to mean "no
#: limit", short enough that every time computed from it stays within what Postgres stores.
MAX_DURATION = timedelta(days=36_525)
#: Most rows one listing returns.
MAX_LIST_LIMIT = 100_000
#: Durations are stored in whole milliseconds: a positive one is at least this.
RESOLUTION = timedelta(milliseconds=1)
#: Characters of a hostile value an error message may repeat.
ECHO_LENGTH = 40


def short(value: object) -> str:
    """A short, safe rendering of any value for an error message: a prefix of a string, the
    type name of anything else (whose own ``repr`` may be huge or may fail)."""
    if isinstance(value, str):
        text = str.__getitem__(value, slice(0, ECHO_LENGTH))
        return repr(text) + ("..." if len(value) > ECHO_LENGTH else "")
    if type(value) is int and value.bit_length() > 128:
        return f"an integer of {value.bit_length()} bits"  # repr() of thousands of digits is slow or refused
    if type(value) in (int, float, bool) or value is None:
        text = repr(value)
        return text if len(text) <= ECHO_LENGTH else text[:ECHO_LENGTH] + "..."
    return f"a {type(value).__name__}"


def check_queue_name(queue: object, field: str = "queue") -> str:
    if not isinstance(queue, str):
        raise wrong_type(field, "a string", queue)
    if _QUEUE_NAME.fullmatch(queue) is None:
        raise InvalidJobError(
            field,
            f"{short(queue)} does not match {QUEUE_NAME_PATTERN} "
            "(1-200 of letters, digits, '_', '.', ':', '-'; first a letter or digit)",
        )
    if queue.startswith("amq."):
        raise InvalidJobError(field, f"{short(queue)}: names starting with 'amq.' are reserved by RabbitMQ")
    return queue


def check_key(key: object, field: str = "key") -> str | None:
    """An idempotency key, the same rule for one-shot and recurring jobs: 1-200 printable
    characters (no newline, no NUL)."""
    if key is None:
        return None
    if not isinstance(key, str):
        raise wrong_type(field, "a string", key)
    if not 1 <= len(key) <= KEY_MAX_LENGTH:
        raise InvalidJobError(field, f"must be 1-{KEY_MAX_LENGTH} characters, not {len(key)}")
    if not key.isprintable():
        raise InvalidJobError(field, "must be printable text (no newline, tab, NUL or other control character)")
    try:
        key.encode()
    except UnicodeEncodeError:
        raise InvalidJobError(field, "contains a lone surrogate, not valid UTF-8") from None
    return key


def check_int(value: object, field: str, low: int, high: int) -> int:
    """An integer in ``[low, high]``; a bool, a float or a numeric string is refused."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise wrong_type(field, "an integer", value)
    if not low <= value <= high:
        raise InvalidJobError(field, f"{short(int(value))} is outside {low}..{high}")
    return int(value)


def check_job_id(value: object, field: str = "job_id") -> int:
    return check_int(value, field, 1, MAX_JOB_ID)


def check_limit(value: object, field: str = "limit") -> int:
    return check_int(value, field, 1, MAX_LIST_LIMIT)


def to_duration(
    value: object, field: str, *, maximum: timedelta = MAX_DURATION, positive: bool = False,
    too_long: str | None = None,
) -> timedelta:
    """A duration: a ``timedelta`` or a finite number of seconds (not a bool, not a string),
    not negative (``positive``: at least a millisecond, the unit it is stored in), at most
    ``maximum`` (else ``too_long``, if given, is the message)."""
    if isinstance(value, timedelta):
        duration = value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidJobError(field, "must be a finite number of seconds")
        if abs(value) > maximum.total_seconds():  # exact for an int of any size
            raise InvalidJobError(field, too_long or f"{short(value)} seconds is longer than {human_duration(maximum)}")
        duration = timedelta(seconds=value)
    else:
        raise wrong_type(field, "a timedelta or a number of seconds", value)
    if duration < timedelta(0):
        raise InvalidJobError(field, "must be positive" if positive else "must not be negative")
    if positive and duration < RESOLUTION:
        raise InvalidJobError(field, "must be positive, at least 1 ms")
    if duration > maximum:
        raise InvalidJobError(field, too_long or f"must be at most {human_duration(maximum)}")
    return duration


def check_aware_time(value: object, field: str, *, earliest: datetime, latest: datetime) -> datetime:
    """An aware ``datetime`` in ``[earliest, latest)``, returned in UTC. A string or an epoch
    number is refused: the caller parses its own format."""
    if not isinstance(value, datetime):
        raise wrong_type(field, "a datetime with a time zone", value)
    try:
        offset = value.utcoffset()
    except Exception:  # a tzinfo of the caller's that fails is the caller's value
        offset = None
    if value.tzinfo is None or offset is None:
        raise InvalidJobError(field, "naive datetime: give a time zone (for example datetime.now(UTC))")
    try:
        utc = value.astimezone(UTC)
    except OverflowError:
        utc = None
    if utc is None or not earliest <= utc < latest:
        raise InvalidJobError(field, f"outside the supported range {earliest:%Y}-{latest:%Y}")
    return utc


def human_duration(duration: timedelta) -> str:
    if duration >= timedelta(days=1) and not duration % timedelta(days=1):
        return f"{duration.days} day{'s' if duration.days != 1 else ''}"
    return f"{duration.total_seconds():g} seconds"
