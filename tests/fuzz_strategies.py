"""Hypothesis strategies for the fuzzing suite (``tests/test_fuzz.py``): values the input contract
(``src/chronoq/schemas/rules.py``) accepts, next to values it refuses.

A ``valid_*`` strategy draws only values every entry point must accept, a ``hostile_*`` strategy
only values every entry point must refuse, so a property that mixes them knows the outcome to
expect without asking the code under test. The bounds are written out here rather than imported:
they are the contract the product is held to, not whatever the product happens to check.
"""

from __future__ import annotations

import json
import math
import operator
import string
import uuid
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from decimal import Decimal
from typing import Any

from hypothesis import strategies as st
from pydantic import BaseModel

from chronoq import RetryPolicy

# --- the contract's bounds ---------------------------------------------------------------------

QUEUE_FIRST = string.ascii_letters + string.digits
QUEUE_CHARS = QUEUE_FIRST + "_.:-"
QUEUE_MAX = 200
KEY_MAX = 200
MAX_PAYLOAD_BYTES = 256 * 1024
MAX_DEPTH = 64
INT_LOW, INT_HIGH = -(2**63), 2**64 - 1
#: Largest float magnitude a payload may hold: Postgres keeps JSON numbers as decimals, and a
#: float beyond 2**53 written with an exponent reads back as another (integer) number.
FLOAT_LIMIT = float(2**53)
MAX_DURATION = timedelta(days=36_525)  # 100 years
MAX_TIMEOUT = timedelta(minutes=25)
RESOLUTION = timedelta(milliseconds=1)  # durations are stored in whole milliseconds
MAX_ATTEMPTS = 1000
MAX_BACKFILL = 100_000
EARLIEST_RUN_AT = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_RUN_AT = datetime(3000, 1, 1, tzinfo=UTC)  # exclusive
MAX_SUBMISSION_BYTES = MAX_PAYLOAD_BYTES + 16 * 1024
#: A delay of this many seconds reaches past the supported range from any day this suite runs
#: on (a day of margin); anything up to MAX_DURATION stays inside it until the year 2899.
PAST_THE_RANGE_S = (LATEST_RUN_AT - datetime.now(UTC)).total_seconds() + 86_400
#: Every IANA zone the standard library knows ("localtime" is a file, not a zone name).
ZONE_NAMES = sorted(zoneinfo.available_timezones() - {"localtime"})
#: How an RFC 3339 time ends in UTC (section 5.6 allows a lower-case "z").
UTC_DESIGNATORS = ("Z", "z")


def _insert(text: str, piece: str, index: int) -> str:
    index = min(index, len(text))
    return text[:index] + piece + text[index:]


def _nested(depth: int, leaf: object = 1) -> object:
    value = leaf
    for level in range(depth):
        value = [value] if level % 2 else {"n": value}
    return value


# --- queue names and keys ------------------------------------------------------------------------


def valid_queue_names() -> st.SearchStrategy[str]:
    drawn = st.builds(operator.add, st.sampled_from(QUEUE_FIRST), st.text(QUEUE_CHARS, max_size=QUEUE_MAX - 1))
    edges = st.sampled_from(["a", "0", "emails.send", "A" * QUEUE_MAX, "a:b-c_d.e", "AMQ.upper", "amq", "amqx.q", "amq-q"])
    return st.one_of(drawn, edges).filter(lambda name: not name.startswith("amq."))


def hostile_queue_names(*, strings_only: bool = False) -> st.SearchStrategy[Any]:
    names = valid_queue_names()
    strings = st.one_of(
        st.just(""),
        names.map(lambda name: name + "\n"),  # passes a pattern that ends in `$`
        st.builds(_insert, names, st.characters(exclude_characters=QUEUE_CHARS), st.integers(0, QUEUE_MAX)),
        st.builds(operator.add, st.sampled_from("_.:-"), st.text(QUEUE_CHARS, max_size=40)),  # not a letter or digit first
        names.map(lambda name: ("amq." + name)[:QUEUE_MAX]),
        st.integers(QUEUE_MAX + 1, 5000).map(lambda n: "q" * n),
        st.sampled_from(["emails'; DROP TABLE chronoq.jobs; --", 'say "hi"', "émails", "with space", "a/b", "a#b",
                         "a*", "\uff51", "q\u200b", "q\ufeff", "q\r"]),
    )
    if strings_only:
        return strings
    return strings | st.sampled_from([None, 42, 4.2, True, b"emails", ["emails"], {"queue": "emails"}])


#: Printable characters (``str.isprintable``), any script, encodable as UTF-8.
PRINTABLE = st.characters(codec="utf-8", exclude_categories=["Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs"],
                          include_characters=" ").filter(str.isprintable)
#: Characters a key may not hold: control, format, separators, lone surrogates.
UNPRINTABLE = ["\n", "\r", "\t", "\x00", "\x1b", "\x7f", "\x85", "\xa0", "\u2028", "\u200b", "\ufeff", "\ud800",
               "\udcff", "\U000e0001"]


def valid_keys(max_size: int = KEY_MAX) -> st.SearchStrategy[str]:
    return st.one_of(
        st.text(PRINTABLE, min_size=1, max_size=max_size),
        st.builds(operator.mul, st.sampled_from(["k", "雪", "😀", " ", "'"]), st.integers(1, max_size)),
    )


def hostile_keys(*, strings_only: bool = False, unprintable: list[str] = UNPRINTABLE) -> st.SearchStrategy[Any]:
    strings = st.one_of(
        st.just(""),
        st.builds(operator.mul, st.sampled_from(["k", "雪"]), st.integers(KEY_MAX + 1, 5000)),
        st.builds(_insert, valid_keys(), st.sampled_from(unprintable), st.integers(0, KEY_MAX)),
        valid_keys().map(lambda key: key + "\n"),
    )
    if strings_only:
        return strings
    return strings | st.sampled_from([42, True, 4.2, b"key", ["key"]])


