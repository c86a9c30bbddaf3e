"""The CLI as an operator drives it: subprocesses, exit codes, printed output."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import orjson
import pytest

from chronoq import JobContext, Producer, RetryPolicy, Worker
from chronoq.consumer.service import WorkerService
from chronoq.timer import Timer
from tests.conftest import child_env
from tests.harness import all_finished, eventually, running


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


async def test_enqueue_replaces_or_debounces_a_stored_key(settings, producer: Producer, db) -> None:
    first = chronoq(settings, "enqueue", "recompute", "--payload", "1", "--key", "k", "--delay", "1h")
    job_id = int(first.stdout)
    replaced = chronoq(settings, "enqueue", "recompute", "--payload", "2", "--key", "k", "--delay", "10m",
                       "--on-conflict", "replace")
    assert replaced.returncode == 0 and int(replaced.stdout) == job_id, replaced.stderr
    assert (await producer.get(job_id)).payload == 2
    debounced = chronoq(settings, "enqueue", "recompute", "--payload", "3", "--key", "k", "--debounce", "30s",
                        "--max-wait", "1m")
    assert debounced.returncode == 0 and int(debounced.stdout) == job_id, debounced.stderr
    row = await db.fetchrow("SELECT due_at - now() AS due_in, due_by - due_at AS slack FROM chronoq.wheel")
    assert timedelta(seconds=20) < row["due_in"] <= timedelta(seconds=30)
    assert row["slack"] == timedelta(seconds=30)  # max_wait 1 min from the enqueue that moved it
    assert (await producer.get(job_id)).payload == 3


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


async def test_schedule_pause_resume_ls_and_ticks(settings, producer: Producer) -> None:
    result = chronoq(settings, "schedule", "reports.weekly", "--cron", "0 9 * * MON", "--tz", "Europe/Berlin",
                     "--misfire", "backfill", "--max-backfill", "5", "--overlap", "skip", "--payload", '{"w": 1}',
                     "--key", "weekly")
    assert result.returncode == 0, result.stderr
    job_id = int(result.stdout)
    job = await producer.get(job_id)
    assert (job.kind, job.cron, job.timezone, job.misfire, job.overlap) == (
        "cron", "0 9 * * MON", "Europe/Berlin", "backfill", "skip")
    assert chronoq(settings, "jobs", "pause", str(job_id)).returncode == 0
    ticks = orjson.loads(chronoq(settings, "jobs", "ticks", str(job_id), "--json").stdout)
    assert [t["state"] for t in ticks] == ["paused"]
    assert chronoq(settings, "jobs", "resume", str(job_id)).returncode == 0
    listed = orjson.loads(chronoq(settings, "jobs", "ls", "--queue", "reports.weekly", "--json").stdout)
    assert [(j["id"], j["state"], j["cron"]) for j in listed] == [(job_id, "active", "0 9 * * MON")]
    assert "reports.weekly" in chronoq(settings, "jobs", "ls").stdout
    bad = chronoq(settings, "schedule", "q", "--cron", "0 0 30 2 *")
    assert bad.returncode == 2 and "never" in bad.stderr.lower()
    since = chronoq(settings, "jobs", "ticks", str(job_id), "--since", "2026-01-01T00:00:00")
    assert since.returncode == 2 and "UTC offset" in since.stderr


@pytest.mark.timeout(180)
async def test_bench_runs_and_records_its_environment(settings, tmp_path) -> None:
    """The benchmark works end to end (its figures are not judged here: speed is measured, not
    asserted in tests)."""
    result = chronoq(settings, "bench", "burst", "--jobs", "300", "--runs", "1", "--out", str(tmp_path), timeout=170)
    assert result.returncode == 0, result.stdout + result.stderr
    (written,) = tmp_path.glob("burst-*.json")
    document = orjson.loads(written.read_bytes())
    (run,) = document["runs"]
    assert run["jobs"] == 300 and run["e2e_jobs_per_s"] > 0
    # Where the CPU went, per job: the pipeline's own processes and the local services worked.
    cpu = run["cpu_ms_per_job"]
    assert cpu["worker"] > 0 and cpu["timer"] > 0 and cpu["postgres"] > 0 and cpu["rabbitmq"] > 0, cpu
    assert cpu["total"] >= cpu["worker"] + cpu["timer"]
    assert document["median"]["cpu_ms_per_job"] == cpu  # one run: its own breakdown
    assert "CPU ms per job" in result.stdout
    # Without pg_stat_statements in the database (the test server's case): said so, nothing printed.
    assert run["statements"]["available"] is False and "Postgres statements" not in result.stdout
    logs = re.search(r"timer and worker logs: (\S+)", result.stdout)
    assert logs is not None and (Path(logs.group(1)) / "timer-0.log").is_file(), result.stdout
    assert {"machine", "packages", "postgres", "settings"} <= set(document["environment"])
    assert "database_url" not in document["environment"]["settings"]  # no credentials in results


async def test_status_watch_is_a_live_view_that_quits_on_ctrl_c(settings, producer: Producer) -> None:
    import os
    import pty
    import select
    import signal
    import time

    await producer.enqueue("watched", {}, delay=3600)
    # A terminal: rich draws live frames only there.
    master, slave = pty.openpty()
    env = {**child_env(settings), "COLUMNS": "200", "LINES": "40"}
    # The test drives the child's terminal itself, synchronously; nothing else runs on the loop.
    process = subprocess.Popen([sys.executable, "-m", "chronoq", "status", "--watch"], env=env,  # noqa: ASYNC220
                               stdin=slave, stdout=slave, stderr=subprocess.PIPE)
    os.close(slave)
    seen = b""
    try:
        deadline = time.monotonic() + 20
        while b"jobs/s (10 s)" not in seen or b"watched" not in seen:
            assert time.monotonic() < deadline, seen[-500:]
            ready, _, _ = select.select([master], [], [], 1)
            if ready:
                seen += os.read(master, 65536)
        process.send_signal(signal.SIGINT)
        # Keep reading the terminal: a full pty would block the view's last frames and its exit.
        deadline = time.monotonic() + 20
        while process.poll() is None:
            assert time.monotonic() < deadline, "status --watch did not quit on Ctrl-C"
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                with contextlib.suppress(OSError):  # the child closed the terminal
                    os.read(master, 65536)
        _, errors = process.communicate(timeout=20)
        assert process.returncode == 0, errors
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        os.close(master)


def _children(pid: int) -> dict[int, str]:
    """Live child processes of ``pid``: their command lines, from /proc."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:  # gone meanwhile
            continue
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        if int(fields.get("PPid", "0")) == pid and not fields.get("State", "").startswith("Z"):
            found[int(entry.name)] = cmdline
    return found


