"""What a Postgres failover lost, as the checker counts it (what asynchronous replication
gives up, measured). Two losses are visible from outside the database:

- **Enqueues lost**: jobs enqueued during the nemesis (``workload.trickle``) whose enqueue
  returned an id, and that do not exist after the run (their commit never reached the standby
  that was promoted). The checker's invariant 1 counts them as lost as well.
- **Outcomes run again**: occurrences whose handler wrote its external effect shortly before a
  failover's kill and ran again after it. A transaction cut by the kill does that too (the effect
  file is written before the commit); when the second run came from a fresh dispatch rather than
  a redelivery, the first delivery had been acked, so its outcome had been committed on the old
  primary and then lost with it (``of_which_acked_before``).

With a synchronous standby both must be 0 apart from cut transactions (redeliveries).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from chaos.workload import Work

#: How long before a failover's kill an effect may have been written to count as cut or lost by it.
WINDOW_S = 5.0
SHOWN = 10


def lost_enqueues(work: Work, existing: dict[int, str | None]) -> list[str]:
    """Keys of the trickled enqueues that returned an id whose job, after the run, does not exist
    or has another key. ``existing``: job id -> key of the trickled ids that exist."""
    return sorted(key for key, job_id in work.trickled.items() if existing.get(job_id) != key)


def measure(work: Work, history: list[dict], effect_lines: list[dict[str, Any]], existing: dict[int, str | None]) -> dict:
    """``existing``: as for ``lost_enqueues``."""
    lost = lost_enqueues(work, existing)
    kills = sorted(h["t"] for h in history if h["fault"] == "postgres_failover")
    runs: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for line in effect_lines:
        runs[(line["key"], line["attempt"])].append(line)
    again: list[str] = []
    acked_before: list[str] = []
    for (key, attempt), lines in runs.items():
        lines.sort(key=lambda e: e["t"])
        for kill in kills:
            before = [e for e in lines if kill - WINDOW_S <= e["t"] < kill]
            after = [e for e in lines if e["t"] >= kill]
            if before and after:
                again.append(f"{key} attempt {attempt}")
                if not after[0].get("redelivered"):
                    acked_before.append(f"{key} attempt {attempt}")
                break
    return {
        "failovers": len(kills),
        "enqueues_returned": len(work.trickled),
        "enqueues_never_answered": len(work.trickle_unanswered),
        "enqueues_lost": {"count": len(lost), "keys": lost[:SHOWN]},
        "outcomes_run_again": {"count": len(again), "examples": again[:SHOWN],
                               "of_which_acked_before": len(acked_before), "acked_examples": acked_before[:SHOWN]},
    }
