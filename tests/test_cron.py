"""Tests for chronoq.schemas.cron: the wrapper's rules, not croniter's."""

from __future__ import annotations

import dataclasses
import itertools
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cache
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from chronoq.schemas.cron import CronError, CronSchedule

UTC = UTC
NY = ZoneInfo("America/New_York")
FAR = datetime(2100, 1, 1, tzinfo=UTC)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def local(zone: str, *args: int, fold: int = 0) -> datetime:
    return datetime(*args, tzinfo=ZoneInfo(zone), fold=fold)


def ticks(expr: str, zone: str, start: datetime, n: int, end: datetime = FAR) -> list[datetime]:
    return CronSchedule.parse(expr, zone).ticks_between(start, end, n)


def walls(values: list[datetime], zone: str) -> list[str]:
    return [v.astimezone(ZoneInfo(zone)).isoformat() for v in values]


# --- DST vectors --------------------------------------------------------------------------


def test_spring_forward_gap_fires_once_at_first_instant_after_gap() -> None:
    s = CronSchedule.parse("30 2 * * *", "America/New_York")
    got = s.next_after(local("America/New_York", 2026, 3, 7, 12))
    assert got == utc(2026, 3, 8, 7, 0) and got.tzinfo is UTC
    assert got.astimezone(NY).isoformat() == "2026-03-08T03:00:00-04:00"
    assert s.next_after(got) == utc(2026, 3, 9, 6, 30)  # back to 02:30 EDT the next day


def test_lord_howe_half_hour_gap() -> None:
    got = ticks("15 2 * * *", "Australia/Lord_Howe", local("Australia/Lord_Howe", 2026, 10, 3, 12), 2)
    assert walls(got, "Australia/Lord_Howe") == [
        "2026-10-04T02:30:00+11:00", "2026-10-05T02:15:00+11:00"]


def test_many_ticks_in_one_gap_collapse_to_one() -> None:
    got = ticks("*/15 * * * *", "America/New_York", local("America/New_York", 2026, 3, 8, 1, 30), 4)
    assert walls(got, "America/New_York") == [
        "2026-03-08T01:45:00-05:00", "2026-03-08T03:00:00-04:00",
        "2026-03-08T03:15:00-04:00", "2026-03-08T03:30:00-04:00"]


def test_fall_back_fold_fires_once_at_first_instance() -> None:
    got = ticks("30 1 * * *", "America/New_York", utc(2026, 10, 31, 12), 3)
    assert got == [utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30), utc(2026, 11, 3, 6, 30)]


def test_next_after_inside_second_pass_of_fold_resumes_after_fold() -> None:
    s = CronSchedule.parse("*/5 * * * *", "America/New_York")
    # 01:10 EST: 01:15..01:55 already fired during the EDT pass, so the next tick is 02:00 EST.
    assert s.next_after(local("America/New_York", 2026, 11, 1, 1, 10, fold=1)) == utc(2026, 11, 1, 7)
    # Same wall time in the first pass: the next is simply 01:15 EDT.
    assert s.next_after(local("America/New_York", 2026, 11, 1, 1, 10)) == utc(2026, 11, 1, 5, 15)


def test_every_second_across_fold_is_bounded_and_fast() -> None:
    s = CronSchedule.parse("* * * * * *", "America/New_York")
    began = time.perf_counter()
    assert s.next_after(local("America/New_York", 2026, 11, 1, 1, 0, fold=1)) == utc(2026, 11, 1, 7)
    assert s.next_after(local("America/New_York", 2026, 3, 8, 1, 59, 59)) == utc(2026, 3, 8, 7)
    assert time.perf_counter() - began < 0.5