def _alive(pid: int) -> bool:
    try:
        return not (Path("/proc") / str(pid) / "status").read_text().split("State:\t", 1)[1].startswith("Z")
    except (OSError, IndexError):
        return False


@pytest.mark.skipif(sys.platform != "linux", reason="the parent-death signal is Linux's")
async def test_a_killed_bench_takes_its_timer_and_worker_with_it(settings, tmp_path: Path) -> None:
    bench = subprocess.Popen(  # noqa: ASYNC220 - started, then only watched and killed
        [sys.executable, "-m", "chronoq", "bench", "steady", "--rate", "50", "--duration", "120", "--runs", "1",
         "--warmup", "0", "--out", str(tmp_path)],
        env=child_env(settings), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    fleet: dict[int, str] = {}
    try:

        async def started() -> bool:
            fleet.update(_children(bench.pid))
            return any(" timer" in c for c in fleet.values()) and any(" worker" in c for c in fleet.values())

        await eventually(started, what="the bench to start its timer and worker")
        bench.kill()  # no cleanup of its own can run
        bench.wait()

        async def gone() -> bool:
            return not any(_alive(pid) for pid in fleet)

        await eventually(gone, timeout=45, what="the timer and worker to stop after the bench died")
    finally:
        if bench.poll() is None:
            bench.kill()
        for pid in fleet:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


APP = '''
from chronoq import JobContext, Worker

worker = Worker()


@worker.handler("greetings")
async def greet(ctx: JobContext, payload: dict) -> str:
    return "hello " + payload["name"]
'''


@pytest.mark.parametrize("how", ["from-its-folder", "with-app-dir"])
async def test_the_console_script_finds_the_app_module_in_the_current_folder_or_app_dir(
    settings, producer: Producer, tmp_path: Path, how: str,
) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (app / "jobs.py").write_text(APP)
    script = Path(sys.executable).parent / "chronoq"  # the console script: no folder of its own on sys.path
    args, cwd = ([], app) if how == "from-its-folder" else (["--app-dir", str(app)], tmp_path)
    env = {k: v for k, v in child_env(settings).items() if k != "PYTHONPATH"}
    log = tmp_path / "worker.log"
    with log.open("wb") as output:
        worker = subprocess.Popen([str(script), "worker", "jobs:worker", *args], cwd=cwd, env=env,  # noqa: ASYNC220
                                  stdout=output, stderr=output)
    try:
        job_id = await producer.enqueue("greetings", {"name": "ada"})
        async with running(Timer(settings)):

            async def succeeded() -> bool:
                assert worker.poll() is None, log.read_text()
                return (await producer.get(job_id)).state == "succeeded"

            await eventually(succeeded, what="the job to run in the worker started by the console script")
        assert (await producer.get(job_id)).occurrences[0].result == "hello ada"
    finally:
        worker.terminate()
        worker.wait(timeout=30)


async def test_jobs_ls_shows_what_happened_to_each_job_last(settings, producer: Producer) -> None:
    worker = Worker()

    @worker.handler("ledger")
    async def ledger(ctx: JobContext, payload: dict) -> None:
        if payload["fail"]:
            raise RuntimeError("ledger closed")

    ok = await producer.enqueue("ledger", {"fail": False})
    failing = await producer.enqueue("ledger", {"fail": True}, retry=RetryPolicy(max_attempts=1))
    waiting = await producer.enqueue("ledger", {"fail": False}, delay=3600)
    async with running(Timer(settings)), running(WorkerService(worker, settings)):
        await all_finished(producer, [ok, failing])

    listed = {j["id"]: j for j in orjson.loads(chronoq(settings, "jobs", "ls", "--json").stdout)}
    assert listed[ok]["last_outcome"]["state"] == "succeeded"
    assert (listed[failing]["last_outcome"]["state"], listed[failing]["last_outcome"]["reason"]) == ("dead", "max_attempts")
    assert listed[waiting]["last_outcome"] is None
    table = chronoq(settings, "jobs", "ls").stdout
    rows = {line.split("│")[1].strip(): line for line in table.splitlines() if line.count("│") > 2}
    assert "succeeded at" in rows[str(ok)] and "dead (max_attempts) at" in rows[str(failing)], table
