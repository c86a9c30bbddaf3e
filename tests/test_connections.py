"""What each component's Postgres connections change from the server's settings, and what they
leave alone (chronoq/_store/connection.py)."""

from __future__ import annotations

import asyncio

import pytest

from chronoq._store.connection import create_pool
from chronoq._store.sql import query
from chronoq.consumer.job_connection import JobConnection
from chronoq.consumer.registry import Worker
from chronoq.consumer.service import WorkerService
from chronoq.consumer.writes import GroupWrites
from chronoq.errors import ServiceUnavailableError
from chronoq.producer.client import Producer
from chronoq.timer.service import Timer


async def _settings_of(pool) -> tuple[str, str]:
    async with pool.acquire() as conn:
        return await conn.fetchval("SHOW synchronous_commit"), await conn.fetchval("SHOW plan_cache_mode")


async def test_the_timers_sessions_are_not_reset_on_release_but_open_transactions_still_end(settings) -> None:
    timer = Timer(settings)
    await timer.start()
    try:
        pool = timer._dispatch_pool  # one connection: the next acquire gets it back
        async with pool.acquire() as conn:
            pid = conn.get_server_pid()
            await conn.execute("SET work_mem = '7MB'")
            await conn.execute("BEGIN")  # left open, as a batch that raised mid-way would
        async with pool.acquire() as conn:
            assert conn.get_server_pid() == pid
            assert not conn.is_in_transaction()  # asyncpg still rolls back on release
            assert await conn.fetchval("SHOW work_mem") == "7MB"  # no RESET ALL (nor its three siblings)
    finally:
        await timer.close()
    async with Producer(settings.database_url) as producer:
        async with producer.pool.acquire() as conn:
            await conn.execute("SET work_mem = '7MB'")
        async with producer.pool.acquire() as conn:
            assert await conn.fetchval("SHOW work_mem") != "7MB"  # a caller-facing pool is reset


async def test_a_workers_connection_is_reset_on_release_only_after_a_handler_used_it(settings) -> None:
    pool = await create_pool(settings.database_url, max_size=1, own_sessions=True)  # as the worker's
    try:
        async with pool.acquire() as conn:  # chronoq's own statements only: nothing to undo
            await conn.execute("SET work_mem = '7MB'")
        async with pool.acquire() as conn:
            assert await conn.fetchval("SHOW work_mem") == "7MB"  # not reset
            async with conn.transaction():
                db = JobConnection(conn, GroupWrites(conn, savepoints=False))  # what a handler gets as ctx.db
                await db.execute("SET work_mem = '9MB'")  # session-wide: outlives the group
            assert await conn.fetchval("SHOW work_mem") == "9MB"
        async with pool.acquire() as conn:
            assert await conn.fetchval("SHOW work_mem") != "9MB"  # reset: the next group starts clean
            await conn.execute("SET work_mem = '7MB'")
        async with pool.acquire() as conn:
            assert await conn.fetchval("SHOW work_mem") == "7MB"  # and the mark does not stick
    finally:
        await pool.close()


async def test_only_the_timers_batches_commit_without_waiting_for_the_wal_flush(settings, db) -> None:
    server = await db.fetchval("SHOW synchronous_commit")
    assert server != "off"  # otherwise this test proves nothing
    timer = Timer(settings)
    await timer.start()
    try:
        assert await _settings_of(timer._dispatch_pool) == ("off", "force_generic_plan")
        assert await _settings_of(timer._pool) == (server, "force_custom_plan")  # ingest stays durable
    finally:
        await timer.close()
    worker = Worker()

    @worker.handler("anything")
    async def anything(ctx, payload: dict) -> None:
        pass

    service = WorkerService(worker, settings)
    await service.start()
    try:
        assert await _settings_of(service._pool) == (server, "force_generic_plan")  # the results' commit
    finally:
        await service.close()


async def test_the_producer_plans_and_commits_as_the_server_says(settings, db) -> None:
    server = (await db.fetchval("SHOW synchronous_commit"), await db.fetchval("SHOW plan_cache_mode"))
    async with Producer(settings.database_url) as producer:
        await producer.enqueue("anything", {})  # opens the pool
        assert await _settings_of(producer.pool) == server