def test_hourly_across_fold_each_wall_hour_once() -> None:
    start = local("America/New_York", 2026, 10, 31, 23, 30)
    end = local("America/New_York", 2026, 11, 1, 23, 30)  # 25 real hours later
    got = ticks("0 * * * *", "America/New_York", start, 100, end)
    hours = [t.astimezone(NY).hour for t in got]
    assert hours == list(range(24))  # the 25-hour day still has 24 wall hours, each once
    gaps = [b - a for a, b in itertools.pairwise(got)]
    assert gaps.count(timedelta(hours=2)) == 1  # 01:00 EDT -> 02:00 EST (01:00 EST dropped)
    assert all(g == timedelta(hours=1) for g in gaps if g != timedelta(hours=2))
    assert got[1:3] == [utc(2026, 11, 1, 5), utc(2026, 11, 1, 7)]


def test_apia_skipped_day_has_no_phantom_tick() -> None:
    got = ticks("0 12 * * *", "Pacific/Apia", utc(2011, 12, 28), 4)
    assert walls(got, "Pacific/Apia") == [
        "2011-12-28T12:00:00-10:00", "2011-12-29T12:00:00-10:00",
        "2011-12-31T12:00:00+14:00", "2012-01-01T12:00:00+14:00"]


def test_apia_every_second_across_skipped_day() -> None:
    got = ticks("* * * * * *", "Pacific/Apia", local("Pacific/Apia", 2011, 12, 29, 23, 59, 58), 3)
    assert walls(got, "Pacific/Apia") == [
        "2011-12-29T23:59:59-10:00", "2011-12-31T00:00:00+14:00", "2011-12-31T00:00:01+14:00"]


def test_paris_daily_across_fall_back() -> None:
    got = ticks("0 20 * * *", "Europe/Paris", utc(2022, 10, 29), 3)
    assert got == [utc(2022, 10, 29, 18), utc(2022, 10, 30, 19), utc(2022, 10, 31, 19)]
    assert walls(got, "Europe/Paris")[0].endswith("+02:00")
    assert walls(got, "Europe/Paris")[1].endswith("+01:00")


def test_berlin_sunday_noon_after_spring_forward() -> None:
    s = CronSchedule.parse("0 12 * * 0", "Europe/Berlin")
    got = s.next_after(local("Europe/Berlin", 2022, 3, 24))
    assert got.astimezone(ZoneInfo("Europe/Berlin")).isoformat() == "2022-03-27T12:00:00+02:00"


def test_santiago_midnight_gap_and_fold() -> None:
    got = ticks("0 0 * * *", "America/Santiago", local("America/Santiago", 2022, 9, 10, 0, 30), 2)
    assert walls(got, "America/Santiago") == ["2022-09-11T01:00:00-03:00", "2022-09-12T00:00:00-03:00"]
    # 2022-04-03 00:00 -03 fell back to 2022-04-02 23:00 -04: 23:30 on 04-02 happens twice.
    got = ticks("30 23 * * *", "America/Santiago", utc(2022, 4, 1, 12), 3)
    assert got == [utc(2022, 4, 2, 2, 30), utc(2022, 4, 3, 2, 30), utc(2022, 4, 4, 3, 30)]


def test_lord_howe_half_hour_fold() -> None:
    # 2026-04-05 02:00 +11 -> 01:30 +10:30: 01:30-02:00 happens twice, 01:15 only once.
    assert ticks("15 1 * * *", "Australia/Lord_Howe", utc(2026, 4, 4), 2) == [
        utc(2026, 4, 4, 14, 15), utc(2026, 4, 5, 14, 45)]
    assert walls(ticks("45 1 * * *", "Australia/Lord_Howe", utc(2026, 4, 4), 2), "Australia/Lord_Howe") == [
        "2026-04-05T01:45:00+11:00", "2026-04-06T01:45:00+10:30"]


# --- grammar ------------------------------------------------------------------------------


