"""Parsing human durations for the CLI: ``30s``, ``5m``, ``1h30m``, ``250ms``, ``2d``, ``1.5``.
Errors quote at most a short prefix of the text."""

from __future__ import annotations

import math
import re
from datetime import timedelta

from chronoq.schemas.rules import short

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def parse_duration(text: str) -> timedelta:
    """Raise ValueError with a readable message for anything that is not a duration."""
    cleaned = text.strip().lower()
    if cleaned.startswith("-"):
        raise ValueError(f"{short(text)}: a duration cannot be negative")
    try:
        seconds = float(cleaned)
    except ValueError:
        pos, seconds = 0, 0.0
        for match in _PART.finditer(cleaned):
            if match.start() != pos:
                break
            seconds += float(match[1]) * _UNITS[match[2]]
            pos = match.end()
        if pos != len(cleaned) or not cleaned:
            raise ValueError(f"{short(text)} is not a duration (examples: 30s, 5m, 1h30m, 250ms, 2d)") from None
    if not math.isfinite(seconds):
        raise ValueError(f"{short(text)} is not a finite duration")
    if seconds < 0:
        raise ValueError(f"{short(text)}: a duration cannot be negative")
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        raise ValueError(f"{short(text)} is too long") from None