# --- payloads ------------------------------------------------------------------------------------

JSON_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=30)
JSON_FLOATS = st.floats(-FLOAT_LIMIT, FLOAT_LIMIT)
JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(INT_LOW, INT_HIGH), JSON_FLOATS, JSON_TEXT)
#: Finite floats a payload may not hold (beyond ±2**53).
FLOATS_TOO_LARGE = st.floats(min_value=FLOAT_LIMIT, exclude_min=True, allow_infinity=False) \
    | st.floats(max_value=-FLOAT_LIMIT, exclude_max=True, allow_infinity=False)


def json_trees(max_leaves: int = 25) -> st.SearchStrategy[Any]:
    return st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(JSON_TEXT, inner, max_size=5),
                        max_leaves=max_leaves)


class Receipt(BaseModel):
    """A pydantic model as a payload: stored as its JSON dump."""

    order: int
    note: str


class Text(str):
    """A str subclass as a payload: stored as the string."""


def valid_payloads() -> st.SearchStrategy[Any]:
    trees = json_trees()
    return st.one_of(
        trees,
        st.lists(trees, max_size=3).map(tuple),  # a tuple is a JSON array
        JSON_TEXT.map(Text),
        st.builds(Receipt, order=st.integers(INT_LOW, INT_HIGH), note=JSON_TEXT),
        st.integers(0, MAX_DEPTH).map(_nested),  # as deep as allowed
        st.integers(MAX_PAYLOAD_BYTES - 2 - 64, MAX_PAYLOAD_BYTES - 2).map(lambda n: "x" * n),  # up to the limit, quotes included
    )


def as_stored(payload: Any) -> Any:
    """The JSON value a valid payload is stored as."""
    if isinstance(payload, BaseModel):
        return payload.model_dump(mode="json")
    if isinstance(payload, dict):
        return {str(k): as_stored(v) for k, v in payload.items()}
    if isinstance(payload, (list, tuple)):
        return [as_stored(v) for v in payload]
    if isinstance(payload, str):
        return str(payload)
    return payload


_NOT_JSON = [b"bytes", bytearray(b"x"), {1, 2}, frozenset({"a"}), object(), datetime(2030, 1, 1, tzinfo=UTC),
             date(2030, 1, 1), Decimal("1.5"), complex(1, 2), uuid.UUID(int=1), timedelta(seconds=1), range(3), Ellipsis, print]
_BAD_TEXT = st.builds(_insert, JSON_TEXT, st.sampled_from(["\x00", "\ud800", "\udfff"]), st.integers(0, 30))


def hostile_payload_leaves() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.sampled_from([math.nan, math.inf, -math.inf, 2.0**56]),
        FLOATS_TOO_LARGE,
        st.integers(min_value=INT_HIGH + 1) | st.integers(max_value=INT_LOW - 1),
        _BAD_TEXT,
        st.sampled_from(_NOT_JSON),
        st.dictionaries(st.one_of(st.integers(), st.none(), st.booleans(), st.tuples(st.integers())), JSON_SCALARS,
                        min_size=1, max_size=2),  # keys that are not strings
        st.builds(lambda key, value: {key: value}, _BAD_TEXT, JSON_SCALARS),
        st.integers(MAX_DEPTH + 1, 400).map(_nested),
        st.integers(MAX_PAYLOAD_BYTES - 1, MAX_PAYLOAD_BYTES + 5000).map(lambda n: "x" * n),
    )


@st.composite
def _wrapped(draw: st.DrawFn, leaves: st.SearchStrategy[Any], siblings: st.SearchStrategy[Any]) -> Any:
    """A hostile leaf somewhere inside valid lists and objects."""
    value = draw(leaves)
    for _ in range(draw(st.integers(0, 3))):
        others = draw(st.lists(siblings, max_size=3))
        if draw(st.booleans()):
            others.insert(draw(st.integers(0, len(others))), value)
            value = others
        else:
            keys = draw(st.lists(JSON_TEXT, min_size=len(others), max_size=len(others)))
            container = dict(zip(keys, others, strict=True))
            container[draw(JSON_TEXT)] = value
            value = container
    return value


def hostile_payloads() -> st.SearchStrategy[Any]:
    return _wrapped(hostile_payload_leaves(), JSON_SCALARS)


# --- durations, times, counts ----------------------------------------------------------------------


def valid_durations(maximum: timedelta = MAX_DURATION, minimum: timedelta = timedelta(0)) -> st.SearchStrategy[Any]:
    low, high = minimum.total_seconds(), maximum.total_seconds()
    return st.one_of(
        st.timedeltas(min_value=minimum, max_value=maximum),
        st.integers(math.ceil(low), math.floor(high)),
        st.floats(low, high),
    )


def hostile_durations(maximum: timedelta = MAX_DURATION, *, positive: bool = False) -> st.SearchStrategy[Any]:
    high = maximum.total_seconds()
    options = [
        st.floats(max_value=-1e-3),
        st.integers(max_value=-1),
        st.timedeltas(max_value=timedelta(microseconds=-1)),
        st.sampled_from([math.nan, math.inf, 1e300, 10**400, 2**1100]),
        st.floats(min_value=high * 1.000001 + 1e-3, allow_nan=False),
        st.integers(min_value=math.floor(high) + 1),
        st.timedeltas(min_value=maximum + timedelta(microseconds=1)),
        st.booleans(),  # not a number of seconds
        st.sampled_from(["30", "1e3", "0", "30s", "nan", "", " 5"]) | st.integers(0, 10**6).map(str),  # not parsed
        st.sampled_from([Decimal("5"), [5], {"seconds": 5}, b"5", date(2030, 1, 1)]),
    ]
    if positive:  # zero, or below the millisecond a duration is stored in
        options.append(st.sampled_from([0, 0.0, -0.0, timedelta(0), timedelta(microseconds=999)])
                       | st.floats(min_value=1e-9, max_value=0.000999))
    return st.one_of(options)