def test_seconds_field_is_first() -> None:
    # Quartz / Spring / node-cron order: `*/15 * * * * *` is every 15 seconds.
    got = ticks("*/15 * * * * *", "UTC", utc(2026, 1, 1), 100, utc(2026, 1, 1, 0, 1))
    assert got == [utc(2026, 1, 1, 0, 0, s) for s in (15, 30, 45)] + [utc(2026, 1, 1, 0, 1)]
    got = ticks("*/2 * * * * *", "Europe/Berlin", utc(2026, 1, 1, 0, 0, 58), 5)
    assert [t.second for t in got] == [0, 2, 4, 6, 8] and all(t.second % 2 == 0 for t in got)
    assert CronSchedule.parse("30 0 0 * * *").next_after(utc(2026, 1, 1)) == utc(2026, 1, 1, 0, 0, 30)
    # The last field is the day of week, as in 5 fields: 6 (Saturday) is not a second.
    assert CronSchedule.parse("0 0 12 * * 6").next_after(utc(2026, 1, 1)) == utc(2026, 1, 3, 12)
    with pytest.raises(CronError, match="day-of-week value 30"):
        CronSchedule.parse("0 0 * * * 30")


def test_every_interval_counts_from_the_unix_epoch() -> None:
    s = CronSchedule.parse("@every 1m30s", "America/New_York")
    got = s.ticks_between(utc(2026, 1, 1), utc(2026, 1, 1, 0, 5), 10)
    # 2026-01-01T00:00:00Z is a whole number of 90 s intervals after the epoch.
    assert got == [utc(2026, 1, 1, 0, 1, 30), utc(2026, 1, 1, 0, 3), utc(2026, 1, 1, 0, 4, 30)]
    assert s.next_after(utc(2026, 1, 1, 0, 1, 29, 999999)) == utc(2026, 1, 1, 0, 1, 30)
    # Elapsed time: a DST change in the zone does not move or drop a tick.
    hourly = CronSchedule.parse("@every 1h", "America/New_York").ticks_between(utc(2026, 3, 8, 5), utc(2026, 3, 8, 9), 10)
    assert hourly == [utc(2026, 3, 8, h) for h in (6, 7, 8, 9)]
    seven = ticks("@every 7s", "UTC", utc(2026, 1, 1), 3)
    assert all(int(t.timestamp()) % 7 == 0 for t in seven)
    assert CronSchedule.parse("@EVERY   2h").expression == "@EVERY 2h"
    assert CronSchedule.parse("@every 24h").shortest_interval() == timedelta(days=1)


@pytest.mark.parametrize("expr", ["@every", "@every 0s", "@every 25h", "@every 86401s", "@every 1.5h", "@every 5",
                                  "@every 1s2m", "@every -5s", "@every 5 s", "@every 1d", "@every 5ms"])
def test_every_refuses_bad_intervals(expr: str) -> None:
    with pytest.raises(CronError, match="@every"):
        CronSchedule.parse(expr)


def test_shortest_interval_between_nominal_ticks() -> None:
    assert CronSchedule.parse("*/2 * * * * *").shortest_interval() == timedelta(seconds=2)
    assert CronSchedule.parse("0,10 * * * *").shortest_interval() == timedelta(minutes=10)
    assert CronSchedule.parse("0 9 * * MON-FRI").shortest_interval() == timedelta(days=1)
    assert CronSchedule.parse("0 9 * * MON").shortest_interval() == timedelta(days=7)
    assert CronSchedule.parse("55 23 * * *").shortest_interval() == timedelta(days=1)
    assert CronSchedule.parse("0 0 29 2 *").shortest_interval() == timedelta(days=4 * 365 + 1)
    # Across midnight: 23:50 then 00:10 the next day.
    assert CronSchedule.parse("10,50 0,23 * * *").shortest_interval() == timedelta(minutes=20)
    assert CronSchedule.parse("0 0 1,31 * *").shortest_interval() == timedelta(days=1)  # the 31st, then the 1st


