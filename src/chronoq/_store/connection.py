"""Opening Postgres connections and pools, with chronoq's codecs and error translation."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson

from chronoq.errors import ServiceUnavailableError

#: Errors that mean "the database is not reachable right now" rather than "the query is wrong".
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    TimeoutError,
)


class RawJson:
    """Already-encoded JSON, passed to a jsonb parameter without decoding and re-encoding."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


def _encode_jsonb(value: Any) -> bytes:
    # jsonb's binary format is a version byte (1) followed by the JSON text.
    if isinstance(value, RawJson):
        return b"\x01" + value.data
    return b"\x01" + orjson.dumps(value)


def _decode_jsonb(data: bytes) -> Any:
    return orjson.loads(data[1:])


async def init_connection(conn: asyncpg.Connection) -> None:
    """Per-connection set-up: jsonb through orjson, in binary."""
    await conn.set_type_codec(
        "jsonb", schema="pg_catalog", encoder=_encode_jsonb, decoder=_decode_jsonb, format="binary"
    )


async def _keep_session(_conn: asyncpg.Connection) -> None:
    """A pool's reset for sessions only chronoq's own statements use: asyncpg still rolls back
    an open transaction and drops listeners on release; the reset query's four statements
    (advisory locks, cursors, LISTENs, settings) would find nothing to undo."""


async def connect(url: str, *, application_name: str = "chronoq") -> asyncpg.Connection:
    try:
        conn = await asyncpg.connect(url, server_settings={"application_name": application_name})
    except CONNECTION_ERRORS as exc:
        raise ServiceUnavailableError(f"cannot connect to Postgres: {type(exc).__name__}: {exc}") from exc
    await init_connection(conn)
    return conn


async def create_pool(
    url: str, *, min_size: int = 1, max_size: int = 10, application_name: str = "chronoq",
    synchronous_commit: bool = True, custom_plans: bool = True, reset_on_release: bool = True,
    connection_class: type[asyncpg.Connection] = asyncpg.Connection,
) -> asyncpg.Pool:
    # custom_plans (timers and workers): asyncpg prepares every statement, and after five runs
    # Postgres may switch it to a generic plan made for no particular parameters and for the
    # table as it was then. A claim planned while the wheel was empty stayed slow for the next
    # burst (1.8k vs 3.2k jobs/s, `chronoq bench burst --runs 3`), and generic plans for the
    # worker's statements, made while the results table was small, drained a 20k burst at 1.5k
    # instead of 2.6k jobs/s on this server (autovacuum off: nothing re-plans them).
    # The producer keeps Postgres's default, as on a caller's own connection: force_custom_plan
    # also re-plans every foreign-key check (one per row) and every trigger statement, and with it
    # single enqueues ran at 2.6k instead of 3.2-3.6k jobs/s, bulk at 33-38k instead of 60k.
    # Only what chronoq changes is sent: the server's own settings (a synchronous_commit of
    # remote_apply for a standby, say) stay in force everywhere else.
    settings = {"application_name": application_name}
    if custom_plans:
        settings["plan_cache_mode"] = "force_custom_plan"
    if not synchronous_commit:
        settings["synchronous_commit"] = "off"
    try:
        return await asyncpg.create_pool(
            url, min_size=min_size, max_size=max_size, init=init_connection, server_settings=settings,
            reset=None if reset_on_release else _keep_session, connection_class=connection_class,
        )
    except CONNECTION_ERRORS as exc:
        raise ServiceUnavailableError(f"cannot connect to Postgres: {type(exc).__name__}: {exc}") from exc


@contextlib.asynccontextmanager
async def acquire(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    async with pool.acquire() as conn:
        yield conn