def valid_delays() -> st.SearchStrategy[Any]:
    return valid_durations(MAX_DURATION)


def hostile_delays() -> st.SearchStrategy[Any]:
    return hostile_durations(timedelta(seconds=PAST_THE_RANGE_S))


def valid_timeouts() -> st.SearchStrategy[Any]:
    return valid_durations(MAX_TIMEOUT, RESOLUTION)


def hostile_timeouts() -> st.SearchStrategy[Any]:
    return hostile_durations(MAX_TIMEOUT, positive=True)


def offsets() -> st.SearchStrategy[timezone]:
    return st.integers(-(23 * 60 + 59), 23 * 60 + 59).map(lambda minutes: timezone(timedelta(minutes=minutes)))


def zones() -> st.SearchStrategy[tzinfo]:
    return st.one_of(st.just(UTC), offsets(), st.sampled_from(ZONE_NAMES).map(zoneinfo.ZoneInfo))


def valid_run_ats() -> st.SearchStrategy[datetime]:
    return st.one_of(
        st.datetimes(min_value=datetime(1970, 1, 3), max_value=datetime(2999, 12, 29), timezones=zones()),
        st.sampled_from([EARLIEST_RUN_AT, LATEST_RUN_AT - timedelta(microseconds=1),
                         datetime(1970, 1, 1, 1, tzinfo=timezone(timedelta(hours=1)))]),
    )


class BrokenZone(tzinfo):
    """A caller's tzinfo whose offset fails."""

    def utcoffset(self, dt: datetime | None) -> timedelta:
        raise RuntimeError("no offset today")

    def dst(self, dt: datetime | None) -> timedelta | None:
        return None

    def __repr__(self) -> str:
        return "BrokenZone()"


class NoOffsetZone(BrokenZone):
    """A tzinfo that makes a datetime naive after all (its offset is None)."""

    def utcoffset(self, dt: datetime | None) -> None:
        return None

    def __repr__(self) -> str:
        return "NoOffsetZone()"


class WildZone(BrokenZone):
    """A tzinfo whose offset is beyond a day (Python refuses to use it)."""

    def utcoffset(self, dt: datetime | None) -> timedelta:
        return timedelta(hours=30)

    def __repr__(self) -> str:
        return "WildZone()"


def hostile_run_ats() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2999, 12, 31)),  # naive
        st.datetimes(max_value=datetime(1969, 12, 30), timezones=zones()),
        st.datetimes(min_value=datetime(3000, 1, 2), timezones=zones()),
        # Built at draw time: hypothesis hashes what it samples, and these fail to hash.
        st.builds(datetime.replace, st.just(datetime.max), tzinfo=st.just(timezone(-timedelta(hours=23)))),
        st.builds(datetime.replace, st.just(datetime.min), tzinfo=st.just(timezone(timedelta(hours=23)))),
        st.builds(datetime, st.just(2030), st.just(1), st.just(1),
                  tzinfo=st.sampled_from([BrokenZone(), NoOffsetZone(), WildZone()])),
        st.sampled_from([date(2030, 1, 1), time(9, tzinfo=UTC), True, "2030-01-01T00:00:00Z", "tomorrow"]),
        st.integers(0, 32_503_680_000) | st.floats(0, 3.2e10),  # epoch seconds
    )


def hostile_counts(low: int, high: int) -> st.SearchStrategy[Any]:
    return st.one_of(st.integers(max_value=low - 1), st.integers(min_value=high + 1),
                     st.sampled_from([True, False, str(low), float(low), Decimal(low), [low], 2**70]))


def valid_retries() -> st.SearchStrategy[RetryPolicy]:
    return st.builds(RetryPolicy, max_attempts=st.integers(1, MAX_ATTEMPTS), backoff_base=valid_durations(),
                     backoff_cap=valid_durations(), jitter=st.floats(0, 1))


def _changed_retry(name: str, value: Any) -> RetryPolicy:
    return RetryPolicy().model_copy(update={name: value})


def hostile_retries() -> st.SearchStrategy[Any]:
    """Policies changed after they were built (``model_copy`` skips validation), and non-policies.
    ``max_attempts`` is left alone: an explicit ``max_attempts`` argument replaces it."""
    return st.one_of(
        st.builds(_changed_retry, st.sampled_from(["backoff_base", "backoff_cap"]), hostile_durations()),
        st.builds(_changed_retry, st.just("jitter"), st.sampled_from([math.nan, -0.1, 1.5, math.inf, "0.2", True])),
        st.sampled_from([{"max_attempts": 3}, "fast", 3, True]),
    )


ONCE_MISFIRES = ["skip", "run_once"]
CRON_MISFIRES = ["skip", "run_once", "backfill"]
OVERLAPS = ["allow", "skip"]


def hostile_choices(*extra: Any) -> st.SearchStrategy[Any]:
    return st.sampled_from(["", "SKIP", "Run_Once", " skip", "never", 1, True, b"skip", ["skip"], *extra])


# --- cron expressions and zones ---------------------------------------------------------------------

_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_WEEKDAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
#: (low, high, largest value a range may end on, names and the number of the first). Days of the
#: month stop at 28 so that every expression fires in every month; weekday 7 is Sunday.
_CRON_FIELDS = [(0, 59, 59, None), (0, 23, 23, None), (1, 28, 28, None), (1, 12, 12, (_MONTHS, 1)),
                (0, 6, 7, (_WEEKDAYS, 0)), (0, 59, 59, None)]
CRON_ALIASES = ["@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"]


