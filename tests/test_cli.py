"""The CLI as an operator drives it: subprocesses, exit codes, printed output."""

from __future__ import annotations

import re
import subprocess
import sys

import orjson
import pytest

from chronoq import Producer
from tests.conftest import child_env


def chronoq(settings, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chronoq", *args], env=child_env(settings), capture_output=True, text=True, timeout=timeout
    )


async def test_enqueue_status_show_and_cancel(settings, producer: Producer) -> None:
    result = chronoq(settings, "enqueue", "reports.daily", "--payload", '{"day": "2026-11-29"}', "--delay", "1h",
                     "--key", "daily-2026-11-29", "--max-attempts", "7")
    assert result.returncode == 0, result.stderr
    job_id = int(result.stdout.strip())
    again = chronoq(settings, "enqueue", "reports.daily", "--payload", "{}", "--key", "daily-2026-11-29")
    assert int(again.stdout) == job_id

    job = await producer.get(job_id)
    assert (job.queue, job.key, job.max_attempts, job.payload) == ("reports.daily", "daily-2026-11-29", 7, {"day": "2026-11-29"})

    status = chronoq(settings, "status", "--json")
    assert status.returncode == 0
    (row,) = orjson.loads(status.stdout)
    assert (row["queue"], row["scheduled"], row["due"], row["in_flight"]) == ("reports.daily", 1, 0, 0)
    table = chronoq(settings, "status")
    assert "reports.daily" in table.stdout

    shown = chronoq(settings, "jobs", "show", str(job_id), "--json")
    assert orjson.loads(shown.stdout)["occurrences"][0]["state"] == "scheduled"
    assert "scheduled" in chronoq(settings, "jobs", "show", str(job_id)).stdout

    cancelled = chronoq(settings, "jobs", "cancel", str(job_id))
    assert cancelled.returncode == 0 and "cancelled" in cancelled.stdout
    assert (await producer.get(job_id)).state == "cancelled"


async def test_at_runs_at_an_absolute_time(settings, producer: Producer) -> None:
    result = chronoq(settings, "enqueue", "q", "--at", "2030-01-01T09:00:00+01:00")
    job = await producer.get(int(result.stdout))
    assert job.occurrences[0].run_at.isoformat() == "2030-01-01T08:00:00+00:00"


@pytest.mark.timeout(180)
async def test_demo_runs_end_to_end_and_reports_nothing_lost(settings) -> None:
    result = chronoq(settings, "demo", "--jobs", "600", "--spread", "2s", timeout=170)
    assert result.returncode == 0, result.stdout + result.stderr
    text = result.stdout
    assert re.search(r"lost \(must be 0\)\s*│\s*0\b", text), text
    assert re.search(r"duplicate effects \(must be 0\)\s*│\s*0\b", text), text
    assert re.search(r"enqueued\s*│\s*601\b", text) and re.search(r"dead\s*│\s*1\b", text), text
    assert re.search(r"retried\s*│\s*60\b", text), text
