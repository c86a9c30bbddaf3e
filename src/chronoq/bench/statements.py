"""Where Postgres's time goes, per statement, where the bench's database has ``pg_stat_statements``.

A measured window starts with ``begin`` (this database's statistics reset) and ends with
``breakdown``: calls, plans, planning and execution milliseconds per unit (a job, or a
``timer_max_idle`` while idle) of all statements together, and of those with the most planning
plus execution time, each with the start of its text and its name where it is one of chronoq's
(``_store/queries``). The bench's own statements are left out. A call is a round trip (a BEGIN
and a COMMIT are calls too), except that several statements sent as one string take one.
Planning is only counted where the server runs with ``pg_stat_statements.track_planning = on``
(the breakdown says so).

The extension needs its library in ``shared_preload_libraries`` and ``CREATE EXTENSION
pg_stat_statements`` in the database; without it the breakdown says it was not available, and
nothing is printed.
"""

from __future__ import annotations

import re
import statistics
from functools import cache
from typing import Any

from rich.console import Console
from rich.table import Table

from chronoq._store import bench as store
from chronoq._store.connection import Connection
from chronoq._store.sql import queries

#: A run's breakdown in its JSON: {"available": ..., "per": ..., "top": [...]} or the reason.
STATEMENTS_KEY = "statements"
TOP = 12
QUERY_CHARS = 60
FIGURES = ("calls", "plans", "plan_ms", "exec_ms")
#: The bench's own statements inside a window: its poll for the end of a run, its reads of the
#: database's statistics.
OWN = frozenset({"pending_in_range", "flush_stats", "database_transactions", "client_sessions", "statements_reset",
                 "statements_since_reset", "statements_track_planning"})
_COMMENT = re.compile(r"--[^\n]*")
#: What the extension replaces by $n: quoted strings, numbers, booleans, NULL as a value, the
#: field of extract().
_CONSTANT = re.compile(r"'(?:[^']|'')*'|(?<![\w$.])\d+(?:\.\d+)?(?![\w.])|\b(?:true|false)\b|(?<!is )(?<!not )\bnull\b"
                       r"|(?<=extract\()\w+", re.IGNORECASE)


def _plain(text: str) -> str:
    """A statement without its comments, line breaks and final semicolon: the extension keeps
    the text from its first word to the semicolon."""
    return " ".join(_COMMENT.sub(" ", text).split()).removesuffix(";").rstrip()


@cache
def _recorded_forms() -> list[tuple[str, re.Pattern[str]]]:
    """Each of chronoq's named statements as the extension records it: a block of several
    statements is recorded one statement at a time (and not rewritten where they are not queries)."""
    return [(name, re.compile(r"\$\d+".join(re.escape(part) for part in _CONSTANT.split(statement)) + "|"
                              + re.escape(statement)))
            for name, text in queries().items() for statement in map(str.strip, _plain(text).split(";")) if statement]


def name_of(recorded: str) -> str | None:
    """The name (in ``_store/queries``) of the statement the extension recorded, if chronoq's."""
    plain = _plain(recorded)
    return next((name for name, form in _recorded_forms() if form.fullmatch(plain)), None)


async def begin(conn: Connection) -> str | None:
    """Reset this database's statistics: None if done, else why there will be no breakdown."""
    return await store.reset_statements(conn)


#: The extension's columns behind FIGURES, in the same order.
_COLUMNS = ("calls", "plans", "total_plan_time", "total_exec_time")


def _figures(values: list[float], units: float) -> dict[str, float]:
    """FIGURES per unit from the values of _COLUMNS."""
    return {figure: round(value / units, 3 if figure in ("calls", "plans") else 4)
            for figure, value in zip(FIGURES, values, strict=True)}


async def breakdown(conn: Connection, unavailable: str | None, *, units: float, per: str) -> dict[str, Any]:
    """The statements since ``begin`` (which returned ``unavailable``), per ``per``, of which the
    window held ``units``: their ``total`` and the ``top`` ones, each with its name where it is one
    of chronoq's and the start of its text."""
    if unavailable is not None:
        return {"available": False, "reason": unavailable}
    found, track_planning = await store.statements_since_reset(conn)
    named = [(name, r) for name, r in ((name_of(r["query"]), r) for r in found) if name not in OWN]
    top = [{"name": name, "query": _plain(r["query"])[:QUERY_CHARS], "queryid": r["queryid"],
            **_figures([r[c] for c in _COLUMNS], units)} for name, r in named[:TOP]]
    total = _figures([sum(r[c] for _, r in named) for c in _COLUMNS], units)
    return {"available": True, "per": per, "track_planning": track_planning, "total": total, "top": top}


def show(console: Console, runs: list[dict[str, Any]]) -> None:
    """One table of every run's top statements, each figure the median over the runs (a
    statement missing from a run's top counts 0 there). Nothing where no run had the extension."""
    found = [r[STATEMENTS_KEY] for r in runs if (r.get(STATEMENTS_KEY) or {}).get("available")]
    if not found:
        return
    labels = {s["queryid"]: s["name"] or s["query"] for b in found for s in b["top"]}
    by_id = [{s["queryid"]: s for s in b["top"]} for b in found]
    medians = {q: {f: statistics.median(b.get(q, {}).get(f, 0.0) for b in by_id) for f in FIGURES} for q in labels}
    ranked = sorted(labels, key=lambda q: -(medians[q]["plan_ms"] + medians[q]["exec_ms"]))[:TOP]
    per = found[0]["per"]
    planning = "" if found[0]["track_planning"] else " (planning not tracked: track_planning is off)"
    table = Table(title=f"Postgres statements (pg_stat_statements), per {per}: medians of {len(found)} run(s), "
                        f"most planning + execution time first{planning}")
    table.add_column("statement", no_wrap=True, overflow="ellipsis")
    for f in FIGURES:
        table.add_column(f.replace("_", " "), justify="right", no_wrap=True, min_width=7)
    for q in ranked:
        table.add_row(labels[q], *(f"{medians[q][f]:.4g}" for f in FIGURES))
    total = {f: statistics.median(b["total"][f] for b in found) for f in FIGURES}
    table.add_row("all statements", *(f"{total[f]:.4g}" for f in FIGURES), style="bold")
    console.print(table)