@st.composite
def _cron_item(draw: st.DrawFn, spec: tuple) -> str:
    low, high, top, names = spec

    def value(lo: int, hi: int) -> tuple[int, str]:
        number = draw(st.integers(lo, hi))
        if names is not None and 0 <= number - names[1] < len(names[0]) and draw(st.booleans()):
            name = names[0][number - names[1]]
            return number, draw(st.sampled_from([name, name.upper(), name.title()]))
        return number, str(number)

    step = draw(st.integers(1, high - low + 1))
    kind = draw(st.sampled_from(["*", "*/step", "value", "value/step", "range", "range/step"]))
    if kind == "*":
        return "*"
    if kind == "*/step":
        return f"*/{step}"
    if kind == "value":
        return value(low, top)[1]
    if kind == "value/step":  # N/STEP means N-max/STEP: N must not pass the field's top
        return f"{value(low, high)[1]}/{step}"
    first, first_text = value(low, min(high, top))
    _, last_text = value(first, top)
    return f"{first_text}-{last_text}" + (f"/{step}" if kind == "range/step" else "")


@st.composite
def valid_crons(draw: st.DrawFn, *, aliases: bool = True) -> str:
    if aliases and draw(st.integers(0, 9)) == 0:
        alias = draw(st.sampled_from(CRON_ALIASES))
        return draw(st.sampled_from([alias, alias.upper(), f" {alias} "]))
    # 6 fields take the seconds first.
    specs = [_CRON_FIELDS[5], *_CRON_FIELDS[:5]] if draw(st.booleans()) else _CRON_FIELDS[:5]
    fields = [",".join(draw(st.lists(_cron_item(spec), min_size=1, max_size=3))) for spec in specs]
    gap = st.sampled_from([" ", "  ", "\t", " \t "])
    text = fields[0]
    for part in fields[1:]:
        text += draw(gap) + part
    return draw(st.sampled_from(["", " "])) + text + draw(st.sampled_from(["", " ", "\t"]))


BAD_CRONS = [
    "", "   ", "* * * *", "* * * * * * *", "60 * * * *", "* 24 * * *", "* * 0 * *", "* * 32 * *", "* * * 13 *",
    "* * * * 8", "5-1 * * * *", "*/0 * * * *", "*/61 * * * *", "0 0 30 2 *", "0 0 31 4,6,9,11 *", "@reboot",
    "@every 5", "@every 0s", "@every 25h", "@every 1.5h",
    "? * * * *", "L * * * *", "* * L * *", "0 0 * * MON#2", "H * * * *", "* * * * * 60", "\uff10 * * * *",
    "*\n* * * *", "* * * * *\x00", "* * * jan-foo *", "1-2-3 * * * *", "1,,2 * * * *", "1, 2 * * * *",
    "* * * * * *\r", "R * * * *", "0 0 1 1 * 2030", "-1 * * * *", "1-60/5 * * * *", "* * * * sun-sat/8",
    "* " * 200, "x" * 300,
]


def hostile_crons(*, strings_only: bool = False) -> st.SearchStrategy[Any]:
    strings = st.one_of(
        st.sampled_from(BAD_CRONS),
        valid_crons(aliases=False).map(lambda c: c + " 0 0"),  # 7 or 8 fields
        st.builds(lambda minute, rest: f"{minute} {rest}", st.integers(60, 99), st.just("* * * *")),
        st.builds(_insert, valid_crons(), st.sampled_from(["é", "\n", "\x0b", "\u2003", "#"]), st.integers(0, 50)),
    )
    if strings_only:
        return strings
    return strings | st.sampled_from([5, b"* * * * *", ["*"], None])


BAD_ZONES = ["", "Mars/Olympus_Mons", "../etc/passwd", "/etc/localtime", "UTC\n", "Europe/Berlin ", " UTC",
             "localtime", "Europe//Berlin", "A" * 65, "Etc/GMT+15", "UTC\x00", "Europe/Berlin/", "\uff35\uff34\uff23"]


def hostile_zones(*, strings_only: bool = False) -> st.SearchStrategy[Any]:
    strings = st.sampled_from(BAD_ZONES)
    return strings if strings_only else strings | st.sampled_from([0, b"UTC", ["UTC"]])


# --- Producer calls -----------------------------------------------------------------------------------


def compact(value: Any, limit: int = 120) -> str:
    """``repr`` with long strings cut short, for readable falsifying examples."""
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]!r}... ({len(value)} chars)"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{compact(k, 40)}: {compact(v, limit)}" for k, v in list(value.items())[:20]) + "}"
    if isinstance(value, (list, tuple)) and len(repr(value)) > 4 * limit:
        return f"{type(value).__name__} of {len(value)}: " + repr(value)[: 4 * limit] + "..."
    return repr(value)


@dataclass(frozen=True)
class Call:
    """A Producer call: ``method`` with ``kwargs``, and which arguments were drawn hostile (none:
    the call must succeed; some: it must be refused, naming one of them)."""

    method: str
    kwargs: dict[str, Any]
    hostile: frozenset[str]

    def __repr__(self) -> str:
        return f"Call({self.method}, {compact(self.kwargs)}, hostile={sorted(self.hostile)})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # hypothesis prints examples with this
        printer.text(repr(self))


@dataclass(frozen=True)
class Argument:
    """How one argument of a call is drawn: as fragments of keyword arguments."""

    valid: st.SearchStrategy[dict[str, Any]]
    hostile: st.SearchStrategy[dict[str, Any]]
    required: bool = False


