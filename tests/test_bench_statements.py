"""The bench's per-statement breakdown (bench/statements.py) against a Postgres that loads
pg_stat_statements: a throwaway cluster this module starts with the server's own initdb and
pg_ctl, and stops. Skipped where those are not installed (or, run as root, where there is no
``postgres`` user to run them as)."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from chronoq._store import wheel
from chronoq._store.migrate import apply
from chronoq._store.sql import query
from chronoq.bench import statements

SERVER_SETTINGS = """
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{directory}'
shared_preload_libraries = 'pg_stat_statements'
pg_stat_statements.track_planning = on
fsync = off
"""


def _server_bin() -> Path | None:
    found = shutil.which("initdb") or max(glob.glob("/usr/lib/postgresql/*/bin/initdb"), default=None)
    return Path(found).parent if found else None


def _as_server_user() -> list[str]:
    """initdb and the server refuse to run as root: run them as ``postgres`` then."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("run as root without a postgres user to start a cluster as")
    if shutil.which("runuser") is None:
        pytest.skip("run as root without runuser")
    return ["runuser", "-u", "postgres", "--"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def cluster_url() -> Iterator[str]:
    """A cluster of its own with pg_stat_statements loaded; stopped and removed afterwards."""
    bin_dir = _server_bin()
    if bin_dir is None:
        pytest.skip("no initdb on this machine")
    prefix = _as_server_user()
    directory = Path(tempfile.mkdtemp(prefix="chronoq-pgss-"))
    data = directory / "data"
    if prefix:
        shutil.chown(directory, "postgres")
    try:
        subprocess.run([*prefix, str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
                        "--no-sync", "-E", "UTF8"], check=True, capture_output=True, timeout=60)
        port = _free_port()
        with (data / "postgresql.conf").open("a") as conf:
            conf.write(SERVER_SETTINGS.format(port=port, directory=directory))
        subprocess.run([*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(directory / "log"), "-w",
                        "start"], check=True, capture_output=True, timeout=60)
        try:
            yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
        finally:
            subprocess.run([*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                           check=True, capture_output=True, timeout=60)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
async def conn(cluster_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(cluster_url)
    try:
        await connection.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        await apply(connection)
        yield connection
    finally:
        await connection.close()


async def _look(conn: asyncpg.Connection) -> None:
    """Five round trips, as the timer's statements: some with constants the extension rewrites."""
    await wheel.next_due(conn, count_backlog=False)  # extract(epoch ...): the field is a constant
    async with conn.transaction():
        await wheel.claim_due(conn, 10)  # 'skip' and 1
    await conn.execute(query("mark_dispatched"), [], [], 1)  # NULL, false


async def test_the_breakdown_counts_chronoqs_statements_by_name_per_unit_and_leaves_the_bench_out(conn) -> None:
    await _look(conn)  # the driver's first use of the statements' types: its own queries, before the window
    unavailable = await statements.begin(conn)
    assert unavailable is None
    looks = 4
    for _ in range(looks):
        await _look(conn)
    await conn.fetchval(query("pending_in_range"), 1, 2)  # the bench's own poll

    found = await statements.breakdown(conn, unavailable, units=looks, per="look")

    assert found["available"] is True and found["per"] == "look" and found["track_planning"] is True
    by_name = {s["name"]: s for s in found["top"] if s["name"]}
    assert {"next_due", "claim_due", "mark_dispatched"} <= by_name.keys()
    next_due = by_name["next_due"]
    assert next_due["calls"] == 1.0 and next_due["plans"] > 0 and next_due["plan_ms"] > 0 and next_due["exec_ms"] > 0
    assert next_due["query"].startswith("SELECT extract(") and len(next_due["query"]) <= statements.QUERY_CHARS
    assert not by_name.keys() & statements.OWN
    begins = [s for s in found["top"] if s["query"] == "BEGIN"]
    assert [s["calls"] for s in begins] == [1.0]  # unnamed statements keep their text
    assert found["total"]["calls"] == 5.0  # the bench's own left out
    assert found["total"]["exec_ms"] >= sum(s["exec_ms"] for s in found["top"]) - 0.001


async def test_a_database_without_the_extension_gives_the_reason_and_no_figures(conn, cluster_url: str) -> None:
    await conn.execute("DROP DATABASE IF EXISTS without_pgss")
    await conn.execute("CREATE DATABASE without_pgss")
    try:
        plain = await asyncpg.connect(cluster_url.rsplit("/", 1)[0] + "/without_pgss")
        try:
            unavailable = await statements.begin(plain)
            assert unavailable is not None and "pg_stat_statements_reset" in unavailable
            assert await statements.breakdown(plain, unavailable, units=1, per="job") == {
                "available": False, "reason": unavailable}
        finally:
            await plain.close()
    finally:
        await conn.execute("DROP DATABASE without_pgss")