def test_preview_marks_ticks_moved_by_a_gap_and_kept_once_in_a_fold() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    spring = CronSchedule.parse("30 2 * * *", "Europe/Berlin").preview(utc(2026, 3, 28, 12), 2)
    assert [(t.at, t.local.isoformat(), t.wall.isoformat(), t.gap, t.fold) for t in spring] == [
        (utc(2026, 3, 29, 1), "2026-03-29T03:00:00+02:00", "2026-03-29T02:30:00", True, False),
        (utc(2026, 3, 30, 0, 30), "2026-03-30T02:30:00+02:00", "2026-03-30T02:30:00", False, False)]
    autumn = CronSchedule.parse("30 2 * * *", "Europe/Berlin").preview(utc(2026, 10, 24, 12), 2)
    assert [(t.at, t.local, t.gap, t.fold) for t in autumn] == [
        (utc(2026, 10, 25, 0, 30), datetime(2026, 10, 25, 2, 30, tzinfo=berlin), False, True),
        (utc(2026, 10, 26, 1, 30), datetime(2026, 10, 26, 2, 30, tzinfo=berlin), False, False)]
    assert CronSchedule.parse("0 * * * *").preview(utc(2026, 1, 1), 0) == []
    # The preview is the timer's enumeration: the same instants as next_after, one by one.
    s = CronSchedule.parse("*/20 1-3 * * *", "Europe/Berlin")
    at, chained = utc(2026, 3, 28, 23), []
    for _ in range(8):
        at = s.next_after(at)
        chained.append(at)
    assert [t.at for t in s.preview(utc(2026, 3, 28, 23), 8)] == chained


def test_names_and_aliases() -> None:
    s = CronSchedule.parse("0 9 * jan-FEB Mon-fri")
    assert s.next_after(utc(2026, 1, 2, 9)) == utc(2026, 1, 5, 9)  # Fri -> next Monday
    assert s.next_after(utc(2026, 2, 27, 9)) == utc(2027, 1, 1, 9)
    start = utc(2026, 5, 17, 13, 14)
    for alias, plain in [("@yearly", "0 0 1 1 *"), ("@annually", "0 0 1 1 *"), ("@monthly", "0 0 1 * *"),
                         ("@weekly", "0 0 * * 0"), ("@daily", "0 0 * * *"), ("@midnight", "0 0 * * *"),
                         ("@HOURLY", "0 * * * *")]:
        assert ticks(alias, "Asia/Kathmandu", start, 5) == ticks(plain, "Asia/Kathmandu", start, 5)


def test_ranges_steps_lists_are_literal() -> None:
    # croniter reads `5-5` as the whole cycle and `59/15` historically as :00/:15/...; we don't.
    assert ticks("5-5 * * * *", "UTC", utc(2026, 1, 1), 2) == [utc(2026, 1, 1, 0, 5), utc(2026, 1, 1, 1, 5)]
    assert ticks("59/15 * * * *", "UTC", utc(2026, 1, 1), 2) == [
        utc(2026, 1, 1, 0, 59), utc(2026, 1, 1, 1, 59)]
    assert [t.minute for t in ticks("10-30/10,45 0 * * *", "UTC", utc(2026, 1, 1), 4)] == [10, 20, 30, 45]
    assert [t.weekday() for t in ticks("0 0 * * 5-7", "UTC", utc(2026, 1, 1), 3)] == [4, 5, 6]


def test_day_of_month_or_day_of_week_when_both_restricted() -> None:
    got = ticks("0 0 13 * 5", "UTC", utc(2026, 2, 1), 4)  # the 13th OR Fridays
    assert [t.day for t in got] == [6, 13, 20, 27]
    got = ticks("0 0 13 * *", "UTC", utc(2026, 2, 1), 2)
    assert [t.month for t in got] == [2, 3]
    got = ticks("0 0 * * 0-7", "UTC", utc(2026, 1, 31, 12), 2)  # full weekday set = unrestricted
    assert [t.day for t in got] == [1, 2]


