"""The reviewed snapshot of chronoq's schema, ``src/chronoq/_store/schema.sql``, and how to make it.

The snapshot is ``pg_dump --schema-only --schema=chronoq --no-owner --no-privileges`` of a
database that ``chronoq migrate`` built from nothing, without the lines that depend on the
pg_dump version or the run (header, ``SET``s, ``\\restrict`` keys). ``tests/test_migrations.py``
fails, with a unified diff, as soon as the migrations build anything else.

After adding a migration, regenerate it and review the diff with the migration:

    python -m tests.schema_snapshot            # writes src/chronoq/_store/schema.sql
    python -m tests.schema_snapshot --check    # exit 1 and print the diff if it is stale

Both use the Postgres of ``CHRONOQ_TEST_DATABASE_URL`` (an admin URL; default the local one)
and the ``pg_dump`` on PATH, or the one ``CHRONOQ_PG_DUMP`` names: use one of the server's major
version.
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import os
import re
import shutil
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

import chronoq._store
from chronoq._store.migrate import apply

SNAPSHOT = Path(chronoq._store.__file__).parent / "schema.sql"

HEADER = """\
-- chronoq's schema as `chronoq migrate` leaves an empty database: pg_dump --schema-only
-- --schema=chronoq --no-owner --no-privileges, without its version-dependent lines.
-- Generated: never edit it by hand. A change to the schema is a new migration; then run
-- `python -m tests.schema_snapshot` and review this file's diff with the migration.
"""

# Lines that vary with the pg_dump version or from run to run, not with the schema.
_UNSTABLE = re.compile(r"^(\\(un)?restrict .*|-- Dumped (from|by) .*|SET .*|SELECT pg_catalog\.set_config\(.*)$")


def normalise(dump: str) -> str:
    """``dump`` without its unstable lines, blank lines collapsed, under the snapshot's header."""
    lines = [line.rstrip() for line in dump.splitlines() if not _UNSTABLE.match(line)]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    return f"{HEADER}\n{text}\n"


def _pg_dump() -> str:
    found = os.environ.get("CHRONOQ_PG_DUMP") or shutil.which("pg_dump")
    if found is None:
        raise RuntimeError("pg_dump not found: install the PostgreSQL client of the server's major version, "
                           "or set CHRONOQ_PG_DUMP to its path")
    return found


async def dump(url: str) -> str:
    """The normalised schema-only dump of schema ``chronoq`` in the database at ``url``."""
    process = await asyncio.create_subprocess_exec(
        _pg_dump(), "--schema-only", "--schema=chronoq", "--no-owner", "--no-privileges", f"--dbname={url}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"pg_dump failed ({process.returncode}): {err.decode(errors='replace').strip()}")
    return normalise(out.decode())


def difference(expected: str, actual: str, expected_name: str, actual_name: str) -> str:
    """A unified diff of two dumps, empty when they are equal."""
    return "".join(difflib.unified_diff(expected.splitlines(keepends=True), actual.splitlines(keepends=True),
                                        expected_name, actual_name))


@asynccontextmanager
async def fresh_database(admin_url: str, prefix: str = "chronoq_schema") -> AsyncIterator[str]:
    """URL of a new, empty database, dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield urlunsplit(urlsplit(admin_url)._replace(path=f"/{name}"))
        finally:
            await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def migrated_schema(admin_url: str) -> str:
    """The normalised dump of a database built from nothing by the migrations."""
    async with fresh_database(admin_url) as url:
        conn = await asyncpg.connect(url)
        try:
            await apply(conn)
        finally:
            await conn.close()
        return await dump(url)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.schema_snapshot", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 and print the diff if stale")
    args = parser.parse_args()
    admin_url = os.environ.get("CHRONOQ_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    actual = asyncio.run(migrated_schema(admin_url))
    diff = difference(SNAPSHOT.read_text(encoding="utf-8") if SNAPSHOT.exists() else "", actual,
                      f"{SNAPSHOT.name} (snapshot)", "migrated database")
    if args.check:
        sys.stdout.write(diff)
        return 1 if diff else 0
    SNAPSHOT.write_text(actual, encoding="utf-8")
    print(f"{SNAPSHOT}: {'rewritten' if diff else 'unchanged'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
