"""Judging a chaos run's history. Each invariant reports ok and up to 10 counterexamples."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg

from chronoq._runtime.config import Settings
from chronoq.schemas.cron import CronSchedule


def _verdict(bad: list[Any]) -> dict[str, Any]:
    return {"ok": not bad, "count": len(bad), "counterexamples": [str(b) for b in bad[:10]]}


async def check(conn: asyncpg.Connection, work: dict[str, list[int]], effects: Path, settings: Settings) -> dict[str, Any]:
    once, crons = work["once"], work["cron"]
    all_jobs = once + crons
    results = {r["occurrence_key"]: r for r in await conn.fetch(
        "SELECT r.*, j.max_attempts, j.payload->>'kind' AS kind FROM chronoq.results r"
        " JOIN chronoq.jobs j ON j.id = r.job_id WHERE r.job_id = ANY($1)", all_jobs)}
    ledger = await conn.fetch("SELECT * FROM chaos_ledger")
    per_occurrence = Counter(r["occurrence_key"] for r in ledger)
    live = await conn.fetch("SELECT occurrence_key FROM chronoq.wheel WHERE job_id = ANY($1)", once)
    once_keys = {k for k, r in results.items() if r["job_id"] in set(once)}

    lost = [r["occurrence_key"] for r in live]
    lost += [k for k in once_keys if results[k]["state"] == "succeeded" and per_occurrence[k] == 0]
    # Only the always-failing jobs may end dead; anything else dead was lost to a fault.
    lost += [k for k in once_keys if results[k]["state"] == "dead" and results[k]["kind"] != "failing"]
    lost += [f"job {j} has no terminal occurrence" for j in once if not any(r["job_id"] == j for r in results.values())]

    duplicates = [(k, n) for k, n in per_occurrence.items() if n > 1]

    phantoms = []
    for row in ledger:
        result = results.get(row["occurrence_key"])
        if result is None or result["state"] != "succeeded":
            phantoms.append((row["occurrence_key"], "no succeeded result"))
        elif result["run_at"] is not None and row["at"] < result["run_at"]:
            phantoms.append((row["occurrence_key"], "ran before its due time"))

    holes = []
    schedule = CronSchedule.parse("* * * * * *")
    for job_id in crons:
        fired = sorted(r["fire_at"] for r in results.values() if r["job_id"] == job_id)
        if fired:
            expected = [fired[0], *schedule.ticks_between(fired[0], fired[-1], 100_000)]
            missing = sorted(set(expected) - set(fired))
            holes += [(job_id, t.isoformat()) for t in missing]

    over_attempts = [(k, r["attempt"], r["max_attempts"]) for k, r in results.items()
                     if r["attempt"] > r["max_attempts"]]
    failing_not_dead = [k for k in once_keys if results[k]["kind"] == "failing" and results[k]["state"] != "dead"]

    external = Counter(line.strip() for line in effects.read_text().splitlines()) if effects.exists() else Counter()
    external_duplicates = sum(n - 1 for n in external.values() if n > 1)

    invariants = {
        "no_loss": _verdict(lost),
        "no_duplicate_effect": _verdict(duplicates),
        "no_phantom": _verdict(phantoms),
        "tick_ledger_has_no_holes": _verdict(holes),
        "attempts_bounded": _verdict(over_attempts + failing_not_dead),
        "all_terminal": _verdict([r["occurrence_key"] for r in live]),
    }
    return {
        "valid": all(v["ok"] for v in invariants.values()),
        "invariants": invariants,
        "figures": {
            "one_shot_jobs": len(once),
            "succeeded": sum(1 for k in once_keys if results[k]["state"] == "succeeded"),
            "dead": sum(1 for k in once_keys if results[k]["state"] == "dead"),
            "cron_ticks": sum(1 for r in results.values() if r["job_id"] in set(crons)),
            "ledger_rows": len(ledger),
            "external_effect_duplicates": external_duplicates,
            "external_duplicate_ratio": round(external_duplicates / max(len(ledger), 1), 4),
        },
    }