@pytest.mark.parametrize("expr", [
    "", "   ", "@reboot", "@every 5", "* * * *", "* * * * * * *", "60 * * * *", "* 24 * * *",
    "* * 0 * *", "* * 32 * *", "* * * 0 *", "* * * 13 *", "* * * * 8", "* * * * * 60",
    "*/0 * * * *", "*/61 * * * *", "5-1 * * * *", "* * * * fri-mon", "* * * dec-jan *",
    "-5 * * * *", "1,,2 * * * *", "*/x * * * *", "hello", "a b c d e", "* * * * mon#2",
    "* * L * *", "* * 15W * *", "* * ? * *", "H * * * *", "R * * * *", "* * * jan mon,funday",
    "0 0 30 2 *", "0 0 31 4 *", "0 0 31 2,4,6,9,11 *", "0 0 * * *\n", "0\u00a00 * * *",
    "\uff10 0 * * *",  # a fullwidth digit zero
])
def test_rejects_bad_expressions(expr: str) -> None:
    with pytest.raises(CronError):
        CronSchedule.parse(expr)


def test_rejects_huge_expression_fast() -> None:
    began = time.perf_counter()
    with pytest.raises(CronError, match="256"):
        CronSchedule.parse("1," * 5000 + "2 * * * *")
    assert time.perf_counter() - began < 0.05
    assert issubclass(CronError, ValueError)
    with pytest.raises(CronError):
        CronSchedule.parse(None)  # type: ignore[arg-type]


@pytest.mark.parametrize("zone", [
    "", "Mars/Olympus", "../../etc/passwd", "/etc/localtime", "America/../Europe/Paris",
    "localtime", "America", "America/New York", "Europe/Paris\x00", None,
])
def test_rejects_bad_timezones(zone: object) -> None:
    with pytest.raises(CronError) as info:
        CronSchedule.parse("0 0 * * *", zone)  # type: ignore[arg-type]
    assert "zone" in str(info.value)
    if zone:
        assert repr(zone)[1:-1][:20] in str(info.value)


def test_value_semantics_and_inputs() -> None:
    s = CronSchedule.parse("  0\t9  * * 1-5 ", "Asia/Kolkata")
    assert s.expression == "0 9 * * 1-5" and s.timezone == "Asia/Kolkata"
    assert s == CronSchedule("0 9 * * 1-5", "Asia/Kolkata")
    assert hash(s) == hash(CronSchedule.parse("0 9 * * 1-5", "Asia/Kolkata"))
    # Validation runs on direct construction and dataclasses.replace too, not only parse().
    with pytest.raises(CronError):
        CronSchedule("61 * * * *")
    with pytest.raises(CronError, match="Mars"):
        dataclasses.replace(s, timezone="Mars/Olympus")
    assert s != CronSchedule.parse("0 9 * * 1-5")
    # Any aware zone in, UTC out; 09:00 IST is 03:30 UTC.
    assert s.next_after(local("America/New_York", 2026, 1, 4, 12)) == utc(2026, 1, 5, 3, 30)
    with pytest.raises(ValueError, match="aware"):
        s.next_after(datetime(2026, 1, 1))
    with pytest.raises(CronError):
        CronSchedule.parse("0 0 1 1 *").next_after(utc(9999, 6, 1))
    with pytest.raises(CronError):
        CronSchedule.parse("0 0 * * *", "Pacific/Kiritimati").next_after(datetime.max.replace(tzinfo=UTC))


def test_ticks_between_bounds_and_limit() -> None:
    s = CronSchedule.parse("0 * * * *")
    assert s.ticks_between(utc(2026, 1, 1), utc(2026, 1, 1, 3), 10) == [utc(2026, 1, 1, h) for h in (1, 2, 3)]
    assert s.ticks_between(utc(2026, 1, 1), utc(2026, 1, 1, 3), 2) == [utc(2026, 1, 1, 1), utc(2026, 1, 1, 2)]
    assert s.ticks_between(utc(2026, 1, 1), utc(2026, 1, 1), 10) == []
    assert s.ticks_between(utc(2026, 1, 1, 3), utc(2026, 1, 1), 10) == []
    assert s.ticks_between(utc(2026, 1, 1), utc(2030, 1, 1), 0) == []
    with pytest.raises(ValueError):
        s.ticks_between(utc(2026, 1, 1), utc(2030, 1, 1), -1)