def _one(name: str, strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return strategy.map(lambda value: {name: value})


def _argument(name: str, valid: st.SearchStrategy[Any], hostile: st.SearchStrategy[Any], required: bool = False) -> Argument:
    return Argument(_one(name, valid), _one(name, hostile), required)


def _when() -> Argument:
    """``run_at`` or ``delay``: one of them, or neither; hostile: a bad one, or both."""
    return Argument(
        valid=st.one_of(_one("run_at", valid_run_ats()), _one("delay", valid_delays())),
        hostile=st.one_of(_one("run_at", hostile_run_ats()), _one("delay", hostile_delays()),
                          st.builds(lambda at, delay: {"run_at": at, "delay": delay}, valid_run_ats(), valid_delays())),
    )


def _common_arguments() -> dict[str, Argument]:
    return {
        "queue": _argument("queue", valid_queue_names(), hostile_queue_names(), required=True),
        "payload": _argument("payload", valid_payloads(), hostile_payloads()),
        "key": _argument("key", valid_keys(), hostile_keys()),
        "max_attempts": _argument("max_attempts", st.integers(1, MAX_ATTEMPTS), hostile_counts(1, MAX_ATTEMPTS)),
        "retry": _argument("retry", valid_retries(), hostile_retries()),
        "timeout": _argument("timeout", valid_timeouts(), hostile_timeouts()),
        "misfire_grace": _argument("misfire_grace", valid_durations(), hostile_durations()),
    }


def enqueue_arguments() -> dict[str, Argument]:
    return {**_common_arguments(), "when": _when(),
            "misfire": _argument("misfire", st.sampled_from(ONCE_MISFIRES), hostile_choices("backfill"))}


def schedule_arguments() -> dict[str, Argument]:
    return {
        **_common_arguments(),
        "cron": _argument("cron", valid_crons(), hostile_crons(), required=True),
        "timezone": _argument("timezone", st.sampled_from(ZONE_NAMES), hostile_zones()),
        "misfire": _argument("misfire", st.sampled_from(CRON_MISFIRES), hostile_choices()),
        "max_backfill": _argument("max_backfill", st.integers(0, MAX_BACKFILL), hostile_counts(0, MAX_BACKFILL)),
        "overlap": _argument("overlap", st.sampled_from(OVERLAPS), hostile_choices()),
        # Every valid expression has ticks at least a second apart: a jitter up to 1 s always fits.
        "jitter": _argument("jitter", valid_durations(timedelta(seconds=1)), hostile_durations()),
    }


@st.composite
def calls(draw: st.DrawFn, method: str, *, hostile: bool | None = None) -> Call:
    """A call of ``method`` (enqueue or schedule). ``hostile``: True, one or two hostile
    arguments; False, none; None, either."""
    arguments = enqueue_arguments() if method == "enqueue" else schedule_arguments()
    names = sorted(arguments)
    some = st.sets(st.sampled_from(names), min_size=1, max_size=2)
    choice = {True: some, False: st.just(set()), None: st.just(set()) | some}[hostile]
    bad = frozenset(draw(choice))
    kwargs: dict[str, Any] = {}
    for name in names:
        argument = arguments[name]
        if name in bad:
            kwargs.update(draw(argument.hostile))
        elif argument.required or draw(st.booleans()):
            kwargs.update(draw(argument.valid))
    return Call(method, kwargs, bad)


#: Fields an InvalidJobError may name for each hostile argument.
NAMED_FIELDS = {
    "when": {"run_at", "delay", "job"},
    "retry": {"retry", "max_attempts", "backoff_base", "backoff_cap", "jitter"},
}


def names_a_hostile_argument(field_name: str, hostile: frozenset[str]) -> bool:
    for name in hostile:
        if field_name in NAMED_FIELDS.get(name, {name}) or field_name.startswith(f"{name}.") \
                or field_name.startswith(f"{name}[") or field_name == f"{name} key":
            return True
    return False


def strings_in(value: Any, found: list[str] | None = None, depth: int = 0) -> list[str]:
    """Every string inside ``value`` (keys included), for the echo check of error messages."""
    found = [] if found is None else found
    if depth > 500:
        return found
    if isinstance(value, str):
        found.append(value)
    elif isinstance(value, dict):
        for k, v in value.items():
            strings_in(k, found, depth + 1)
            strings_in(v, found, depth + 1)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for item in value:
            strings_in(item, found, depth + 1)
    elif isinstance(value, (Raw, KeySlot, Stamp)):
        found.append(value.text)
    return found


# --- AMQP submissions ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Raw:
    """JSON text written into a submission as it is: what a Python value cannot say (NaN, 1e400)."""

    text: str


@dataclass(frozen=True)
class KeySlot:
    """A valid idempotency key; made unique when the body is written, so that examples and the
    submissions of one batch never share a job."""

    text: str


@dataclass(frozen=True)
class Stamp:
    """A valid ``run_at``: the instant, and how it is written."""

    instant: datetime
    text: str


ABSENT = object()


def to_json(value: Any, *, ascii_only: bool, key: Callable[[str], str]) -> str:
    """JSON text of ``value``; a lone surrogate stays in (the body is then not valid UTF-8, or
    escaped when ``ascii_only``)."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, KeySlot):
        return json.dumps(key(value.text), ensure_ascii=ascii_only)
    if isinstance(value, Stamp):
        return json.dumps(value.text)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}[repr(value)]
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=ascii_only)
    if isinstance(value, dict):
        return "{" + ",".join(f"{to_json(k, ascii_only=ascii_only, key=key)}:{to_json(v, ascii_only=ascii_only, key=key)}"
                              for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(to_json(v, ascii_only=ascii_only, key=key) for v in value) + "]"
    raise TypeError(f"no JSON for {type(value).__name__}")


@dataclass(frozen=True)
class Submission:
    """One AMQP submission. ``fields`` is None for a body given as bytes (``raw``). ``valid`` is
    what the contract says of it; None where the contract leaves it open (a byte order mark,
    a field given twice): then only the fate's consistency with the parser is checked."""

    fields: dict[str, Any] | None
    valid: bool | None
    raw: bytes = b""
    ascii_only: bool = True
    headers: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return (self.fields or {}).get("kind", "once")

    def body(self, unique: str) -> bytes:
        """The bytes published; a KeySlot key becomes ``unique`` + its text, cut to 200."""
        if self.fields is None:
            return self.raw
        text = to_json(self.fields, ascii_only=self.ascii_only, key=lambda tail: (unique + tail)[:KEY_MAX])
        return text.encode("utf-8", "surrogatepass")

    def __repr__(self) -> str:
        headers = {k: (f"<{len(v)} chars>" if isinstance(v, str) and len(v) > 80 else v) for k, v in self.headers.items()}
        body = compact(self.fields) if self.fields is not None else repr(self.raw[:300])
        return f"Submission(valid={self.valid}, body={body}, ascii_only={self.ascii_only}, headers={compact(headers)})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # hypothesis prints examples with this
        printer.text(repr(self))


def _maybe(strategy: st.SearchStrategy[Any], *, null: bool = True) -> st.SearchStrategy[Any]:
    """Absent, null (where the field is optional), or a value."""
    return st.one_of(st.just(ABSENT), st.none(), strategy) if null else st.just(ABSENT) | strategy


def _seconds(low: float, high: float) -> st.SearchStrategy[float | int]:
    return st.floats(low, high) | st.integers(math.ceil(low), math.floor(high))


def _stamps(designators: tuple[str, ...] = UTC_DESIGNATORS) -> st.SearchStrategy[Stamp]:
    def written(instant: datetime, offset: timezone, separator: str, zulu: str) -> Stamp:
        local = instant.astimezone(offset)
        text = local.isoformat(sep=separator)
        if local.utcoffset() == timedelta(0) and zulu:
            text = text.removesuffix("+00:00") + zulu
        return Stamp(instant.astimezone(UTC), text)

    return st.builds(written, valid_run_ats(), offsets() | st.just(UTC), st.sampled_from(["T", "t", " "]),
                     st.sampled_from(["", *designators]))


_BAD_NUMBERS = [Raw("NaN"), Raw("Infinity"), Raw("-Infinity"), Raw("1e400"), Raw("-1e999"), "30", True, [1], {"s": 1}]
_JSON_NON_STRINGS = st.sampled_from([None, 42, -1, 4.2, True, False, [], ["x"], {}, {"a": 1}, Raw("1e400")])


def _json_payload_leaves() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.sampled_from([Raw("NaN"), Raw("Infinity"), Raw("-Infinity"), Raw("1e400"), Raw("-1e999"),
                         Raw("1" + "0" * 5000)]),
        st.integers(min_value=INT_HIGH + 1, max_value=10**40) | st.integers(min_value=-(10**40), max_value=INT_LOW - 1),
        FLOATS_TOO_LARGE,
        _BAD_TEXT,
        st.integers(MAX_DEPTH + 1, 3000).map(lambda n: Raw("[" * n + "]" * n)),
        st.integers(MAX_PAYLOAD_BYTES - 1, MAX_PAYLOAD_BYTES + 20_000).map(lambda n: "x" * n),
    )


