"""Wall-clock arithmetic in an IANA zone: where a local wall time falls (once, twice in a fold,
or not at all in a gap) and when the offset changes. Cron schedules (cron.py) build on it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo


@dataclass(frozen=True)
class Gap:
    """Naive local wall times in ``[start_wall, end_wall)`` do not exist: the clock jumped forward."""

    transition: datetime  # UTC instant the clock jumped forward; first instant after the gap
    start_wall: datetime
    end_wall: datetime


def _offset(zone: ZoneInfo, ts: int) -> timedelta | None:
    return datetime.fromtimestamp(ts, UTC).astimezone(zone).utcoffset()


def offset_change(zone: ZoneInfo, before: datetime, after: datetime) -> datetime:
    """The UTC instant in (before, after] where the offset changes (tzdata uses whole seconds)."""
    lo, hi = math.floor(before.timestamp()), math.ceil(after.timestamp())
    old = _offset(zone, lo)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _offset(zone, mid) == old:
            lo = mid
        else:
            hi = mid
    return datetime.fromtimestamp(hi, UTC)


def resolve(zone: ZoneInfo, wall: datetime) -> tuple[datetime, bool] | Gap:
    """Map a naive local wall time to its first UTC instance and whether it happens twice (a
    fold), or describe the gap it falls in."""
    early = wall.replace(tzinfo=zone, fold=0)
    early_utc = early.astimezone(UTC)
    if early_utc.astimezone(zone).replace(tzinfo=None) == wall:
        # Exists. In a fold, fold=0 is the first instance (PEP 495); min() guards any oddity.
        late_utc = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
        return min(early_utc, late_utc), late_utc != early_utc
    # In a gap, fold=0 uses the offset before the jump and fold=1 the offset after (PEP 495).
    before, after = early.utcoffset(), wall.replace(tzinfo=zone, fold=1).utcoffset()
    assert before is not None and after is not None
    transition = offset_change(zone, (wall - after).replace(tzinfo=UTC), early_utc)
    naive = transition.replace(tzinfo=None)
    return Gap(transition, naive + before, naive + after)