# --- properties ---------------------------------------------------------------------------

ZONES = ["America/New_York", "Australia/Lord_Howe", "Pacific/Apia", "America/Santiago",
         "Europe/Berlin", "Asia/Kolkata", "Asia/Kathmandu", "UTC"]
MONTH_NAMES = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
DAY_NAMES = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]


@dataclass(frozen=True)
class Expr:
    text: str
    sets: tuple[frozenset[int], ...]  # minute, hour, dom, month, dow(0=Sun)[, second] (first in the text)


@st.composite
def field(draw: st.DrawFn, low: int, high: int, names: list[str] | None = None,
          top: int | None = None) -> tuple[str, set[int]]:
    top = high if top is None else top

    def val(v: int) -> str:
        if names and v <= high and draw(st.booleans()):
            return names[v - low]
        return str(v)

    kind = draw(st.sampled_from(["star", "one", "list", "range", "starstep", "rangestep", "startstep"]))
    if kind == "star":
        return "*", set(range(low, high + 1))
    if kind == "one":
        v = draw(st.integers(low, top))
        return val(v), {v}
    if kind == "list":
        vs = draw(st.lists(st.integers(low, top), min_size=1, max_size=4))
        return ",".join(val(v) for v in vs), set(vs)
    a = draw(st.integers(low, top))
    b = draw(st.integers(a, top))
    step = draw(st.integers(1, high - low + 1))
    if kind == "range":
        return f"{val(a)}-{val(b)}", set(range(a, b + 1))
    if kind == "starstep":
        return f"*/{step}", set(range(low, high + 1, step))
    if kind == "rangestep":
        return f"{val(a)}-{val(b)}/{step}", set(range(a, b + 1, step))
    a = min(a, high)
    return f"{val(a)}/{step}", set(range(a, high + 1, step))


@st.composite
def expressions(draw: st.DrawFn, seconds: bool | None = None) -> Expr:
    # Hour `*` often, so ticks land inside the gap/fold hours the windows cross.
    parts = [draw(field(0, 59)), draw(st.one_of(st.just(("*", set(range(24)))), field(0, 23)))]
    # Keep the day fields dense most of the time so windows contain ticks.
    parts.append(draw(st.one_of(st.just(("*", set(range(1, 32)))), field(1, 31))))
    parts.append(draw(st.one_of(st.just(("*", set(range(1, 13)))), field(1, 12, MONTH_NAMES))))
    dow_text, dow = draw(st.one_of(st.just(("*", set(range(7)))), field(0, 6, DAY_NAMES, top=7)))
    parts.append((dow_text, {v % 7 for v in dow}))
    if seconds if seconds is not None else draw(st.booleans()):
        parts.append(draw(st.sampled_from([("0", {0}), ("*/20", {0, 20, 40}), ("5,35", {5, 35})])))
    text = [p[0] for p in parts]
    if len(text) == 6:
        text = text[5:] + text[:5]  # the seconds field comes first
    return Expr(" ".join(text), tuple(frozenset(p[1]) for p in parts))


def matches(e: Expr, wall: datetime) -> bool:
    minute, hour, dom, month, dow = e.sets[:5]
    second_ok = wall.second in e.sets[5] if len(e.sets) == 6 else wall.second == 0
    cron_dow = (wall.weekday() + 1) % 7
    if dom != set(range(1, 32)) and dow != set(range(7)):
        day_ok = wall.day in dom or cron_dow in dow
    else:
        day_ok = wall.day in dom and cron_dow in dow
    return (second_ok and wall.microsecond == 0 and wall.minute in minute and wall.hour in hour
            and wall.month in month and day_ok)