async def test_the_producers_lookups_keep_their_index_in_a_generic_plan_made_on_empty_tables(db) -> None:
    """The producer runs with Postgres's default plan cache mode, which settles on a generic plan
    after five runs: one made while `jobs` was empty must still look keys up by index."""
    await db.execute("SET plan_cache_mode = force_generic_plan")
    for name in ("enqueue", "existing_ids"):
        statement = await db.prepare(query(name))
        types = [await db.fetchval("SELECT format_type($1::oid, NULL)", t.oid) for t in statement.get_parameters()]
        await db.execute(f"PREPARE generic_{name} ({', '.join(types)}) AS {query(name)}")
        nulls = ", ".join("NULL" for _ in types)
        plan = "\n".join(r[0] for r in await db.fetch(f"EXPLAIN EXECUTE generic_{name} ({nulls})"))
        assert "Seq Scan on jobs" not in plan and "jobs_queue_key" in plan, (name, plan)


async def test_a_service_whose_start_fails_closes_what_it_opened(settings) -> None:
    """A half-started timer or worker must not leave pools or a reconnecting broker connection
    behind: asyncio.run would wait for them on the way out and the process would never exit."""
    unreachable = settings.model_copy(update={"amqp_url": "amqp://guest:guest@127.0.0.1:1/"})
    worker = Worker()

    @worker.handler("anything")
    async def anything(ctx, payload: dict) -> None:
        pass

    for service in (Timer(unreachable), WorkerService(worker, unreachable)):
        with pytest.raises(ServiceUnavailableError):
            await service.run()
        assert service._pool is None or service._pool.is_closing(), type(service).__name__
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert not [t for t in others if not t.done()], others


async def test_a_broker_that_accepts_the_connection_and_never_answers_is_unavailable_not_a_hang() -> None:
    """A broker still booting can accept TCP and say nothing: a starting timer or worker must
    give up as unavailable (exit code 3, restarted by its supervisor), not wait for ever."""
    from chronoq._broker.connection import connect as connect_broker

    accepted: list[asyncio.StreamWriter] = []

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # held open, never written to

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(ServiceUnavailableError, match=r"no answer within 0\.5 s"):
            await asyncio.wait_for(connect_broker(f"amqp://guest:guest@127.0.0.1:{port}/", name="t", timeout=0.5), 10)
        assert accepted  # it did reach the socket: the handshake is what timed out
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_a_connection_lost_during_a_start_is_unavailable_not_a_crash(settings, db) -> None:
    """A timer's Postgres connection cut between connecting and its first query (chaos seed
    727994) crashed the process with a traceback; it is the same as a refused connection:
    unavailable, exit code 3, start again."""
    import logging

    import asyncpg

    from chronoq._broker.connection import BROKER_ERRORS
    from chronoq._runtime.service import start_or_close
    from chronoq._store.connection import CONNECTION_ERRORS

    closed: list[bool] = []

    async def start() -> None:
        conn = await asyncpg.connect(settings.database_url)
        try:
            # Waits until the backend is gone (PG 14+): the next query meets a dead connection.
            assert await db.fetchval("SELECT pg_terminate_backend($1, 10000)", conn.get_server_pid())
            await conn.fetchval("SELECT 1")
        finally:
            conn.terminate()

    async def close() -> None:
        closed.append(True)

    with pytest.raises(ServiceUnavailableError, match="lost a connection while starting"):
        await start_or_close(start, close, logging.getLogger("test"), unavailable=(*CONNECTION_ERRORS, *BROKER_ERRORS))
    assert closed

    async def refused_grant() -> None:  # anything else is not "unavailable": it stays what it is
        raise asyncpg.InsufficientPrivilegeError("permission denied for table wheel")

    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await start_or_close(refused_grant, close, logging.getLogger("test"), unavailable=CONNECTION_ERRORS)


async def test_a_channel_asked_of_a_broker_connection_that_is_down_is_a_broker_error(settings) -> None:
    """aio-pika raises a bare RuntimeError for a channel on a connection that is not open (a
    robust one between reconnects); chronoq's callers see a broker error, which the timer
    retries as expected instead of logging an error with a traceback."""
    from chronoq._broker.connection import BROKER_ERRORS, open_channel
    from chronoq._broker.connection import connect as connect_broker

    connection = await connect_broker(settings.amqp_url, name="test-down")
    channel = await open_channel(connection)
    assert not channel.is_closed
    await connection.close()
    with pytest.raises(BROKER_ERRORS, match="the broker connection is down"):
        await open_channel(connection)
