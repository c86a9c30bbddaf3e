"""Numbered forward migrations, applied once each, under an advisory lock.

``migrations/NNN_name.sql`` files run in order; ``chronoq.schema_migrations`` records which
ran. Running ``migrate`` again, or from several processes at once, is safe.

Migrations are additive: a migration that has shipped is never edited, merged or undone; a
change to the schema is a new file with the next number, and the reviewed snapshot
``schema.sql`` beside this module changes with it (``python -m tests.schema_snapshot`` writes
it; ``tests/test_migrations.py`` fails on any difference).

``001_baseline`` stands for the nine migrations of :data:`REPLACED_SERIES` and builds exactly
their schema (``tests/test_migrations.py`` compares the two). A database that recorded all
nine is moved onto the baseline by rewriting its records; one that recorded only some, or a
migration this chronoq does not have, is refused with a :class:`ConfigError` that says where
it stands.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from chronoq._store.connection import CONNECTION_ERRORS, Connection, connect, open_session
from chronoq._store.sql import query
from chronoq.errors import ConfigError, ServiceUnavailableError

log = logging.getLogger("chronoq.migrate")

# Any constant works; it only has to be the same for every chronoq process.
_MIGRATION_LOCK = 0x6368726F6E6F71  # "chronoq"

#: Names of the migrations 1..9 that ``001_baseline`` replaces, as databases recorded them.
REPLACED_SERIES = (
    "core", "recurring", "retention", "tracing", "hot_starts", "dispatch_ids", "wheel_without_foreign_key",
    "jobs_pruned_with_their_results", "elapsed_durations",
)


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def label(self) -> str:
        return _label(self.version, self.name)


def _label(version: int, name: str) -> str:
    return f"{version:03d}_{name}"


def migrations() -> list[Migration]:
    found = []
    for entry in resources.files("chronoq._store").joinpath("migrations").iterdir():
        match = re.fullmatch(r"(\d{3})_(\w+)\.sql", entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    return sorted(found, key=lambda m: m.version)


def script() -> str:
    """All migrations as one SQL script for an empty database, for teams that apply schema
    changes with their own tools; ``-- migration NNN_name`` opens each one."""
    parts = [query("create_bookkeeping")]
    for m in migrations():
        parts.append(f"-- migration {m.label}\n{m.sql.strip()}")
        # A printed script takes no parameters: the version is a number and the name matched
        # \w+ (the file naming rule above), so both are safe as literals.
        parts.append(query("record_migration").replace("$1", str(m.version)).replace("$2", f"'{m.name}'"))
    return "\n\n".join(parts) + "\n"


async def ensure_database(url: str) -> bool:
    """Create the database named in ``url`` if it does not exist. True if it was created."""
    try:
        conn = await open_session(url)
    except asyncpg.InvalidCatalogNameError:
        pass
    except CONNECTION_ERRORS as exc:
        raise ServiceUnavailableError(f"cannot connect to Postgres: {type(exc).__name__}: {exc}") from exc
    else:
        await conn.close()
        return False
    parts = urlsplit(url)
    admin = await connect(urlunsplit(parts._replace(path="/postgres")))
    try:
        statement = await admin.fetchval(query("create_database_statement"), parts.path.lstrip("/"))
        try:
            await admin.execute(statement)
        except asyncpg.DuplicateDatabaseError:
            return False  # a concurrent migrate created it first
    finally:
        await admin.close()
    return True


async def apply(conn: Connection) -> list[Migration]:
    """Apply the migrations not yet applied; returns the ones this call applied. A database
    that recorded the whole of :data:`REPLACED_SERIES` is first moved onto the baseline."""
    applied: list[Migration] = []
    known = migrations()
    async with conn.transaction():
        await conn.execute(query("lock_migrations"), _MIGRATION_LOCK)
        await conn.execute(query("create_bookkeeping"))
        recorded = {r["version"]: r["name"] for r in await conn.fetch(query("recorded_migrations"))}
        if recorded == _replaced_series_records():
            baseline = known[0]
            await conn.execute(query("rebase_on_baseline"), baseline.version, baseline.name)
            recorded = {baseline.version: baseline.name}
            log.info("records of the replaced migrations rewritten to the baseline",
                     extra={"action": "migrations_rebased", "replaced": len(REPLACED_SERIES), "baseline": baseline.label})
        _refuse_unknown(recorded, known)
        for m in known:
            if m.version in recorded:
                continue
            await conn.execute(m.sql)
            await conn.execute(query("record_migration"), m.version, m.name)
            applied.append(m)
    return applied


def _replaced_series_records() -> dict[int, str]:
    return {version: name for version, name in enumerate(REPLACED_SERIES, start=1)}


def _refuse_unknown(recorded: dict[int, str], known: list[Migration]) -> None:
    """Raise ConfigError if the database recorded a migration that is not one of ``known``."""
    names = {m.version: m.name for m in known}
    strange = [(v, name) for v, name in sorted(recorded.items()) if names.get(v) != name]
    if not strange:
        return
    highest = _label(*strange[-1])
    replaced = _replaced_series_records()
    if all(replaced.get(v) == name for v, name in strange):
        raise ConfigError(
            f"the chronoq schema is at {highest}, short of the {len(replaced)} migrations {known[0].label} "
            f"replaces: bring it to {_label(len(replaced), replaced[len(replaced)])} with the chronoq that "
            f"migrated it, then migrate again; or DROP SCHEMA chronoq CASCADE (losing its data) and migrate"
        )
    if strange[-1][0] > known[-1].version:
        raise ConfigError(
            f"the chronoq schema is at {highest}, newer than this chronoq (its latest "
            f"is {known[-1].label}): run a chronoq at least as new as the one that migrated it"
        )
    v, name = strange[0]
    raise ConfigError(
        f"the database records migration {_label(v, name)}, which this chronoq does not have (its own "
        f"{v:03d} is {_label(v, names.get(v, '-'))}): migrate it with the chronoq that created it"
    )


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