def _fragment(name: str, strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return strategy.map(lambda value: {} if value is ABSENT else {name: value})


def _submission_fields(kind: str) -> dict[str, Argument]:
    json_payloads = st.one_of(json_trees(), st.integers(0, MAX_DEPTH).map(_nested),
                              st.integers(MAX_PAYLOAD_BYTES - 2 - 64, MAX_PAYLOAD_BYTES - 2).map(lambda n: "x" * n))
    fields = {
        "queue": Argument(_fragment("queue", valid_queue_names()),
                          _fragment("queue", st.just(ABSENT) | hostile_queue_names(strings_only=True) | _JSON_NON_STRINGS),
                          required=True),
        "payload": Argument(_fragment("payload", _maybe(json_payloads)),
                            _fragment("payload", _wrapped(_json_payload_leaves(), JSON_SCALARS))),
        "key": Argument(_fragment("key", _maybe(valid_keys(KEY_MAX).map(KeySlot))),
                        _fragment("key", hostile_keys(strings_only=True) | _JSON_NON_STRINGS.filter(lambda v: v is not None))),
        "max_attempts": Argument(_fragment("max_attempts", _maybe(st.integers(1, MAX_ATTEMPTS))),
                                 _fragment("max_attempts", st.sampled_from([0, -5, 1001, 2**63, 5.0, *_BAD_NUMBERS,
                                                                            Raw("123456789012345678901234567890")]))),
        "timeout_s": Argument(_fragment("timeout_s", _maybe(_seconds(0.001, MAX_TIMEOUT.total_seconds()))),
                              _fragment("timeout_s", st.sampled_from([0, -1, 0.0005, 1500.5, 1e300, *_BAD_NUMBERS]))),
        "misfire_grace_s": Argument(_fragment("misfire_grace_s", _maybe(_seconds(0, MAX_DURATION.total_seconds()))),
                                    _fragment("misfire_grace_s", st.sampled_from([-1, -0.5, 3.2e9, *_BAD_NUMBERS]))),
    }
    if kind == "once":
        delays = _seconds(0, MAX_DURATION.total_seconds())
        fields |= {
            "kind": Argument(_fragment("kind", _maybe(st.just("once"), null=False)),
                             _fragment("kind", st.sampled_from(["sometimes", "", "ONCE", "cron", 1, None, True, ["once"]]))),
            "when": Argument(
                st.one_of(st.just({}), _one("run_at", st.none() | _stamps()), _one("delay_s", st.none() | delays)),
                st.one_of(
                    _one("run_at", st.sampled_from(BAD_RUN_AT_TEXTS) | st.sampled_from([1_900_000_000, 1.9e9, True, [], {}])),
                    _one("delay_s", st.sampled_from([-1, -1e-3, PAST_THE_RANGE_S, 1e300, *_BAD_NUMBERS])),
                    st.builds(lambda at, delay: {"run_at": at, "delay_s": delay}, _stamps(), delays),
                ),
            ),
            "misfire": Argument(_fragment("misfire", _maybe(st.sampled_from(ONCE_MISFIRES), null=False)),
                                _fragment("misfire", st.sampled_from(["backfill", "", "SKIP", None, 1]))),
            "extra": Argument(st.just({}), st.sampled_from([{"priority": 5}, {"Queue": "x"}, {"queue ": "x"},
                                                            {"cron": "* * * * *"}, {"delay": 5}, {"jitter_s": 5}])),
        }
    else:
        fields |= {
            "kind": Argument(st.just({"kind": "cron"}), st.sampled_from([{}, {"kind": "once"}, {"kind": "CRON"}]), required=True),
            "cron": Argument(_one("cron", valid_crons()),
                             _fragment("cron", st.just(ABSENT) | hostile_crons(strings_only=True) | _JSON_NON_STRINGS),
                             required=True),
            "timezone": Argument(_fragment("timezone", _maybe(st.sampled_from(ZONE_NAMES), null=False)),
                                 _fragment("timezone", hostile_zones(strings_only=True) | _JSON_NON_STRINGS)),
            "misfire": Argument(_fragment("misfire", _maybe(st.sampled_from(CRON_MISFIRES), null=False)),
                                _fragment("misfire", st.sampled_from(["", "SKIP", "never", None, 1]))),
            "max_backfill": Argument(_fragment("max_backfill", _maybe(st.integers(0, MAX_BACKFILL))),
                                     _fragment("max_backfill", st.sampled_from([-1, 100_001, "5", 5.0, True, Raw("1e400")]))),
            "overlap": Argument(_fragment("overlap", _maybe(st.sampled_from(OVERLAPS), null=False)),
                                _fragment("overlap", st.sampled_from(["", "ALLOW", "deny", None, 1]))),
            "jitter_s": Argument(_fragment("jitter_s", _maybe(_seconds(0, 1))),
                                 _fragment("jitter_s", st.sampled_from([-1, -1e-3, 1e12, *_BAD_NUMBERS]))),
            "extra": Argument(st.just({}),
                              st.sampled_from([{"priority": 5}, {"delay_s": 5}, {"run_at": "2030-01-01T00:00:00Z"}])),
        }
    return fields


BAD_RUN_AT_TEXTS = [
    "2030-01-01T00:00:00", "2030-01-01", "3000-01-01T00:00:00Z", "1969-12-31T23:59:59Z", "yesterday", "",
    "2030-13-01T00:00:00Z", "+12030-01-01T00:00:00Z", "2030-01-01T00:00:00+24:00", "1900000000",
    "2030-01-01T00:00:00 Z", "2030-01-01T00:00:00.1234567890Z", "2030-01-01T00:00:00+01:00:30", "2030-02-30T09:00:00Z",
]

#: Bodies that are not a JSON object, or not JSON at all.
BAD_BODIES = [b"", b"null", b"[]", b'[{"queue": "q"}]', b'"q"', b"42", b"true", b"{", b'{"queue": "q"',
              b'{"queue": "q"} trailing', b"\xff\xfe", b'{"queue": "q", "payload": "' + b"x" * MAX_SUBMISSION_BYTES + b'"}']
#: Bodies the contract does not decide: RFC 8259 lets a parser ignore a byte order mark, and
#: leaves a name given twice to the implementation.
OPEN_BODIES = [b'\xef\xbb\xbf{"queue": "q", "delay_s": 3600}', b'{"queue": "q", "queue": "amq.q"}',
               b'{"queue": "amq.q", "queue": "q", "delay_s": 3600}']


def _bodies() -> st.SearchStrategy[tuple[bytes, bool | None]]:
    garbage = st.binary(max_size=200).filter(lambda body: not body.strip().startswith(b"{"))
    return st.one_of(st.sampled_from(BAD_BODIES).map(lambda b: (b, False)), garbage.map(lambda b: (b, False)),
                     st.sampled_from(OPEN_BODIES).map(lambda b: (b, None)))


_HEADER_TEXT = st.text(st.characters(codec="utf-8"), max_size=200)
_HEADER_VALUES = st.one_of(_HEADER_TEXT, st.integers(-(2**63), 2**63 - 1), st.booleans(), st.none(),
                           st.floats(width=32, allow_nan=False, allow_infinity=False),  # pamqp sends a float32
                           st.lists(st.text(st.characters(codec="utf-8"), max_size=20), max_size=3),
                           st.dictionaries(st.text(QUEUE_CHARS, min_size=1, max_size=10), st.integers(0, 9), max_size=3))
#: A header near the frame size: merged with the rejection's own headers it no longer fits (a
#: copy once broke the timer's connection that way), but the sender's frame still holds it.
BIG_HEADER_SIZES = st.integers(95_000, 130_500)


@st.composite
def amqp_headers(draw: st.DrawFn) -> dict[str, Any]:
    headers = draw(st.dictionaries(st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=40),
                                   _HEADER_VALUES, max_size=4))
    if draw(st.integers(0, 3)) == 0:
        headers["x-big"] = "h" * draw(BIG_HEADER_SIZES)
    if draw(st.integers(0, 5)) == 0:  # a sender that forges chronoq's own headers
        headers.update({"x-chronoq-error": "forged", "x-chronoq-reason": "forged", "x-chronoq-headers-dropped": -1})
    return headers