def never_fires(e: Expr) -> bool:
    """Independent oracle: only day-of-month AND month can be unsatisfiable (e.g. Feb 30)."""
    dom, month, dow = e.sets[2], e.sets[3], e.sets[4]
    if dom == set(range(1, 32)) or dow != set(range(7)):
        return False  # OR with a real weekday set, or any day: always fires
    longest = max(29 if m == 2 else 30 if m in (4, 6, 9, 11) else 31 for m in month)
    return min(dom) > longest


def parse_or_discard(e: Expr, zone: str) -> CronSchedule:
    try:
        s = CronSchedule.parse(e.text, zone)
    except CronError:
        assert never_fires(e), e.text  # the only generated expressions allowed to be rejected
        assume(False)
        raise
    assert not never_fires(e), e.text
    return s


@cache
def transitions(zone: str) -> list[datetime]:
    """UTC instants 2000-2036 where the zone's offset changes (daily scan + bisection)."""
    z = ZoneInfo(zone)

    def off(t: datetime) -> timedelta | None:
        return t.astimezone(z).utcoffset()

    found, t = [], utc(2000, 1, 1)
    while t < utc(2036, 1, 1):
        nxt = t + timedelta(days=1)
        if off(t) != off(nxt):
            lo, hi = t, nxt
            while hi - lo > timedelta(minutes=1):
                mid = lo + (hi - lo) / 2
                lo, hi = (mid, hi) if off(mid) == off(lo) else (lo, mid)
            found.append(hi.replace(second=0, microsecond=0))
        t = nxt
    return found


@st.composite
def window_starts(draw: st.DrawFn, span: timedelta = timedelta(hours=36)) -> tuple[str, datetime]:
    """A zone and a start instant; half the time within `span` before one of its transitions."""
    if draw(st.booleans()):
        zone = draw(st.sampled_from([z for z in ZONES if transitions(z)]))
        base = draw(st.sampled_from(transitions(zone)))
        return zone, base - timedelta(seconds=draw(st.integers(0, int(span.total_seconds()))))
    zone = draw(st.sampled_from(ZONES))
    return zone, draw(st.datetimes(datetime(2000, 1, 1), datetime(2035, 12, 31), timezones=st.just(UTC)))


def is_gap_end(zone: ZoneInfo, t: datetime) -> bool:
    before = (t - timedelta(seconds=1)).astimezone(zone).utcoffset()
    after = t.astimezone(zone).utcoffset()
    assert before is not None and after is not None
    return after > before


PROP = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROP
@given(expressions(), window_starts())
def test_property_ticks_are_sane(e: Expr, where: tuple[str, datetime]) -> None:
    zone_name, start = where
    zone = ZoneInfo(zone_name)
    s = parse_or_discard(e, zone_name)
    got = [s.next_after(start)]
    for _ in range(24):
        got.append(s.next_after(got[-1]))
    assert all(t.tzinfo is UTC for t in got)
    assert got[0] > start and all(a < b for a, b in itertools.pairwise(got))
    assert s.ticks_between(start, got[-1], 100) == got
    for a, b in itertools.pairwise(got):
        # Any instant strictly between two ticks leads to the later one.
        assert s.next_after(a + (b - a) / 2) == b
    local_walls = [t.astimezone(zone).replace(tzinfo=None) for t in got]
    assert len(set(local_walls)) == len(local_walls)  # no wall time fires twice
    # The preview is the same enumeration, with marks that say what DST did to each tick.
    previewed = s.preview(start, len(got))
    assert [p.at for p in previewed] == got
    for p in previewed:
        assert p.local == p.at.astimezone(zone)
        assert p.gap == (p.local.replace(tzinfo=None) != p.wall)
        late = p.wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
        assert p.fold == (not p.gap and late != p.at), (e.text, zone_name, p)
    for t, wall in zip(got, local_walls, strict=True):
        if is_gap_end(zone, t) and not matches(e, wall):
            continue  # a tick moved forward out of a gap
        assert matches(e, wall), (e.text, zone_name, t)
        # A repeated wall time fires at its first instance (fold=0 is the earlier one).
        assert wall.replace(tzinfo=zone, fold=0).astimezone(UTC) == t, (e.text, zone_name, t)


