"""Loads the named query blocks of ``queries/*.sql`` once.

A block starts with ``-- name: <name>`` and runs to the next block. Queries take positional
parameters (``$1``); nothing is ever spliced into SQL text.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

_BLOCK = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


@cache
def queries() -> dict[str, str]:
    found: dict[str, str] = {}
    for entry in sorted(resources.files("chronoq._store").joinpath("queries").iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".sql"):
            continue
        parts = _BLOCK.split(entry.read_text(encoding="utf-8"))
        for name, body in zip(parts[1::2], parts[2::2], strict=True):
            if name in found:
                raise RuntimeError(f"query {name!r} is defined twice")
            found[name] = body.strip()
    return found


def query(name: str) -> str:
    return queries()[name]
