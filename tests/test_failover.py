"""Postgres failover: chronoq on a primary with a synchronous standby (chaos.ha, slot 7), through
the primary's machine dying (SIGKILL), the standby's promotion and the old primary rebuilt as the
new standby, twice. RabbitMQ is the topology's first node: these tests need none of the suite's
default services.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from chaos import ha, ha_postgres, ha_rabbit
from chaos.ha_processes import children_of, kill_and_wait
from chronoq import Producer
from chronoq._runtime.config import Settings
from chronoq._store.connection import connect, create_pool
from chronoq._store.database_url import writable_session_attrs
from chronoq._store.migrate import apply, ensure_database
from chronoq.errors import ConfigError, ReadOnlyDatabaseError, ServiceUnavailableError
from tests.conftest import _drop_database, database_url
from tests.harness import EFFECTS_TABLE, eventually

#: This file's topology slot (other HA test files use 8 and 9).
SLOT = 7
WORKER_TARGET = "tests.handlers:worker"
#: Application names chronoq's processes give their sessions (the timer's pools and listener,
#: the worker's pool, the producer's pool).
CHRONOQ_SESSIONS = "application_name ~ '^(timer|worker)@' OR application_name LIKE 'chronoq%'"
#: Jobs must run again within this long after the primary's death (the availability target after a Postgres failover).
RECOVERY_LIMIT = 15.0
#: What a look at the database may meet while it fails over.
DATABASE_DOWN = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)


# -- the URL ----------------------------------------------------------------------------------


def test_settings_accept_a_multi_host_url_and_connect_only_where_writes_are_accepted() -> None:
    url = "postgresql://chronoq:s3cret@db1:5432,db2:5433/chronoq?target_session_attrs=read-write"
    assert Settings.load(database_url=url).database_url == url
    # Several hosts without a choice: chronoq asks for the writable one all the same.
    assert writable_session_attrs("postgresql://chronoq:s3cret@db1:5432,db2:5433/chronoq") == "read-write"
    assert writable_session_attrs("postgresql://db1/chronoq?target_session_attrs=primary") == "primary"
    assert writable_session_attrs("postgresql://db1/chronoq") is None  # one host: asyncpg's default
    for attrs in ("standby", "read-only", "prefer-standby"):
        with pytest.raises(ConfigError, match=f"target_session_attrs={attrs} may choose a standby") as refused:
            Settings.load(database_url=f"postgresql://chronoq:s3cret@db1,db2/chronoq?target_session_attrs={attrs}")
        assert "s3cret" not in str(refused.value)
    with pytest.raises(ConfigError, match="target_session_attrs=any may choose a standby"):
        Settings.load(database_url="postgresql://db1,db2/chronoq?target_session_attrs=any")
    with pytest.raises(ConfigError, match="no valid port") as bad_port:
        Settings.load(database_url="postgresql://chronoq:s3cret@db1:5432,db2:54x2/chronoq")
    assert "s3cret" not in str(bad_port.value)


async def test_a_password_in_the_url_never_shows_in_errors() -> None:
    unreachable = "postgresql://chronoq:s3cret@127.0.0.1:1,127.0.0.1:2/chronoq?connect_timeout=2"
    with pytest.raises(ServiceUnavailableError) as refused:
        async with Producer(unreachable):
            pass
    assert "s3cret" not in str(refused.value)
    with pytest.raises(ConfigError, match="connect_timeout must be a whole number") as bad:
        Settings.load(database_url="postgresql://chronoq:s3cret@db1,db2/chronoq?connect_timeout=soon")
    assert "s3cret" not in str(bad.value)


# -- the topology -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def topology() -> Iterator[ha.Topology]:
    if not ha_postgres.available() or not ha_rabbit.available():
        pytest.skip(f"the HA topology needs Postgres 15 binaries in {ha_postgres.PG_BIN} and RabbitMQ's "
                    f"server scripts in {ha_rabbit.RABBIT_BIN}")
    topo = ha.Topology(slot=SLOT)
    topo.up(synchronous=True)
    try:
        yield topo
    finally:
        topo.down()


@pytest.fixture
async def database(topology: ha.Topology) -> AsyncIterator[str]:
    """A fresh migrated database on the topology, by its multi-host URL (replaces conftest's),
    created and migrated as `chronoq migrate` does."""
    url = database_url(topology.database_url, f"chronoq_failover_{uuid.uuid4().hex[:10]}")
    assert await ensure_database(url)
    conn = await connect(url)
    try:
        await apply(conn)
        await conn.execute(EFFECTS_TABLE)
    finally:
        await conn.close()
    yield url
    with contextlib.suppress(*DATABASE_DOWN):
        await _drop_database(topology.database_url, urlsplit(url).path.lstrip("/"))


@pytest.fixture
def namespace() -> str:
    """A RabbitMQ name prefix of this test's own (replaces conftest's: the topology's RabbitMQ
    goes with the topology, its queues with it)."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def settings(topology: ha.Topology, database: str, namespace: str) -> Settings:
    """The topology's first RabbitMQ node; its Postgres hosts without ``target_session_attrs``:
    finding the writable one is chronoq's own default for a URL with several hosts."""
    url = urlunsplit(urlsplit(database)._replace(query=""))
    return Settings.load(database_url=url, amqp_url=topology.amqp_urls[0], namespace=namespace,
                         timer_max_idle="1s", shutdown_grace="10s")


