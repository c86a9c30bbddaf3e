"""The command line's argument types: each checks its text by the rules the Python API and AMQP
submissions obey (``schemas/rules.py``) while the arguments are parsed, and refuses it with a
message that repeats at most a short prefix of it."""

from __future__ import annotations

import argparse
import functools
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pydantic_core

from chronoq._runtime.durations import parse_duration
from chronoq.errors import InvalidJobError
from chronoq.schemas.limits import Rate, check_rate
from chronoq.schemas.payload import encode_payload
from chronoq.schemas.rules import (
    ECHO_LENGTH,
    MAX_DURATION,
    MAX_JOB_ID,
    MAX_LIST_LIMIT,
    check_aware_time,
    check_int,
    check_key,
    check_queue_name,
    short,
    to_duration,
)
from chronoq.schemas.schedule import parse_schedule

#: Times ``jobs ticks --since`` may name: every aware time both Python and Postgres hold.
EARLIEST_SINCE = datetime(1, 1, 2, tzinfo=UTC)
LATEST_SINCE = datetime(9999, 12, 31, tzinfo=UTC)
#: Bounds of the bench and demo flags: far beyond any useful run, near enough that no value
#: runs the machine out of memory or time before the run even starts.
MAX_BENCH_JOBS = 10_000_000
MAX_BENCH_RATE = 1_000_000.0
MAX_BENCH_SECONDS = 86_400.0
MAX_PRELOAD = 100_000_000
MAX_PROCESSES = 64
MAX_RUNS = 100
MAX_SIZES = 20
MAX_DEMO_JOBS = 1_000_000
MAX_DEMO_SPREAD = timedelta(hours=1)

_T = TypeVar("_T")
_INTEGER = re.compile(r"[+-]?[0-9]+")
_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]+)?")
#: Digits beyond which an integer is outside every bound here (int() of thousands of digits is
#: slow, and refused past 4300).
_INTEGER_DIGITS = 30


def argument(convert: Callable[[str], _T]) -> Callable[[str], _T]:
    """``convert`` as an argparse ``type=``: an InvalidJobError becomes argparse's refusal of the
    argument, with the rule's message (which repeats at most a short prefix of the value)."""

    @functools.wraps(convert)
    def checked(text: str) -> _T:
        try:
            return convert(text)
        except InvalidJobError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return checked


def to_int(text: str, field: str, low: int, high: int) -> int:
    if _INTEGER.fullmatch(text) is None:
        raise InvalidJobError(field, f"{short(text)} is not an integer")
    if len(text.lstrip("+-").lstrip("0")) > _INTEGER_DIGITS:
        raise InvalidJobError(field, f"{text[:ECHO_LENGTH]}... is outside {low}..{high}")
    return check_int(int(text), field, low, high)


def integer(field: str, low: int, high: int) -> Callable[[str], int]:
    return argument(functools.partial(to_int, field=field, low=low, high=high))


def number(field: str, high: float, *, zero: bool = False) -> Callable[[str], float]:
    """A decimal number (no sign, no exponent) above zero (``zero``: or zero), at most ``high``."""

    @argument
    def number(text: str) -> float:
        if _DECIMAL.fullmatch(text) is None:
            raise InvalidJobError(field, f"{short(text)} is not a number like 2 or 0.5")
        value = float(text)
        if value == 0 and not zero:
            raise InvalidJobError(field, "must be above 0")
        if value > high:
            raise InvalidJobError(field, f"{short(text)} is more than {high:,.0f}")
        return value

    return number


def duration(
    field: str, *, maximum: timedelta = MAX_DURATION, positive: bool = False,
) -> Callable[[str], timedelta]:
    @argument
    def duration(text: str) -> timedelta:
        try:
            value = parse_duration(text)
        except ValueError as exc:  # its message quotes a short prefix of the text
            raise InvalidJobError(field, str(exc)) from None
        return to_duration(value, field, maximum=maximum, positive=positive)

    return duration


def time(field: str, *, earliest: datetime, latest: datetime) -> Callable[[str], datetime]:
    @argument
    def time(text: str) -> datetime:
        try:
            value = datetime.fromisoformat(text.upper())  # RFC 3339 allows a lower-case t and z
        except ValueError:
            raise InvalidJobError(field, f"{short(text)} is not an ISO 8601 time like 2030-01-01T09:00:00+01:00") from None
        if value.tzinfo is None:
            raise InvalidJobError(field, f"{short(text)} is a naive time: add its UTC offset, e.g. +01:00 or Z")
        return check_aware_time(value, field, earliest=earliest, latest=latest)

    return time


@argument
def payload(text: str) -> object:
    """JSON, parsed with integers kept exact, and refused unless it can be stored as it was given."""
    try:
        payload = pydantic_core.from_json(text, allow_inf_nan=False)
    except ValueError as exc:
        raise InvalidJobError("payload", f"not valid JSON: {exc}") from None
    encode_payload(payload)
    return payload


@argument
def cron(text: str) -> str:
    parse_schedule(text, "UTC")
    return text


@argument
def timezone(text: str) -> str:
    parse_schedule("* * * * *", text)  # the zone, checked as a schedule checks it
    return text


queue = argument(check_queue_name)
key = argument(check_key)
occurrence = argument(functools.partial(check_key, field="occurrence"))
job_id = integer("job_id", 1, MAX_JOB_ID)


def one_of(field: str, *names: str) -> dict[str, Any]:
    """``add_argument`` options for a value among ``names``. argparse's own ``choices`` would quote
    a refused value in full."""

    @argument
    def name(text: str) -> str:
        if text not in names:
            raise InvalidJobError(field, f"{short(text)} is not one of {', '.join(names)}")
        return text

    return {"type": name, "metavar": "{" + ",".join(names) + "}"}


def limit(default: int) -> dict[str, Any]:
    return {"type": integer("limit", 1, MAX_LIST_LIMIT), "default": default,
            "help": f"at most this many (1-{MAX_LIST_LIMIT}, default {default})"}


def naptime(text: str) -> timedelta:
    naptime = duration("autovacuum_naptime")(text)
    if not timedelta(seconds=1) <= naptime <= timedelta(days=24):  # Postgres's range for the setting
        raise argparse.ArgumentTypeError(f"autovacuum_naptime: must be between 1s and 24d, not {short(text)}")
    return naptime


@argument
def counts(text: str) -> list[int]:
    """Counts separated by commas."""
    parts = text.split(",", MAX_SIZES)
    if len(parts) > MAX_SIZES:
        raise InvalidJobError("sizes", f"at most {MAX_SIZES} counts")
    return [to_int(part, "sizes", 1, MAX_PRELOAD) for part in parts]


@argument
def rate(text: str) -> Rate:
    """``COUNT/PERIOD``: ``100/1s``, ``5/250ms``, ``1000/1h``."""
    count, slash, period = text.partition("/")
    count = count.strip()
    if not slash or not (count.isascii() and count.isdigit()) or len(count) > 9:
        raise InvalidJobError("rate", f"{short(text)} is not a rate like 100/1s (a count, '/', a period)")
    try:
        seconds = parse_duration(period)
    except ValueError as exc:
        raise InvalidJobError("rate", str(exc)) from None
    return check_rate((int(count), seconds))
