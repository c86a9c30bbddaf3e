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
            result = subprocess.run([sys.executable, "-m", "chronoq", "migrate"], env=env, capture_output=True, text=True, timeout=60)
            assert result.returncode == 0, result.stderr
        assert "up to date" in result.stdout
        printed = subprocess.run([sys.executable, "-m", "chronoq", "migrate", "--print"], env=env, capture_output=True, text=True, timeout=60)
        assert printed.returncode == 0 and "CREATE TABLE chronoq.wheel" in printed.stdout
    finally:
        admin = await asyncpg.connect(services.admin_database_url)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
