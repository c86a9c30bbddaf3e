"""`chronoq bench scale | churn | memory | plot` at tiny sizes, as an operator runs them: the JSON
has the figures each scenario promises."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import asyncpg
import orjson
import pytest

from chronoq._store import bench as store
from tests.test_cli import chronoq
from tests.test_roles import as_role


def _document(out: Path, scenario: str) -> dict:
    (path,) = out.glob(f"{scenario}-*.json")
    return orjson.loads(path.read_bytes())


@pytest.mark.timeout(60)
async def test_scale_reports_claims_lateness_and_ratios(settings, tmp_path: Path) -> None:
    result = chronoq(settings, "bench", "scale", "--sizes", "100,1000", "--claim-batches", "3", "--rate", "100",
                     "--duration", "1", "--runs", "1", "--warmup", "0.5", "--tune-server", "--out", str(tmp_path),
                     timeout=55)
    assert result.returncode == 0, result.stdout + result.stderr
    document = _document(tmp_path, "scale")
    assert [r["scheduled"] for r in document["runs"]] == [100, 1000]
    for row in document["runs"]:
        assert row["claim_p50_ms"] > 0 and row["claim_p99_ms"] >= row["claim_p50_ms"]
        assert row["lateness_p50_ms"] is not None and row["achieved_rate"] > 0
        assert row["checkpointed"] is True  # the preload written back before anything is timed
    ratio = document["summary"]["ratio_largest_to_smallest"]
    assert ratio["sizes"] == [100, 1000] and ratio["claim_p50_ms"] > 0
    assert document["environment"]["autovacuum"] in ("on", "off")


@pytest.mark.timeout(60)
async def test_scale_changes_nothing_server_wide_unless_asked_and_says_so(settings, tmp_path: Path) -> None:
    result = chronoq(settings, "bench", "scale", "--sizes", "100", "--claim-batches", "2", "--rate", "50",
                     "--duration", "0.5", "--runs", "1", "--warmup", "0", "--out", str(tmp_path), timeout=55)
    assert result.returncode == 0, result.stdout + result.stderr
    (row,) = _document(tmp_path, "scale")["runs"]
    assert row["checkpointed"] is None
    assert "no CHECKPOINT after the preloads" in result.stdout and "--tune-server" in result.stdout


def test_churn_refuses_to_change_server_settings_without_tune_server(settings, tmp_path: Path) -> None:
    for asked in (["--autovacuum", "on"], ["--autovacuum-naptime", "5s"]):
        result = chronoq(settings, "bench", "churn", *asked, "--out", str(tmp_path))
        assert result.returncode == 2
        assert "change the server's settings (ALTER SYSTEM): add --tune-server" in result.stderr
    assert not list(tmp_path.iterdir())


async def test_a_role_that_may_not_checkpoint_gets_false_not_an_error(settings) -> None:
    admin = await asyncpg.connect(settings.database_url)
    try:
        await admin.execute("DROP ROLE IF EXISTS chronoq_test_no_checkpoint; CREATE ROLE chronoq_test_no_checkpoint LOGIN")
        plain = await asyncpg.connect(as_role(settings.database_url, "chronoq_test_no_checkpoint"))
        try:
            assert await store.checkpoint(plain) is False
            assert await plain.fetchval("SELECT 1") == 1  # the connection is still usable
        finally:
            await plain.close()
        assert await store.checkpoint(admin) is True
    finally:
        await admin.execute("DROP ROLE IF EXISTS chronoq_test_no_checkpoint")
        await admin.close()


async def test_churn_samples_claims_and_dead_tuples(settings, tmp_path: Path) -> None:
    result = chronoq(settings, "bench", "churn", "--jobs", "3000", "--preload", "1000", "--claim-batch", "100",
                     "--out", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    document = _document(tmp_path, "churn")
    samples = document["runs"]
    assert samples[-1]["jobs_done"] == 3000
    assert all(s["claim_p50_ms"] > 0 and s["wheel_dead"] is not None for s in samples)
    summary = document["summary"]
    assert summary["claim_p50_growth"] > 0 and summary["autovacuum_switched_on_for_run"] is False
    # Growth as a trend over the run, not a ratio of two samples that an autovacuum pass can flip.
    assert isinstance(summary["claim_buffers_per_100k_jobs"], float)
    assert summary["claim_p50_second_half_vs_first"] > 0 and summary["claim_buffers_second_half_vs_first"] > 0
    assert any("Index Scan" in line for line in summary["explain_claim_after_churn"])


async def test_churn_with_a_naptime_switches_autovacuum_on_for_the_run_and_resets_it(settings, tmp_path: Path) -> None:
    result = chronoq(settings, "bench", "churn", "--jobs", "1000", "--preload", "100", "--claim-batch", "100",
                     "--autovacuum-naptime", "2s", "--tune-server", "--out", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    summary = _document(tmp_path, "churn")["summary"]
    assert summary["autovacuum"] is True and summary["autovacuum_switched_on_for_run"] is True
    assert summary["autovacuum_naptime"] == "2s"
    conn = await asyncpg.connect(settings.database_url)
    try:  # nothing of the run is left in postgresql.auto.conf
        left = await conn.fetch("SELECT name FROM pg_file_settings WHERE sourcefile LIKE '%postgresql.auto.conf' "
                                "AND name IN ('autovacuum', 'autovacuum_naptime')")
        assert left == []
    finally:
        await conn.close()


async def test_the_naptime_asked_for_is_what_the_session_runs_with_also_when_autovacuum_was_on(settings) -> None:
    # What the churn run records comes from this session after the call (a reload only signals).
    conn = await asyncpg.connect(settings.database_url)
    try:
        await store.set_autovacuum_on(conn)
        for seconds in (3, 7):
            await store.set_autovacuum_on(conn, naptime=timedelta(seconds=seconds))
            running_with = await store.autovacuum_settings(conn)
            assert (running_with["enabled"], running_with["naptime_s"], running_with["naptime"]) == (True, seconds,
                                                                                                     f"{seconds}s")
    finally:
        await store.reset_autovacuum(conn)
        await conn.close()


def test_churn_refuses_a_naptime_postgres_would_not_take(settings, tmp_path: Path) -> None:
    result = chronoq(settings, "bench", "churn", "--autovacuum-naptime", "500ms", "--out", str(tmp_path))
    assert result.returncode == 2
    assert "autovacuum_naptime: must be between 1s and 24d, not '500ms'" in result.stderr
    assert not list(tmp_path.iterdir())


async def test_enqueue_reports_single_and_bulk_rates_and_the_bulk_cpu_per_job(settings, tmp_path: Path) -> None:
    result = chronoq(settings, "bench", "enqueue", "--jobs", "2000", "--runs", "1", "--concurrency", "2",
                     "--out", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    (run,) = _document(tmp_path, "enqueue")["runs"]
    assert run["single_jobs"] == 2000 and run["concurrency"] == 2 and run["bulk_jobs"] == 2000
    assert run["single_jobs_per_s"] > 0 and run["bulk_jobs_per_s"] > 0
    # The producer encodes in this run's bench process; Postgres stores: both must show.
    assert run["cpu_ms_per_job"]["postgres"] > 0 and run["cpu_ms_per_job"]["bench"] > 0


async def test_memory_reads_rss_of_timer_and_worker(settings, tmp_path: Path) -> None:
    result = chronoq(settings, "bench", "memory", "--preload", "1000", "--jobs", "300", "--settle", "0.5",
                     "--out", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    rows = _document(tmp_path, "memory")["runs"]
    assert [r["scheduled"] for r in rows] == [0, 1000, 1000]
    for row in rows:
        for key in ("timer_rss_mib", "worker_rss_mib", "timer_hwm_mib", "worker_hwm_mib"):
            assert 10 < row[key] < 2000, (key, row)


def test_plot_draws_lateness_against_rate(settings, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    runs = [{"scenario": "steady", "mode": mode, "offered_rate": rate, "lateness_p50_ms": 2.0 + rate / 100,
             "lateness_p99_ms": 5.0 + rate / 50, "lateness_max_ms": str(9.0 + rate / 20)}  # numeric: a string in steady's JSON
            for mode in ("noop", "db") for rate in (100, 200, 400)]
    (tmp_path / "steady-1.json").write_bytes(orjson.dumps({"scenario": "steady", "runs": runs, "environment": {}}))
    output = tmp_path / "lateness.png"
    result = chronoq(settings, "bench", "plot", str(tmp_path), "--output", str(output))
    assert result.returncode == 0, result.stdout + result.stderr
    assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.timeout(60)
async def test_idle_reports_cpu_and_postgres_wakeups_per_max_idle(settings, tmp_path: Path) -> None:
    result = chronoq(settings, "bench", "idle", "--duration", "3", "--runs", "1", "--preload", "20",
                     "--timer-max-idle", "0.5", "--out", str(tmp_path), timeout=55)
    assert result.returncode == 0, result.stdout + result.stderr
    (run,) = _document(tmp_path, "idle")["runs"]
    assert run["scheduled"] == 20 and run["timer_max_idle_s"] == 0.5 and run["duration_s"] >= 3
    share = run["cpu_percent_of_core"]
    assert {"timer", "worker", "postgres", "total"} <= share.keys() and 0 <= run["timer_worker_cpu_pct"] < 100
    # The timer looks at the wheel at least once per timer_max_idle; the idle worker sends nothing
    # (its sessions' backends may still be woken by other sessions on a shared server).
    assert 0.5 <= run["pg_transactions_per_max_idle"] <= 4
    assert run["timer_pg_wakeups_per_max_idle"] >= 0.5
    assert 0 <= run["worker_pg_wakeups_per_max_idle"] < run["timer_pg_wakeups_per_max_idle"]
    # The test server has no pg_stat_statements: said in the JSON, nothing printed.
    assert run["statements"]["available"] is False and run["statements"]["reason"]
    assert run["pg_statements_per_max_idle"] is None
    assert "pg_stat_statements" not in result.stdout
    assert "CPU % of one core" in result.stdout