@st.composite
def submissions(draw: st.DrawFn) -> Submission:
    shape = draw(st.sampled_from(["once"] * 5 + ["cron"] * 3 + ["body"] * 2))
    headers = draw(amqp_headers())
    if shape == "body":
        raw, valid = draw(_bodies())
        return Submission(None, valid, raw=raw, headers=headers)
    arguments = _submission_fields(shape)
    some = st.sets(st.sampled_from(sorted(arguments)), min_size=1, max_size=2)
    bad = draw(st.just(set()) | some)
    fields: dict[str, Any] = {}
    for name, argument in arguments.items():
        fields.update(draw(argument.hostile if name in bad else argument.valid))
    return Submission(fields, not bad, ascii_only=draw(st.booleans()), headers=headers)


# --- command lines -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CommandLine:
    """``chronoq enqueue|schedule`` arguments (settings flags are added by the test), whether they
    are all valid, and what a valid one stores."""

    args: list[str]
    valid: bool
    expected: dict[str, Any]

    def __repr__(self) -> str:
        return f"CommandLine({[compact(a, 80) for a in self.args]}, valid={self.valid})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # hypothesis prints examples with this
        printer.text(repr(self))


def argv_safe(text: str) -> bool:
    """What a process's argv can hold: no NUL, and lone surrogates only as Python decodes
    undecodable bytes (U+DC80-U+DCFF)."""
    return "\x00" not in text and all(not "\ud800" <= c <= "\udfff" or "\udc80" <= c <= "\udcff" for c in text)


