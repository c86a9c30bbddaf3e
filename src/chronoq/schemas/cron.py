"""Cron schedules: the one place that knows cron semantics (the only importer of croniter).

Grammar (strict on purpose: a scheduler that silently reads a typo as "every minute" drops jobs):

* 5 fields ``minute hour day-of-month month day-of-week``, or 6 with seconds FIRST
  (``second minute hour day-of-month month day-of-week``, the order of Quartz, Spring and
  node-cron: ``*/5 * * * * *`` is every 5 seconds).
* Items: ``*``, ``N``, ``A-B`` (A <= B; no wrap-around), each optionally ``/STEP`` (1 <= STEP <=
  span of the field); ``N/STEP`` means ``N-max/STEP``; comma lists. Month names JAN-DEC and
  weekday names SUN-SAT (case-insensitive); weekday 7 is Sunday.
* Aliases ``@yearly @annually @monthly @weekly @daily @midnight @hourly``.
* Intervals ``@every DURATION``: ``@every 5s``, ``@every 1m30s``, ``@every 2h`` (``h m s`` parts,
  in that order, whole numbers), from 1 s to 24 h. Ticks are the instants a whole number of
  intervals after the Unix epoch (1970-01-01T00:00:00Z), so every timer and every restart
  computes the same ticks; elapsed time, so the zone and DST do not move them. Not supported:
  ``@reboot``, ``?``, ``L``, ``W``, ``#``, ``H``/``R`` (hashed/random), a year field.
* Day-of-month vs day-of-week: when both are restricted (neither covers its whole range) a day
  matches if EITHER matches (classic cron OR); otherwise both must match.

Time semantics: the expression names wall-clock times in ``timezone``. A wall time that does not
exist (spring-forward gap) fires once at the first instant after the gap; several ticks in one
gap collapse into that single instant. A wall time that happens twice (fall-back fold) fires once,
at its first instance. Ticks on a calendar day the zone skipped entirely (Pacific/Apia,
2011-12-30) do not fire at all. All returned instants are aware UTC datetimes.

croniter only enumerates *naive* wall times from a canonical expression of explicit integer lists
built here, so its zone handling (folds fire twice, Apia's phantom midnight) and its lenient
ranges (``5-5`` = every minute, ``5-1`` = wrap-around) are never reached.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

from chronoq.errors import ChronoqError
from chronoq.schemas.rules import short
from chronoq.schemas.wall_times import Gap, offset_change, resolve

__all__ = ["CronError", "CronSchedule", "CronTick", "ZoneError"]

MAX_EXPRESSION_LENGTH = 256
# Croniter steps allowed without producing a tick. Normal schedules need 1-2; gaps, folds and
# skipped days restart the enumeration past themselves, so this only trips on a bug.
_MAX_STEPS = 4096
_UTC = UTC
_SECOND = timedelta(seconds=1)
# Fixed reference for the "does this ever fire?" check at parse time.
_REFERENCE = datetime(2000, 1, 1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: Bounds of an ``@every`` interval. Longer periods are calendar periods: write them as cron in a
#: zone (``0 3 * * *``), where DST and month lengths are handled.
MIN_EVERY = timedelta(seconds=1)
MAX_EVERY = timedelta(hours=24)
_EVERY = re.compile(r"@every ((?:([0-9]{1,5})h)?(?:([0-9]{1,5})m)?(?:([0-9]{1,5})s)?)")
# Days scanned for the shortest gap between matching days: 28 years hold every combination of
# weekday, month and leap year the Gregorian calendar has (2000-2027: leap years every 4 years).
_DAY_SCAN = (date(2000, 1, 1), date(2028, 1, 1))

_ALIASES = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
            "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
            "@hourly": "0 * * * *"}
_MONTHS = {m: i for i, m in enumerate(["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"], 1)}
_WEEKDAYS = {d: i for i, d in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}
# (name, low, high, names): `*` is low..high; day-of-week `*` is 0..6, 7 (Sunday) only as a value.
_FIELDS = (
    ("minute", 0, 59, None), ("hour", 0, 23, None), ("day-of-month", 1, 31, None),
    ("month", 1, 12, _MONTHS), ("day-of-week", 0, 6, _WEEKDAYS), ("second", 0, 59, None),
)
# The fields of a 6-field expression, seconds first, as indices into _FIELDS.
_SIX_FIELDS = (5, 0, 1, 2, 3, 4)
_ITEM = re.compile(r"(?:(\*)|([0-9]{1,2}|[a-z]{3})(?:-([0-9]{1,2}|[a-z]{3}))?)(?:/([0-9]{1,3}))?")
_PRINTABLE = re.compile(r"[\x20-\x7e\t]*")
# IANA names: letters, digits, `_ + -`, `/`-separated components; no `..`, no leading `/`.
_ZONE_NAME = re.compile(r"[A-Za-z0-9_+\-]+(?:/[A-Za-z0-9_+\-]+)*")


class CronError(ChronoqError, ValueError):
    """A cron expression or time zone is invalid, or a schedule produced no tick in bounds."""


class ZoneError(CronError):
    """The time zone, not the expression, is invalid."""


def _short(text: object) -> str:
    # Never echo a 10 KB input back into a log line or an error.
    return short(text)


def _bad(expr: str, problem: str) -> CronError:
    return CronError(f"cron expression {_short(expr)}: {problem}")


def _parse_field(text: str, index: int, expr: str) -> set[int]:
    name, low, high, names = _FIELDS[index]
    top = 7 if index == 4 else high  # day-of-week accepts 7 (= Sunday) as a value

    def value(token: str) -> int:
        if token.isdigit():
            number = int(token)
        elif names is not None and token in names:
            number = names[token]
        else:
            raise _bad(expr, f"{name} field has unknown name {_short(token)}")
        if not low <= number <= top:
            raise _bad(expr, f"{name} value {number} out of range {low}-{top}")
        return number

    result: set[int] = set()
    for item in text.lower().split(","):
        match = _ITEM.fullmatch(item)
        if match is None:
            raise _bad(expr, f"bad {name} item {_short(item)}")
        star, first, last, step_text = match.groups()
        if star:
            start, stop = low, high
        else:
            start = value(first)
            stop = value(last) if last else (high if step_text else start)
            if start > stop:  # croniter would read this as wrap-around; we refuse it
                raise _bad(expr, f"{name} range {_short(item)} is reversed")
        step = int(step_text) if step_text else 1
        if not 1 <= step <= high - low + 1:
            raise _bad(expr, f"{name} step {step} must be 1-{high - low + 1}")
        result.update(range(start, stop + 1, step))
    return {0 if v == 7 else v for v in result} if index == 4 else result


def _canonical(expression: str) -> tuple[str, tuple[frozenset[int], ...]]:
    """Validate `expression`; return croniter's input (`*` or explicit integer lists per field,
    in croniter's order: minute hour day-of-month month day-of-week [second]) and the value set
    of each field in that order, seconds last ({0} for a 5-field expression)."""
    text = _ALIASES.get(expression.lower(), expression)
    if text.startswith("@"):
        raise _bad(expression, "unsupported alias (@reboot and others)")
    parts = text.split(" ")
    if len(parts) not in (5, 6):
        raise _bad(expression, f"expected 5 fields (or 6, seconds first), got {len(parts)}")
    sets: list[frozenset[int]] = [frozenset()] * 5 + [frozenset({0})]
    for index, part in zip(range(5) if len(parts) == 5 else _SIX_FIELDS, parts, strict=True):
        sets[index] = frozenset(_parse_field(part, index, expression))
    out = []
    for index in range(len(parts)):
        _, low, high, _ = _FIELDS[index]
        # `*` for a full set makes croniter AND the day fields; explicit lists of partial sets
        # get its OR, i.e. OR exactly when both day fields are restricted (our documented rule).
        full = sets[index] == set(range(low, high + 1))
        out.append("*" if full else ",".join(map(str, sorted(sets[index]))))
    return " ".join(out), tuple(sets)


def _every(expression: str) -> int:
    """The interval of ``@every DURATION`` in seconds."""
    match = _EVERY.fullmatch(expression.lower())
    if match is None or not match[1]:
        raise _bad(expression, "@every takes a duration of whole h, m and s parts, e.g. 5s, 1m30s, 2h")
    hours, minutes, seconds = (int(part or 0) for part in match.groups()[1:])
    interval = timedelta(hours=hours, minutes=minutes, seconds=seconds)
    if not MIN_EVERY <= interval <= MAX_EVERY:
        raise _bad(expression, "@every must be from 1s to 24h (longer periods: a cron expression)")
    return int(interval.total_seconds())


@dataclass(frozen=True)
class CronTick:
    """A tick and how the zone's DST rules placed it (what a preview shows).

    ``wall`` is the nominal local wall time the expression names. ``gap``: that wall time does
    not exist (spring forward), so the tick fires at the first instant after the gap, ``at``
    (other wall times in the same gap collapse into it). ``fold``: the wall time happens twice
    (fall back) and fires once, at its first instance; the second is not a tick.
    """

    at: datetime  # aware UTC
    local: datetime  # ``at`` in the schedule's zone
    wall: datetime  # naive
    gap: bool = False
    fold: bool = False


@dataclass(frozen=True)
class CronSchedule:
    """A validated cron expression evaluated as wall-clock time in an IANA zone (see module doc)."""

    expression: str
    timezone: str = "UTC"
    _croniter_expr: str = field(init=False, repr=False, compare=False)
    _sets: tuple[frozenset[int], ...] = field(init=False, repr=False, compare=False)
    _interval: int = field(init=False, repr=False, compare=False)  # seconds, for @every; else 0
    _zone: ZoneInfo = field(init=False, repr=False, compare=False)

    @classmethod
    def parse(cls, expression: str, timezone: str = "UTC") -> CronSchedule:
        return cls(expression, timezone)

    def __post_init__(self) -> None:
        expr = self.expression
        if not isinstance(expr, str):
            raise CronError(f"cron expression must be a string, not {type(expr).__name__}")
        if len(expr) > MAX_EXPRESSION_LENGTH:  # first: 10 KB fails before any regex or croniter
            raise CronError(f"cron expression longer than {MAX_EXPRESSION_LENGTH} characters")
        if not _PRINTABLE.fullmatch(expr):
            raise _bad(expr, "contains non-ASCII or control characters")
        expr = " ".join(expr.split())
        if not expr:
            raise CronError("cron expression is empty")
        zone = _load_zone(self.timezone)
        if expr.lower().startswith("@every"):
            object.__setattr__(self, "expression", expr)
            object.__setattr__(self, "_croniter_expr", "")
            object.__setattr__(self, "_sets", ())
            object.__setattr__(self, "_interval", _every(expr))
            object.__setattr__(self, "_zone", zone)
            return
        canonical, sets = _canonical(expr)
        try:
            # Never-firing expressions (`0 0 30 2 *`) pass field checks; croniter's bounded
            # (50-year) search from a fixed reference finds that out.
            croniter(canonical, _REFERENCE).get_next(datetime)
        except CroniterError as exc:
            raise _bad(expr, "never fires (no such date)") from exc
        object.__setattr__(self, "expression", expr)
        object.__setattr__(self, "_croniter_expr", canonical)
        object.__setattr__(self, "_sets", sets)
        object.__setattr__(self, "_interval", 0)
        object.__setattr__(self, "_zone", zone)

    def next_after(self, instant: datetime) -> datetime:
        """First tick strictly after `instant` (aware, any zone), as an aware UTC datetime."""
        return next(self._ticks_after(instant)).at

    def preview(self, instant: datetime, count: int) -> list[CronTick]:
        """The first `count` ticks strictly after `instant`, each with how DST placed it; fewer
        (or none) if the schedule has no tick left before year 10000."""
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        found: list[CronTick] = []
        ticks = self._ticks_after(instant)
        try:
            while len(found) < count:
                found.append(next(ticks))
        except CronError:
            pass  # no tick representable after the last one found
        return found

    def shortest_interval(self) -> timedelta:
        """The shortest time between two consecutive nominal ticks, counted on the wall clock
        (a DST change can bring two real instants closer, once a year)."""
        if self._interval:
            return timedelta(seconds=self._interval)
        minute, hour, dom, month, dow, second = self._sets
        times = sorted(h * 3600 + m * 60 + s for h in hour for m in minute for s in second)
        within = min((b - a for a, b in itertools.pairwise(times)), default=None)
        both = dom != frozenset(range(1, 32)) and dow != frozenset(range(7))
        days, day, previous, closest = 0, _DAY_SCAN[0], None, None
        while day < _DAY_SCAN[1]:
            weekday = (day.weekday() + 1) % 7
            matched = day.month in month and (
                (day.day in dom or weekday in dow) if both else (day.day in dom and weekday in dow))
            if matched:
                if previous is not None and (closest is None or days - previous < closest):
                    closest = days - previous
                previous = days
            day += timedelta(days=1)
            days += 1
        gaps = [v for v in (within, None if closest is None else closest * 86400 - times[-1] + times[0]) if v]
        # No two ticks in the scanned years (a date that comes once in decades): that span.
        return timedelta(seconds=min(gaps)) if gaps else _DAY_SCAN[1] - _DAY_SCAN[0]

    def ticks_between(self, start: datetime, end: datetime, limit: int) -> list[datetime]:
        """Ticks t with start < t <= end, oldest first, at most `limit` (work bounded by limit)."""
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        end_utc = _to_utc(end, "end")
        ticks: list[datetime] = []
        if limit == 0 or _to_utc(start, "start") >= end_utc:
            return ticks
        for resolved in self._ticks_after(start):
            tick = resolved.at
            if tick > end_utc:
                break
            ticks.append(tick)
            if len(ticks) >= limit:
                break
        return ticks

    # --- internals -------------------------------------------------------------------------

    def _walls_from(self, wall: datetime) -> Iterator[datetime]:
        """Nominal naive wall times >= `wall` (whole seconds), from croniter in naive mode."""
        try:
            itr = croniter(self._croniter_expr, wall - _SECOND)  # croniter is strictly-after
            while True:
                yield itr.get_next(datetime)
        except (CroniterError, OverflowError, ValueError) as exc:  # e.g. past year 9999
            raise _bad(self.expression, "no further tick") from exc

    def _every_after(self, instant: datetime) -> Iterator[CronTick]:
        """@every: the multiples of the interval since the Unix epoch, strictly after `instant`."""
        interval = timedelta(seconds=self._interval)
        k = (_to_utc(instant, "instant") - _EPOCH) // interval + 1
        try:
            while True:
                at = _EPOCH + k * interval
                local = at.astimezone(self._zone)
                yield CronTick(at, local, local.replace(tzinfo=None))
                k += 1
        except OverflowError as exc:  # past year 9999
            raise _bad(self.expression, "no further tick") from exc

    def _ticks_after(self, instant: datetime) -> Iterator[CronTick]:
        if self._interval:
            yield from self._every_after(instant)
            return
        last = _to_utc(instant, "instant")
        try:
            wall = last.astimezone(self._zone).replace(tzinfo=None, fold=0)
            first = wall.replace(tzinfo=self._zone).astimezone(_UTC)
            if first != last:
                # `instant` is in the second pass of a fold: every repeated wall time already
                # fired at its first instance, so resume at the wall time where the fold ends.
                transition = offset_change(self._zone, first, last)
                # utcoffset() is None only for a naive datetime; this one is aware.
                offset = first.astimezone(self._zone).utcoffset() or timedelta(0)
                start = (transition + offset).replace(tzinfo=None)
            else:
                start = wall.replace(microsecond=0) + _SECOND  # walls strictly after `instant`
        except OverflowError as exc:  # within a day of datetime.max/min
            raise CronError(f"no tick representable after {last.isoformat()}") from exc
        walls = self._walls_from(start)
        steps = 0
        while True:
            steps += 1
            if steps > _MAX_STEPS:
                raise _bad(self.expression, f"no tick in {_MAX_STEPS} steps after {last}")
            wall = next(walls)
            resolved = resolve(self._zone, wall)
            fold = gap = False
            if isinstance(resolved, Gap):
                midnight = datetime.combine(wall.date(), datetime.min.time())
                if resolved.start_wall <= midnight and resolved.end_wall >= midnight + timedelta(1):
                    # The whole calendar day never existed (Apia 2011-12-30): its ticks are not
                    # moved to another day, they simply do not happen.
                    walls = self._walls_from(midnight + timedelta(1))
                    continue
                tick, gap = resolved.transition, True
                # All other walls in this gap map to the same instant: skip past them at once.
                walls = self._walls_from(resolved.end_wall)
            else:
                tick, fold = resolved
            if tick > last:
                steps = 0
                last = tick
                yield CronTick(tick, tick.astimezone(self._zone), wall, gap, fold)


def _to_utc(value: datetime, what: str) -> datetime:
    if not isinstance(value, datetime):
        raise TypeError(f"{what} must be a datetime, not {type(value).__name__}")
    if value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, got naive {value.isoformat()}")
    return value.astimezone(_UTC)


def _load_zone(name: str) -> ZoneInfo:
    if not isinstance(name, str) or not name:
        raise ZoneError(f"time zone must be a non-empty IANA name, got {_short(name)}")
    # zoneinfo reads files named by the key, so refuse anything path-like before it looks.
    if len(name) > 64 or ".." in name or not _ZONE_NAME.fullmatch(name) or name == "localtime":
        raise ZoneError(f"time zone {_short(name)} is not a valid IANA name")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise ZoneError(f"unknown time zone {_short(name)}") from exc