def reference(e: Expr, zone: ZoneInfo, start: datetime, end: datetime) -> list[datetime]:
    """Brute force over every UTC minute in (start, end], written independently of croniter."""
    out = []
    u = start.replace(second=0, microsecond=0) + timedelta(minutes=1)
    while u <= end:
        loc = u.astimezone(zone)
        wall = loc.replace(tzinfo=None)
        second_pass = loc.fold == 1 and wall.replace(tzinfo=zone, fold=0).utcoffset() != loc.utcoffset()
        if not second_pass and matches(e, wall):
            out.append(u)
        elif is_gap_end(zone, u):
            o1 = (u - timedelta(minutes=1)).astimezone(zone).utcoffset()
            o2 = loc.utcoffset()
            assert o1 is not None and o2 is not None
            g, g_end = u.replace(tzinfo=None) + o1, u.replace(tzinfo=None) + o2
            day_gone = {d for d in {g.date(), (g_end - timedelta(minutes=1)).date()}
                        if g <= datetime.combine(d, datetime.min.time())
                        and g_end >= datetime.combine(d + timedelta(days=1), datetime.min.time())}
            while g < g_end:
                if matches(e, g) and g.date() not in day_gone:
                    out.append(u)
                    break
                g += timedelta(minutes=1)
        u += timedelta(minutes=1)
    return out


@PROP
@given(expressions(seconds=False), st.data())
def test_property_matches_brute_force(e: Expr, data: st.DataObject) -> None:
    hours = data.draw(st.integers(1, 30))
    # Near a transition the window always contains it, so gaps and folds are really crossed.
    zone_name, start = data.draw(window_starts(timedelta(hours=hours)))
    end = start + timedelta(hours=hours)
    got = parse_or_discard(e, zone_name).ticks_between(start, end, 10_000)
    assert got == reference(e, ZoneInfo(zone_name), start, end), (e.text, zone_name)


def test_reference_sees_apia_skipped_day() -> None:
    e = Expr("0 12 * * *", (frozenset({0}), frozenset({12}), frozenset(range(1, 32)),
                            frozenset(range(1, 13)), frozenset(range(7))))
    got = reference(e, ZoneInfo("Pacific/Apia"), utc(2011, 12, 29), utc(2011, 12, 31, 12))
    got_days = [t.astimezone(ZoneInfo("Pacific/Apia")).date() for t in got]
    assert got_days == [date(2011, 12, 29), date(2011, 12, 31)]


@PROP
@given(expressions(), st.datetimes(datetime(2000, 1, 1), datetime(2060, 1, 1), timezones=st.just(UTC)))
def test_property_shortest_interval_is_the_least_gap_between_ticks_in_utc(e: Expr, start: datetime) -> None:
    s = parse_or_discard(e, "UTC")
    shortest = s.shortest_interval()
    got = s.preview(start, 200)
    gaps = [b.at - a.at for a, b in itertools.pairwise(got)]
    assert all(g >= shortest for g in gaps), (e.text, shortest, min(gaps))
    # A schedule that fires every day shows its shortest gap (within a day, or across midnight)
    # in any two whole days of ticks: there it is exact, not merely a lower bound.
    every_day = e.sets[2] == set(range(1, 32)) and e.sets[3] == set(range(1, 13)) and e.sets[4] == set(range(7))
    if every_day and len(got) == 200 and got[-1].at - got[0].at >= timedelta(days=3):
        assert min(gaps) == shortest, (e.text, shortest, min(gaps))
