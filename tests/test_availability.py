""""Unavailable" is a narrow classification: only an outage (or a conflict that changed nothing,
or a deployment not ready) hands work back; every other failure is the work's own fault and
sets it aside. Checked on errors raised by the real services, not constructed by hand."""

from __future__ import annotations

import aio_pika
import asyncpg
import pytest

from chronoq._broker.connection import open_channel
from chronoq._broker.publisher import Unpublishable
from chronoq._runtime.availability import unavailable
from chronoq._store.connection import translated
from chronoq.errors import ConfigError, InvalidJobError, ServiceUnavailableError


async def _raised(db, statement: str) -> BaseException:
    with pytest.raises(asyncpg.PostgresError) as caught:
        await db.execute(statement)
    return caught.value


@pytest.mark.parametrize(("statement", "is_outage"), [
    ("SELECT 1 / 0", False),  # the statement's values are wrong
    ("SELECT 'x'::int", False),
    ("SELECT repeat('x', 10)::varchar(2)::char(1) || chr(0)", False),
    ("DO $$ BEGIN RAISE EXCEPTION 'an operator trigger refused it'; END $$", False),
    ("SELECT * FROM chronoq.no_such_table", True),  # a deployment not migrated: not the job's fault
    ("SET TRANSACTION READ ONLY; CREATE TABLE ro_test (x int)", True),  # a standby during failover
])
async def test_postgres_errors_are_an_outage_only_when_the_server_cannot_serve(db, statement, is_outage) -> None:
    async with db.transaction():
        exc = await _raised(db, statement)
    assert unavailable(exc) is is_outage, f"{type(exc).__name__} ({exc.sqlstate})"


async def test_a_connection_refused_or_terminated_is_an_outage(settings, db) -> None:
    with pytest.raises(OSError) as refused:
        await asyncpg.connect("postgresql://postgres@127.0.0.1:1/postgres")
    assert unavailable(refused.value)
    victim = await asyncpg.connect(settings.database_url)
    try:
        await db.execute("SELECT pg_terminate_backend($1)", victim.get_server_pid())
        # What a query meets depends on how far asyncpg got with the server's goodbye: every form is an outage.
        with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError)) as lost:
            await victim.fetchval("SELECT 1")
        assert unavailable(lost.value), type(lost.value).__name__
        assert isinstance(translated(lost.value), ServiceUnavailableError)
    finally:
        victim.terminate()


async def test_a_broken_broker_connection_is_an_outage_and_a_refused_message_is_not(settings) -> None:
    connection = await aio_pika.connect_robust(settings.amqp_url)
    await connection.close()
    with pytest.raises(aio_pika.exceptions.AMQPConnectionError) as closed:
        await open_channel(connection)  # how every chronoq service asks for a channel
    assert unavailable(closed.value), type(closed.value).__name__
    assert not unavailable(Unpublishable("headers larger than the frame"))
    assert not unavailable(InvalidJobError("queue", "does not match"))
    assert not unavailable(ValueError("a bug"))
    assert not unavailable(KeyError("a bug"))


async def test_a_missing_database_or_role_is_a_configuration_error_not_an_outage(services) -> None:
    for url in ("postgresql://postgres@127.0.0.1:5432/chronoq_no_such_database",
                "postgresql://chronoq_no_such_role@127.0.0.1:5432/postgres"):
        with pytest.raises(asyncpg.PostgresError) as caught:
            await asyncpg.connect(url)
        assert isinstance(translated(caught.value), ConfigError), url