_ARGV_UNPRINTABLE = [c for c in UNPRINTABLE if argv_safe(c)]
_DURATION_TEXTS = st.one_of(st.integers(0, 10**6).map(lambda n: f"{n}s"), st.integers(0, 10**4).map(lambda n: f"{n}m"),
                            st.sampled_from(["30s", "5m", "1h30m", "250ms", "2d", "1.5", "0"]))
_TIMEOUT_TEXTS = st.integers(1, 1500).map(lambda n: f"{n}s") | st.sampled_from(["1ms", "250ms", "1m", "25m", "24m60s"])
_BAD_PAYLOAD_TEXTS = ["NaN", "Infinity", "-Infinity", "{", "", "1e400", "123456789012345678901234567890",
                      '"a\\u0000b"', '"\\ud800"', "[" * 100 + "]" * 100, '{"a": NaN}', "'single'", "None",
                      '"' + "x" * MAX_PAYLOAD_BYTES + '"', "1" + "0" * 5000, '{"a": 1,}']
_BAD_DURATION_TEXTS = ["-5s", "forever", "nan", "inf", "-inf", "1e300", "99999999999d", "", "5 s", "1h-5m", "s", "0x10",
                       "1" + "0" * 400, "-0s"]


@st.composite
def command_lines(draw: st.DrawFn) -> CommandLine:
    command = draw(st.sampled_from(["enqueue", "schedule"]))
    names = ["queue", "payload", "key", "max-attempts", "timeout"] + (
        ["when"] if command == "enqueue" else ["cron", "tz", "misfire", "misfire-grace", "max-backfill", "overlap", "jitter"])
    bad = draw(st.just(set()) | st.sets(st.sampled_from(names), min_size=1, max_size=2))
    args: list[str] = []
    expected: dict[str, Any] = {}

    def option(name: str, valid: st.SearchStrategy[str], hostile: st.SearchStrategy[str], required: bool = False) -> str | None:
        if name in bad:
            text = draw(hostile)
        elif required or draw(st.booleans()):
            text = draw(valid)
        else:
            return None
        args.append(f"--{name}={text}")
        return text

    tree = draw(json_trees(max_leaves=8))
    payload = option("payload", st.just(to_json(tree, ascii_only=draw(st.booleans()), key=str)),
                     st.sampled_from(_BAD_PAYLOAD_TEXTS))
    expected["payload"] = tree if payload is not None else None
    expected["key"] = option("key", valid_keys(),
                             hostile_keys(strings_only=True, unprintable=_ARGV_UNPRINTABLE).filter(argv_safe))
    attempts = option("max-attempts", st.integers(1, MAX_ATTEMPTS).map(str),
                      st.sampled_from(["0", "1001", "-1", "abc", "1e3", "5.0", "", "9" * 40]))
    expected["max_attempts"] = int(attempts) if attempts is not None and "max-attempts" not in bad else 5
    option("timeout", _TIMEOUT_TEXTS, st.sampled_from(["0s", "0", "26m", "-1s", "1e400", "0.5ms", "forever"]))
    if command == "enqueue":
        if "when" in bad:
            args.append(draw(st.sampled_from([f"--delay={t}" for t in [*_BAD_DURATION_TEXTS, "400000d"]]
                                              + [f"--at={t}" for t in ["2030-01-01T00:00:00", "3000-01-01T00:00:00+00:00",
                                                                       "1969-12-31T23:00:00+00:00", "yesterday",
                                                                       "1900000000", "", "2030-02-30T00:00:00Z"]])))
        else:
            at = draw(_stamps(UTC_DESIGNATORS)).text
            args += draw(st.sampled_from([[], ["--delay=" + draw(_DURATION_TEXTS)], ["--at=" + at]]))
    else:
        expected["cron"] = option("cron", valid_crons(), hostile_crons(strings_only=True).filter(argv_safe), required=True)
        expected["timezone"] = option("tz", st.sampled_from(ZONE_NAMES),
                                      hostile_zones(strings_only=True).filter(argv_safe)) or "UTC"
        expected["misfire"] = option("misfire", st.sampled_from(CRON_MISFIRES),
                                     st.sampled_from(["", "SKIP", "never"])) or "run_once"
        option("misfire-grace", _DURATION_TEXTS, st.sampled_from(["-1s", "nan", "40000d", "forever"]))
        backfill = option("max-backfill", st.integers(0, MAX_BACKFILL).map(str), st.sampled_from(["-1", "100001", "x", ""]))
        expected["max_backfill"] = int(backfill) if backfill is not None and "max-backfill" not in bad else 100
        expected["overlap"] = option("overlap", st.sampled_from(OVERLAPS), st.sampled_from(["", "deny", "ALLOW"])) or "allow"
        option("jitter", st.sampled_from(["0s", "250ms", "1s", "0.5"]), st.sampled_from(["-1s", "nan", "40000d", "forever"]))
    queue = draw(hostile_queue_names(strings_only=True).filter(argv_safe) if "queue" in bad else valid_queue_names())
    expected["queue"] = queue
    return CommandLine([command, *args, "--", queue], not bad, expected)
