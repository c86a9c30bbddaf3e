"""``chronoq bench idle``: what one timer and one worker cost while nothing is due.

With ``--preload`` jobs scheduled far ahead (none due during the run) and the bench's own
connections idle, each run measures over ``--duration`` seconds:

- CPU as percent of one core by process class (bench/cpu.py), and the timer's and worker's
  together;
- Postgres transactions in the bench's database (``pg_stat_database``: every session in it,
  autovacuum included where it visits), less the bench's own two reads;
- Postgres statements (round trips) in it, where ``pg_stat_statements`` is there, less the
  bench's own;
- wake-ups of the timer's and of the worker's Postgres sessions (bench/backends.py), local
  Postgres only;
- per statement, with the same extension (bench/statements.py).

Each count is also given per ``timer_max_idle``, the longest a timer sleeps without looking at
the wheel. Backends publish their statistics at most once a second, and one that went idle
sooner than that within 10 s: the first window starts once the start-up's have been published.
The timer's pruner runs once a minute, so a window shorter than that may hold none of its rounds.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from rich.progress import Progress

from chronoq._store import bench as store
from chronoq.bench import backends, cpu, statements
from chronoq.bench.pipeline import Pipeline
from chronoq.bench.report import CPU_SHARE_KEY
from chronoq.bench.scale import SCALE_QUEUE, preload_future
from chronoq.bench.statements import STATEMENTS_KEY

#: Longer than the 10 s within which an idle backend publishes statistics it held back.
STATS_SETTLE = 11.0
#: The bench's own transactions between its two reads of the counter: the first read itself and
#: the flush before the second (which sees what was published before it, not itself).
OWN_TRANSACTIONS = 2
PROGRESS_STEP = 1.0


async def prepare(p: Pipeline, scheduled: int, progress: Progress) -> tuple[int, int]:
    """``scheduled`` jobs due far ahead, then the settle (see the module's docstring). Returns their ids."""
    block, _ = await preload_future(p.conn, scheduled, 0, progress)
    await asyncio.sleep(STATS_SETTLE)
    return block


async def remove(p: Pipeline, block: tuple[int, int]) -> None:
    await store.delete_block(p.conn, SCALE_QUEUE, *block)


async def _wait(seconds: float, progress: Progress) -> float:
    """Sleep ``seconds`` with a progress bar; returns the seconds slept."""
    task = progress.add_task(f"idle {seconds:g} s", total=seconds)
    started = time.monotonic()
    while (elapsed := time.monotonic() - started) < seconds:
        progress.update(task, completed=elapsed)
        await asyncio.sleep(min(PROGRESS_STEP, seconds - elapsed))
    progress.update(task, visible=False)
    return time.monotonic() - started


def _per(count: int | None, intervals: float) -> float | None:
    return None if count is None else round(count / intervals, 3)


async def idle(p: Pipeline, *, duration: float, scheduled: int, progress: Progress) -> dict[str, Any]:
    """One window of ``duration`` seconds with nothing due."""
    max_idle = p.settings.timer_max_idle.total_seconds()
    no_statements = await statements.begin(p.conn)
    woken_before = await backends.count(p.conn, p.pids)
    transactions_before = await store.database_transactions(p.conn)
    cpu_before = cpu.begin(p.pids)
    elapsed = await _wait(duration, progress)
    share = cpu.percent_of_core(cpu_before, cpu.snapshot(p.pids), elapsed) if cpu_before is not None else None
    transactions = await store.database_transactions(p.conn) - transactions_before - OWN_TRANSACTIONS
    woken = backends.per_role(woken_before, await backends.count(p.conn, p.pids)) or {}
    intervals = elapsed / max_idle
    by_statement = await statements.breakdown(p.conn, no_statements, units=intervals, per="timer_max_idle")
    return {
        "scenario": "idle",
        "duration_s": round(elapsed, 1),
        "timer_max_idle_s": max_idle,
        "scheduled": scheduled,
        "timer_worker_cpu_pct": round(share.get("timer", 0.0) + share.get("worker", 0.0), 3) if share else None,
        "pg_transactions": transactions,
        "pg_transactions_per_max_idle": _per(transactions, intervals),
        "pg_statements_per_max_idle": by_statement["total"]["calls"] if by_statement["available"] else None,
        "timer_pg_wakeups_per_max_idle": _per(woken.get("timer"), intervals),
        "worker_pg_wakeups_per_max_idle": _per(woken.get("worker"), intervals),
        CPU_SHARE_KEY: share,
        STATEMENTS_KEY: by_statement,
    }