def node_url(node: object, database: str) -> str:
    """A single-host URL of one node of the topology (no target_session_attrs: any role)."""
    return f"postgresql://postgres@127.0.0.1:{node.port}/{urlsplit(database).path.lstrip('/')}"  # type: ignore[attr-defined]


async def chronoq_sessions(url: str) -> list[str]:
    """Application names of chronoq's sessions on the node at ``url`` that have lasted more than a
    moment: a multi-host connect opens a session on every host it tries and drops at once the
    ones that do not accept writes."""
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(f"SELECT application_name FROM pg_stat_activity WHERE ({CHRONOQ_SESSIONS})"
                                " AND backend_start < now() - interval '1 second'")
    finally:
        await conn.close()
    return sorted(r["application_name"] for r in rows)


# -- a caller's connection to a standby -------------------------------------------------------


async def replayed_on(standby_url: str) -> asyncpg.Connection:
    """A connection to the test's database on the standby, once the standby has replayed its
    creation (a synchronous commit waits for the standby's flush, not for its replay)."""
    conn: asyncpg.Connection | None = None

    async def connected() -> bool:
        nonlocal conn
        with contextlib.suppress(asyncpg.InvalidCatalogNameError):
            conn = await asyncpg.connect(standby_url)
        return conn is not None

    await eventually(connected, timeout=10, what="the standby to replay the database's creation")
    assert conn is not None
    return conn


async def test_enqueue_on_a_callers_connection_to_the_standby_raises_a_clear_error(
    topology: ha.Topology, database: str, producer: Producer,
) -> None:
    standby = topology.standby()
    assert standby is not None
    conn = await replayed_on(node_url(standby, database))
    try:
        async with conn.transaction():
            with pytest.raises(ReadOnlyDatabaseError, match="standby") as refused:
                await producer.enqueue("effects", {}, connection=conn)
            assert isinstance(refused.value, ServiceUnavailableError)  # an outage to its caller: retry on the primary
            with pytest.raises(ReadOnlyDatabaseError, match="standby"):
                await producer.enqueue_many([{"queue": "effects"}], connection=conn)
            # Refused before anything was sent: the caller's transaction is still usable.
            assert await conn.fetchval("SELECT pg_is_in_recovery()") is True
    finally:
        await conn.close()
    # A read-only transaction on the primary is refused by Postgres (SQLSTATE 25006), with the same error.
    conn = await asyncpg.connect(database)
    try:
        async with conn.transaction(readonly=True):
            with pytest.raises(ReadOnlyDatabaseError, match="25006"):
                await producer.enqueue("effects", {}, connection=conn)
    finally:
        await conn.close()


