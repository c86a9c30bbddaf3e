"""Migrations: applied from zero, idempotent, printable; `chronoq migrate` creates the database."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from chronoq._store.migrate import apply, migrations, script
from tests.conftest import child_env, database_url


@pytest.fixture
async def empty_database(services) -> AsyncIterator[str]:
    """URL of a new database with no schema at all."""
    name = f"chronoq_mig_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(services.admin_database_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield database_url(services.admin_database_url, name)
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


async def test_migrations_apply_from_zero_and_again_change_nothing(empty_database) -> None:
    conn = await asyncpg.connect(empty_database)
    try:
        applied = await apply(conn)
        assert [m.version for m in applied] == [m.version for m in migrations()]
        assert await apply(conn) == []
        tables = {r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'chronoq'")}
        assert tables == {"jobs", "wheel", "results", "attempts", "schema_migrations"}
        indexes = {r["indexname"] for r in await conn.fetch("SELECT indexname FROM pg_indexes WHERE tablename = 'wheel'")}
        assert "wheel_due" in indexes
        options = await conn.fetchval("SELECT reloptions FROM pg_class WHERE oid = 'chronoq.wheel'::regclass")
        assert "autovacuum_vacuum_scale_factor=0.0" in options
        versions = [r["version"] for r in await conn.fetch("SELECT version FROM chronoq.schema_migrations ORDER BY 1")]
        assert versions == [m.version for m in migrations()]
    finally:
        await conn.close()


async def test_concurrent_migrations_apply_once(empty_database) -> None:
    conns = [await asyncpg.connect(empty_database) for _ in range(3)]
    try:
        results = await asyncio.gather(*(apply(c) for c in conns))
        assert sorted(len(r) for r in results) == [0, 0, len(migrations())]
    finally:
        for c in conns:
            await c.close()


async def test_printed_script_builds_the_same_schema(empty_database) -> None:
    conn = await asyncpg.connect(empty_database)
    try:
        await conn.execute(script())
        assert await apply(conn) == []  # the script recorded every version
    finally:
        await conn.close()


async def test_cli_migrate_creates_a_missing_database_and_is_idempotent(services, settings, namespace) -> None:
    name = f"chronoq_new_{uuid.uuid4().hex[:10]}"
    url = database_url(services.admin_database_url, name)
    env = child_env(settings, CHRONOQ_DATABASE_URL=url)
    try:
        for _ in range(2):
            result = await asyncio.to_thread(
                subprocess.run, [sys.executable, "-m", "chronoq", "migrate"], env=env, capture_output=True, text=True, timeout=60
            )
            assert result.returncode == 0, result.stderr
        assert "up to date" in result.stdout
        printed = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "chronoq", "migrate", "--print"], env=env, capture_output=True, text=True,
            timeout=60,
        )
        assert printed.returncode == 0 and "CREATE TABLE chronoq.wheel" in printed.stdout
    finally:
        admin = await asyncpg.connect(services.admin_database_url)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def test_migration_008_removes_one_shot_jobs_whose_results_were_already_pruned(empty_database) -> None:
    # Before 008, the pruner found finished one-shot jobs by age; after it, by their results. A
    # job whose result was pruned before the upgrade has none left to be found by: 008 removes it.
    conn = await asyncpg.connect(empty_database)
    try:
        await apply(conn, until=7)
        await conn.execute("""
            INSERT INTO chronoq.jobs (id, queue, kind, max_attempts, backoff_base_ms, backoff_cap_ms, jitter, timeout_ms,
                                      cron, timezone)
            VALUES (1, 'q', 'once', 1, 0, 0, 0, 1000, NULL, NULL), (2, 'q', 'once', 1, 0, 0, 0, 1000, NULL, NULL),
                   (3, 'q', 'once', 1, 0, 0, 0, 1000, NULL, NULL), (4, 'q', 'cron', 1, 0, 0, 0, 1000, '* * * * *', 'UTC');
            INSERT INTO chronoq.wheel (occurrence_key, job_id, queue, fire_at, run_at, due_at)
            VALUES (chronoq.occurrence_key(2, now()), 2, 'q', now(), now(), now());
            INSERT INTO chronoq.results (occurrence_key, job_id, queue, fire_at, state, attempt)
            VALUES (chronoq.occurrence_key(3, now()), 3, 'q', now(), 'succeeded', 1);
        """)
        assert [m.version for m in await apply(conn, until=8)] == [8]
        # 1: its result pruned earlier, gone; 2: scheduled, 3: finished and kept, 4: recurring.
        assert [r["id"] for r in await conn.fetch("SELECT id FROM chronoq.jobs ORDER BY id")] == [2, 3, 4]
        assert await conn.fetchval("SELECT to_regclass('chronoq.jobs_once_created')") is None
    finally:
        await conn.close()
