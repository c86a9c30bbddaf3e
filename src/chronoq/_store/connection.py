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


class OwnSession(asyncpg.Connection):
    """A pooled connection that runs chronoq's own statements, which leave no session state
    behind: on release asyncpg still rolls back an open transaction and drops listeners, but the
    reset query (advisory locks, cursors, LISTENs, settings: four statements, one round trip) is
    sent only if the connection was lent to other code since (``lend``: a handler's ``ctx.db``)."""

    __slots__ = ("_lent",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lent = False

    def lend(self) -> None:
        self._lent = True

    def get_reset_query(self) -> str:  # what asyncpg's reset on release sends
        if not self._lent:
            return ""
        self._lent = False
        return super().get_reset_query()


async def connect(url: str, *, application_name: str = "chronoq") -> asyncpg.Connection:
    try:
        conn = await asyncpg.connect(url, server_settings={"application_name": application_name})
    except CONNECTION_ERRORS as exc:
        raise ServiceUnavailableError(f"cannot connect to Postgres: {type(exc).__name__}: {exc}") from exc
    await init_connection(conn)
    return conn


async def create_pool(
    url: str, *, min_size: int = 1, max_size: int = 10, application_name: str = "chronoq",
    synchronous_commit: bool = True, custom_plans: bool = True, own_sessions: bool = False,
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
    # own_sessions (timers and workers): connections no caller acquires (see OwnSession); the
    # producer's pool is public (Producer.pool) and is always reset.
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
            connection_class=OwnSession if own_sessions else asyncpg.Connection,
        )
    except CONNECTION_ERRORS as exc:
        raise ServiceUnavailableError(f"cannot connect to Postgres: {type(exc).__name__}: {exc}") from exc


@contextlib.asynccontextmanager
async def acquire(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    async with pool.acquire() as conn:
        yield conn