# -- services through failovers ---------------------------------------------------------------


class Enqueuer:
    """Enqueues a job every few milliseconds through a failover, remembering every id returned
    and counting the calls refused as unavailable (they may or may not have committed)."""

    def __init__(self, producer: Producer) -> None:
        self.producer = producer
        self.returned: list[int] = []
        self.refused = 0
        self._stop = asyncio.Event()

    async def run(self) -> None:
        while not self._stop.is_set():
            try:
                self.returned.append(await self.producer.enqueue("effects", {}))
            except ServiceUnavailableError:
                self.refused += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), 0.02)

    def stop(self) -> None:
        self._stop.set()


async def ran_since(database: str, wall_time: float) -> float | None:
    """Seconds from ``wall_time`` until the first effect whose transaction began after it, if any.
    (The topology runs on this host: the database's clock is this host's.)"""
    with contextlib.suppress(*DATABASE_DOWN):
        conn = await asyncpg.connect(database)
        try:
            return await conn.fetchval("SELECT extract(epoch FROM min(at)) - $1 FROM test_effects"
                                       " WHERE at > to_timestamp($1)", wall_time)
        finally:
            await conn.close()
    return None


async def fail_over_and_measure(topology: ha.Topology, database: str) -> float:
    """One failover while the services run; returns the seconds from the kill until jobs run again."""
    called_at = time.time()
    timings = await asyncio.to_thread(topology.failover)
    killed_at = called_at + timings["killed"]  # the failover's first step: the primary is dead from here
    recovery: float | None = None

    async def jobs_run_again() -> bool:
        nonlocal recovery
        recovery = await ran_since(database, killed_at)
        return recovery is not None

    await eventually(jobs_run_again, timeout=60, what="jobs to run again after the failover")
    assert recovery is not None
    print(f"failover: {timings}; jobs ran again {recovery:.2f} s after the kill")
    return recovery


async def test_timer_worker_and_producer_run_every_job_exactly_once_through_two_failovers(
    topology: ha.Topology, database: str, settings: Settings, spawn,
) -> None:
    timer = spawn("timer", name="timer")
    worker = spawn("worker", WORKER_TARGET, "--queue", "effects", name="worker")
    await timer.wait_for_log("timer_started")
    await worker.wait_for_log("worker_started")
    async with Producer(settings.database_url) as producer:
        enqueuer = Enqueuer(producer)
        enqueuing = asyncio.create_task(enqueuer.run())
        try:
            await eventually(lambda: ran_enough(database, 20), what="the first jobs to run")
            recoveries = []
            for n in range(2):
                recoveries.append(await fail_over_and_measure(topology, database))
                returned = len(enqueuer.returned)
                await eventually(lambda returned=returned: enqueued_beyond(enqueuer, returned), timeout=20,
                                 what="the producer to enqueue again after the failover")
                # Connections opened now, with the old primary back as a standby (the first host
                # of the URL after the first failover), find the primary too.
                late_worker = spawn("worker", WORKER_TARGET, "--queue", "effects", name=f"worker-after-{n}")
                await late_worker.wait_for_log("worker_started")
                async with Producer(settings.database_url) as late_producer:
                    enqueuer.returned.append(await late_producer.enqueue("effects", {}))
                await no_chronoq_session_on_the_standby(topology, database)
                # The timer's listener came back too (on the new primary).
                await eventually(lambda: listening_on_primary(topology, database), timeout=20,
                                 what="the timer's NOTIFY listener on the new primary")
        finally:
            enqueuer.stop()
            await enqueuing
        print(f"recoveries (kill to jobs running): {[f'{r:.2f} s' for r in recoveries]}; "
              f"{len(enqueuer.returned)} enqueues returned, {enqueuer.refused} refused as unavailable")
        assert all(r < RECOVERY_LIMIT for r in recoveries), recoveries

        async def all_ran() -> bool:
            return (await producer.summary(enqueuer.returned))["pending"] == 0

        await eventually(all_ran, timeout=60, what="every enqueued job to finish")
        summary = await producer.summary(enqueuer.returned)
        async with producer.pool.acquire() as conn:
            effects = await conn.fetch("SELECT job_id, count(*) AS n FROM test_effects GROUP BY job_id")
    runs = {r["job_id"]: r["n"] for r in effects}
    assert summary["succeeded"] == len(enqueuer.returned), summary
    assert [i for i in enqueuer.returned if runs.get(i) != 1] == [], "every returned enqueue ran exactly once"
    assert [job for job, n in runs.items() if n > 1] == [], "no job ran twice"
    assert timer.popen.poll() is None and worker.popen.poll() is None, "the services outlived the failovers"


