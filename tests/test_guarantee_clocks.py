"""G4: no host clock matters. Timers and producers run with their host clocks an hour fast and
an hour slow (libfaketime, preloaded into real processes); nothing fires early, twice, or not
at all, because every due time is read and judged by the database's clock."""

from __future__ import annotations

import asyncio
import glob
import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from chronoq import JobContext, Producer, Worker
from chronoq._store import clock
from chronoq.consumer.service import WorkerService
from chronoq.schemas.cron import CronSchedule
from tests.conftest import child_env
from tests.harness import Process, all_finished, eventually, running

SKEWS = ("+1h", "-1h")
EVERY_SECOND = "* * * * * *"
# How far after its enqueue a job is due: the one-shot in 3 s, the cron job's first tick within 1 s.
LEADS = {"once": (timedelta(seconds=2.5), timedelta(seconds=3.5)), "cron": (timedelta(0), timedelta(seconds=1))}

# Enqueues a one-shot job due in 3 s and a per-second cron job; prints their ids and this host's
# idea of the time.
PRODUCER = """
import asyncio, json, sys
from datetime import datetime, UTC
from chronoq import Producer

async def main():
    async with Producer(sys.argv[1]) as producer:
        once = await producer.enqueue("clock", {"skew": sys.argv[2]}, delay=3)
        cron = await producer.schedule("clock", {"skew": sys.argv[2]}, cron="* * * * * *", misfire_grace=2)
    print(json.dumps({"once": once, "cron": cron, "host_now": datetime.now(UTC).isoformat()}))

asyncio.run(main())
"""


def libfaketime() -> str:
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1") + glob.glob("/usr/lib/faketime/libfaketime.so.1"))
    if not found:  # .ci/run installs it; elsewhere the test says what it needs
        pytest.skip("G4's clock-skew test needs libfaketime (Debian: apt-get install faketime)")
    return found[0]


def skewed(env: dict[str, str], skew: str) -> dict[str, str]:
    return {**env, "LD_PRELOAD": libfaketime(), "FAKETIME": skew, "FAKETIME_DONT_FAKE_MONOTONIC": "0"}


@pytest.fixture
def start_timers(tmp_path: Path, settings) -> Iterator[Callable[[], list[Process]]]:
    started: list[Process] = []

    def start() -> list[Process]:
        started.extend(Process(["timer"], skewed(child_env(settings), skew), tmp_path / f"timer{skew}.log")
                       for skew in SKEWS)
        return started

    yield start
    for proc in started:
        proc.close()


def log_time(proc: Process, action: str) -> datetime:
    """The local time a process wrote in its log line for ``action`` (by its own clock)."""
    for line in proc.log.read_text().splitlines():
        if line.startswith("{") and json.loads(line).get("action") == action:
            return datetime.strptime(json.loads(line)["ts"], "%Y-%m-%dT%H:%M:%S.%f")
    raise AssertionError(f"no {action} in {proc.log}")


@pytest.mark.timeout(180)
async def test_skewed_timers_and_producers_fire_nothing_early_or_twice(
    start_timers, settings, producer: Producer, db
) -> None:
    worker = Worker()
    runs: list[tuple[int, str]] = []

    @worker.handler("clock")
    async def record(ctx: JobContext, payload: dict) -> None:
        runs.append((ctx.job_id, ctx.idempotency_key))

    made = {}
    for skew, hours in zip(SKEWS, (1, -1), strict=True):
        out = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-c", PRODUCER, settings.database_url, skew], check=True,
            capture_output=True, text=True, timeout=60, env=skewed(dict(os.environ), skew))
        made[skew] = json.loads(out.stdout)
        db_now = await clock.db_now(db)
        drift = datetime.fromisoformat(made[skew]["host_now"]) - db_now
        assert abs(drift - timedelta(hours=hours)) < timedelta(minutes=5), drift
    once = [m["once"] for m in made.values()]
    crons = [m["cron"] for m in made.values()]
    # Due times are the database's: 3 s after the enqueue committed, the first tick within the
    # next second; not an hour either way. (No timer is up yet: each job has its one row.)
    rows = await db.fetch("SELECT j.kind, w.run_at - j.created_at AS lead FROM chronoq.wheel w"
                          " JOIN chronoq.jobs j ON j.id = w.job_id")
    assert sorted(r["kind"] for r in rows) == ["cron", "cron", "once", "once"]
    for row in rows:
        low, high = LEADS[row["kind"]]
        assert low <= row["lead"] <= high, dict(row)
    timers = start_timers()
    for timer in timers:
        await timer.wait_for_log("timer_started")
    for timer, hours in zip(timers, (1, -1), strict=True):  # the skew is real inside each timer
        drift = log_time(timer, "timer_started") - datetime.now()
        assert abs(drift - timedelta(hours=hours)) < timedelta(minutes=5), drift
    async with running(WorkerService(worker, settings)):
        await all_finished(producer, once)

        async def four_ticks_each() -> bool:
            return all(sum(1 for j, _ in runs if j == c) >= 4 for c in crons)

        await eventually(four_ticks_each, what="four ticks of each cron job")
    assert [t.terminate() for t in timers] == [0, 0]

    counts = Counter(runs)
    assert max(counts.values()) == 1, [k for k, v in counts.items() if v > 1]  # nothing twice
    assert all(any(j == job for j, _ in runs) for job in once)  # nothing never
    results = await db.fetch("SELECT occurrence_key, state, fire_at, run_at, started_at FROM chronoq.results")
    ran = [r for r in results if r["state"] == "succeeded"]
    assert {r["occurrence_key"] for r in ran} == {k for _, k in runs}
    early = [(r["occurrence_key"], r["started_at"] - r["run_at"]) for r in ran if r["started_at"] < r["run_at"]]
    assert early == []  # nothing early, by the database's clock
    for cron in crons:
        fired = sorted(r["fire_at"] for r in results if r["occurrence_key"].startswith(f"{cron}@"))
        assert fired[1:] == CronSchedule.parse(EVERY_SECOND).ticks_between(fired[0], fired[-1], 1000)
