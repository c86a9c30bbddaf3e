"""Migrations: applied from zero they build exactly the reviewed snapshot and exactly what the
series the baseline replaces built; idempotent, concurrent-safe, printable; a database migrated
by the replaced series is moved onto the baseline, one part way through it or ahead of this
chronoq is refused; `chronoq migrate` creates the database."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from chronoq._store.migrate import REPLACED_SERIES, apply, migrations, script
from chronoq._store.sql import query
from chronoq.errors import ConfigError
from chronoq.schemas.cron import CronSchedule
from tests.conftest import child_env, database_url
from tests.schema_snapshot import SNAPSHOT, difference, dump, fresh_database, migrated_schema

# The migration files of the series 001_baseline replaces, as databases in the field ran them.
REPLACED_FILES = Path(__file__).parent / "replaced_migrations"
#: What schema_migrations records once every migration ran.
ALL = [(m.version, m.name) for m in migrations()]


@pytest.fixture
async def empty_database(services) -> AsyncIterator[str]:
    """URL of a new database with no schema at all."""
    async with fresh_database(services.admin_database_url, "chronoq_mig") as url:
        yield url


@pytest.fixture
async def conn(empty_database) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(empty_database)
    yield connection
    await connection.close()


async def apply_replaced_series(conn: asyncpg.Connection, until: int) -> None:
    """Migrate as the replaced series did, up to version ``until``: each file in its own
    transaction, recorded in schema_migrations under its own version and name."""
    await conn.execute(query("create_bookkeeping"))
    files = sorted(REPLACED_FILES.glob("*.sql"))
    assert [f.stem.split("_", 1)[1] for f in files] == list(REPLACED_SERIES)
    for version, file in enumerate(files[:until], start=1):
        async with conn.transaction():
            await conn.execute(file.read_text(encoding="utf-8"))
            await conn.execute(query("record_migration"), version, REPLACED_SERIES[version - 1])


async def recorded(conn: asyncpg.Connection) -> list[tuple[int, str]]:
    return [(r["version"], r["name"]) for r in await conn.fetch("SELECT version, name FROM chronoq.schema_migrations ORDER BY 1")]


async def test_the_migrations_build_exactly_the_reviewed_snapshot(services) -> None:
    actual = await migrated_schema(services.admin_database_url)
    diff = difference(SNAPSHOT.read_text(encoding="utf-8"), actual, f"{SNAPSHOT.name} (snapshot)", "migrated database")
    assert not diff, (
        "the migrations no longer build the reviewed schema snapshot; if the change is intended, run "
        f"`python -m tests.schema_snapshot` and review its diff:\n{diff}"
    )


async def test_the_baseline_builds_what_the_series_it_replaces_built(services) -> None:
    async with fresh_database(services.admin_database_url, "chronoq_old") as url:
        old = await asyncpg.connect(url)
        try:
            await apply_replaced_series(old, until=len(REPLACED_SERIES))
        finally:
            await old.close()
        replaced = await dump(url)
    async with fresh_database(services.admin_database_url, "chronoq_base") as url:
        new = await asyncpg.connect(url)
        try:
            await new.execute(query("create_bookkeeping"))
            await new.execute(migrations()[0].sql)
            await new.execute(query("record_migration"), 1, "baseline")
        finally:
            await new.close()
        baseline = await dump(url)
    diff = difference(replaced, baseline, "replaced series 001-009", "001_baseline")
    assert not diff, f"the baseline differs from the series it replaces:\n{diff}"


async def test_migrations_apply_from_zero_and_again_change_nothing(conn) -> None:
    applied = await apply(conn)
    assert [m.label for m in applied] == [m.label for m in migrations()]
    assert applied[0].label == "001_baseline"
    assert await apply(conn) == []
    assert await recorded(conn) == ALL


async def test_concurrent_migrations_apply_once(empty_database) -> None:
    conns = [await asyncpg.connect(empty_database) for _ in range(3)]
    try:
        results = await asyncio.gather(*(apply(c) for c in conns))
        assert sorted(len(r) for r in results) == [0, 0, len(migrations())]
    finally:
        for c in conns:
            await c.close()


async def test_printed_script_builds_the_same_schema(empty_database, conn) -> None:
    await conn.execute(script())
    assert await apply(conn) == []  # the script recorded every version
    assert await recorded(conn) == ALL
    assert await dump(empty_database) == SNAPSHOT.read_text(encoding="utf-8")


async def test_a_database_migrated_by_the_replaced_series_is_moved_onto_the_baseline(empty_database, conn, caplog) -> None:
    caplog.set_level(logging.INFO, logger="chronoq.migrate")
    await apply_replaced_series(conn, until=len(REPLACED_SERIES))
    last_ran = await conn.fetchval("SELECT max(applied_at) FROM chronoq.schema_migrations")
    others = [await asyncpg.connect(empty_database) for _ in range(2)]
    try:
        # Concurrent migrates take turns under the lock: one rewrites the records, the rest find the baseline.
        results = await asyncio.gather(apply(conn), *(apply(c) for c in others))
    finally:
        for c in others:
            await c.close()
    # The one that rebased also applied the migrations that came after the baseline.
    assert sorted([m.label for m in r] for r in results) == [[], [], [m.label for m in migrations()[1:]]]
    assert [getattr(r, "action", None) for r in caplog.records if r.name == "chronoq.migrate"] == ["migrations_rebased"]
    assert await recorded(conn) == ALL
    assert await conn.fetchval("SELECT applied_at FROM chronoq.schema_migrations WHERE version = 1") == last_ran
    assert await apply(conn) == []
    assert await dump(empty_database) == SNAPSHOT.read_text(encoding="utf-8")


@pytest.mark.parametrize("until", [1, 5, 8])
async def test_a_database_part_way_through_the_replaced_series_is_refused(conn, until) -> None:
    await apply_replaced_series(conn, until=until)
    before = await recorded(conn)
    at = f"{until:03d}_{REPLACED_SERIES[until - 1]}"
    with pytest.raises(ConfigError, match=f"schema is at {at}, short of the 9 migrations 001_baseline replaces: "
                                          "bring it to 009_elapsed_durations"):
        await apply(conn)
    assert await recorded(conn) == before


async def test_a_database_migrated_by_a_newer_chronoq_is_refused(conn) -> None:
    await apply(conn)
    newer = migrations()[-1].version + 1
    await conn.execute("INSERT INTO chronoq.schema_migrations (version, name) VALUES ($1, 'from_a_newer_chronoq')", newer)
    with pytest.raises(ConfigError, match=f"schema is at {newer:03d}_from_a_newer_chronoq, newer than this chronoq "
                                          rf"\(its latest is {migrations()[-1].label}\)"):
        await apply(conn)


async def test_a_database_recording_a_migration_of_another_name_is_refused(conn) -> None:
    await apply(conn)
    await conn.execute("UPDATE chronoq.schema_migrations SET name = 'someone_elses' WHERE version = 1")
    with pytest.raises(ConfigError, match="records migration 001_someone_elses, which this chronoq does not have"):
        await apply(conn)


async def test_cli_migrate_creates_a_missing_database_and_is_idempotent(services, settings, namespace) -> None:
    name = f"chronoq_new_{uuid.uuid4().hex[:10]}"
    url = database_url(services.admin_database_url, name)
    env = child_env(settings, CHRONOQ_DATABASE_URL=url)
    try:
        outputs = []
        for _ in range(2):
            result = await asyncio.to_thread(
                subprocess.run, [sys.executable, "-m", "chronoq", "migrate"], env=env, capture_output=True, text=True, timeout=60
            )
            assert result.returncode == 0, result.stderr
            outputs.append(result.stdout)
        assert f"migrations applied: {', '.join(m.label for m in migrations())}" in outputs[0]
        assert "up to date" in outputs[1]
        printed = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "chronoq", "migrate", "--print"], env=env, capture_output=True, text=True,
            timeout=60,
        )
        assert printed.returncode == 0 and "CREATE TABLE chronoq.wheel" in printed.stdout
    finally:
        admin = await asyncpg.connect(services.admin_database_url)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def test_cli_migrate_refuses_a_database_part_way_through_the_replaced_series(services, settings, namespace) -> None:
    async with fresh_database(services.admin_database_url, "chronoq_part") as url:
        old = await asyncpg.connect(url)
        try:
            await apply_replaced_series(old, until=3)
        finally:
            await old.close()
        result = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "chronoq", "migrate"], env=child_env(settings, CHRONOQ_DATABASE_URL=url),
            capture_output=True, text=True, timeout=60,
        )
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert result.stderr.startswith("error: the chronoq schema is at 003_retention, short of the 9 migrations")
    assert result.stderr.rstrip().endswith("DROP SCHEMA chronoq CASCADE (losing its data) and migrate")


async def test_six_field_crons_stored_seconds_last_are_rewritten_seconds_first(conn) -> None:
    """A database of the baseline holds 6-field expressions in the old order (seconds last):
    002 rewrites them so that each schedule keeps exactly its ticks."""
    baseline = migrations()[0]
    await conn.execute(query("create_bookkeeping"))
    await conn.execute(baseline.sql)
    await conn.execute(query("record_migration"), baseline.version, baseline.name)
    old = {  # as stored before 002, seconds last: expression -> its ticks read in that order
        "30 9 * * * 15": ["09:30:15"],
        "*/20 * * * *\t*/30": ["00:00:00", "00:00:30", "00:20:00", "00:20:30"],
        "0 12 * * MON-FRI */20": ["12:00:00", "12:00:20", "12:00:40"],
    }
    untouched = ["0 9 * * *", "@hourly", "* * * * *"]
    ids = {}
    for cron in [*old, *untouched]:
        ids[cron] = await conn.fetchval(
            "INSERT INTO chronoq.jobs (queue, kind, max_attempts, backoff_base_ms, backoff_cap_ms, jitter, timeout_ms, "
            "cron, timezone) VALUES ('q', 'cron', 1, 0, 0, 0, 1000, $1, 'UTC') RETURNING id", cron)
    once = await conn.fetchval("INSERT INTO chronoq.jobs (queue, max_attempts, backoff_base_ms, backoff_cap_ms, jitter, "
                               "timeout_ms) VALUES ('q', 1, 0, 0, 0, 1000) RETURNING id")
    applied = await apply(conn)
    assert applied[0].label == "002_cron_seconds_first"
    stored = {r["id"]: r["cron"] for r in await conn.fetch("SELECT id, cron FROM chronoq.jobs")}
    assert stored[once] is None
    for cron in untouched:
        assert stored[ids[cron]] == cron
    start = datetime(2026, 1, 4, 23, 59, 59, tzinfo=UTC)  # a second before Monday
    for cron, times in old.items():
        rewritten = stored[ids[cron]]
        assert len(rewritten.split(" ")) == 6
        got = CronSchedule.parse(rewritten).ticks_between(start, start + timedelta(days=1), len(times))
        assert [t.strftime("%H:%M:%S") for t in got] == times, (cron, rewritten)
    assert stored[ids["30 9 * * * 15"]] == "15 30 9 * * *"