async def enqueued_beyond(enqueuer: Enqueuer, count: int) -> bool:
    return len(enqueuer.returned) > count


async def ran_enough(database: str, count: int) -> bool:
    conn = await asyncpg.connect(database)
    try:
        return bool(await conn.fetchval("SELECT count(*) >= $1 FROM test_effects", count))
    finally:
        await conn.close()


async def no_chronoq_session_on_the_standby(topology: ha.Topology, database: str) -> None:
    """The timer's and the worker's sessions are on the new primary, and none on the standby."""
    standby, primary = topology.standby(), topology.primary()
    assert standby is not None

    async def services_on_primary() -> bool:
        names = await chronoq_sessions(node_url(primary, database))
        return any(n.startswith("timer@") for n in names) and any(n.startswith("worker@") for n in names)

    await eventually(services_on_primary, timeout=20, what="the timer's and worker's sessions on the new primary")
    assert await chronoq_sessions(node_url(standby, database)) == []


async def listening_on_primary(topology: ha.Topology, database: str) -> bool:
    return any(name.endswith("-listen") for name in await chronoq_sessions(node_url(topology.primary(), database)))


# -- a host that answers nothing ----------------------------------------------------------------


async def test_a_silent_first_host_costs_a_new_connection_its_connect_timeout_once(
    topology: ha.Topology, database: str,
) -> None:
    """The primary's machine hangs (SIGSTOP: connections are accepted and never answered, as a
    dead machine's are never refused) and the standby is promoted. A URL listing the silent host
    first still connects, after that host's connect_timeout, to the new primary, and the next
    connection goes there at once."""
    old, new = topology.primary(), topology.standby()
    assert new is not None
    name = urlsplit(database).path.lstrip("/")
    url = f"postgresql://postgres@127.0.0.1:{old.port},127.0.0.1:{new.port}/{name}"
    hung = [pid for pid in (old.pid(),) if pid is not None]
    hung += children_of(hung[0])
    for pid in hung:
        os.kill(pid, signal.SIGSTOP)
    try:
        await asyncio.to_thread(new.promote)
        new.set_synchronous_standby_names("")
        # asyncpg alone spends its whole connect timeout on the silent host and never tries the next.
        with pytest.raises(TimeoutError):
            await asyncpg.connect(url, timeout=6, target_session_attrs="read-write")
        started = time.monotonic()
        conn = await connect(f"{url}?connect_timeout=2")
        first = time.monotonic() - started
        try:
            assert await conn.fetchval("SELECT pg_is_in_recovery()") is False
        finally:
            await conn.close()
        started = time.monotonic()
        pool = await create_pool(f"{url}?connect_timeout=2", min_size=2, max_size=2)
        again = time.monotonic() - started
        try:
            assert await pool.fetchval("SELECT current_setting('port')::int") == new.port
        finally:
            await pool.close()
        print(f"silent first host: first connection after {first:.2f} s, a pool of two after {again:.2f} s")
        assert 2 <= first < 5
        assert again < 1
    finally:
        await asyncio.to_thread(kill_and_wait, hung, old.cluster_name)
        await asyncio.to_thread(old.rebuild_as_standby, new)
        await asyncio.to_thread(topology.set_synchronous, True)
