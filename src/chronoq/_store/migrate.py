"""Numbered forward migrations, applied once each, under an advisory lock.

``migrations/NNN_name.sql`` files run in order; ``chronoq.schema_migrations`` records which
ran. Running ``migrate`` again, or from several processes at once, is safe.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from chronoq._store.connection import CONNECTION_ERRORS, Connection, connect
from chronoq.errors import ServiceUnavailableError

# Any constant works; it only has to be the same for every chronoq process.
_MIGRATION_LOCK = 0x6368726F6E6F71  # "chronoq"

_BOOKKEEPING = """
CREATE SCHEMA IF NOT EXISTS chronoq;
CREATE TABLE IF NOT EXISTS chronoq.schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    found = []
    for entry in resources.files("chronoq._store").joinpath("migrations").iterdir():
        match = re.fullmatch(r"(\d{3})_(\w+)\.sql", entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    return sorted(found, key=lambda m: m.version)


def script() -> str:
    """All migrations as one SQL script, for teams that apply schema changes with their own tools."""
    parts = [_BOOKKEEPING.strip()]
    for m in migrations():
        parts.append(f"-- migration {m.version:03d}_{m.name}\n{m.sql.strip()}")
        parts.append(
            f"INSERT INTO chronoq.schema_migrations (version, name) VALUES ({m.version}, '{m.name}');"
        )
    return "\n\n".join(parts) + "\n"


async def ensure_database(url: str) -> bool:
    """Create the database named in ``url`` if it does not exist. True if it was created."""
    try:
        conn = await asyncpg.connect(url)
    except asyncpg.InvalidCatalogNameError:
        pass
    except CONNECTION_ERRORS as exc:
        raise ServiceUnavailableError(f"cannot connect to Postgres: {type(exc).__name__}: {exc}") from exc
    else:
        await conn.close()
        return False
    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin = await connect(urlunsplit(parts._replace(path="/postgres")))
    try:
        # CREATE DATABASE takes no parameters; quote_ident makes the name safe to splice.
        quoted = await admin.fetchval("SELECT quote_ident($1)", name)
        try:
            await admin.execute(f"CREATE DATABASE {quoted}")
        except asyncpg.DuplicateDatabaseError:
            return False  # a concurrent migrate created it first
    finally:
        await admin.close()
    return True


async def apply(conn: Connection, *, until: int | None = None) -> list[Migration]:
    """Apply the migrations not yet applied (up to version ``until``, for tests of an upgrade
    from an older schema); returns the ones this call applied."""
    applied: list[Migration] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
        await conn.execute(_BOOKKEEPING)
        done = {r["version"] for r in await conn.fetch("SELECT version FROM chronoq.schema_migrations")}
        for m in migrations():
            if m.version in done or (until is not None and m.version > until):
                continue
            await conn.execute(m.sql)
            await conn.execute(
                "INSERT INTO chronoq.schema_migrations (version, name) VALUES ($1, $2)", m.version, m.name
            )
            applied.append(m)
    return applied


async def migrate(url: str) -> list[Migration]:
    await ensure_database(url)
    conn = await connect(url, application_name="chronoq-migrate")
    try:
        return await apply(conn)
    finally:
        await conn.close()


def roles_script() -> str:
    return resources.files("chronoq._store").joinpath("roles").joinpath("roles.sql").read_text(encoding="utf-8")


async def create_roles(url: str) -> None:
    """Create (or update the grants of) the producer, timer and worker roles."""
    conn = await connect(url, application_name="chronoq-migrate")
    try:
        await conn.execute(roles_script())
    finally:
        await conn.close()
