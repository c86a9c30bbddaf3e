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


async def connect(url: str, *, application_name: str = "chronoq") -> asyncpg.Connection:
    try:
        conn = await asyncpg.connect(url, server_settings={"application_name": application_name})
    except CONNECTION_ERRORS as exc:
        raise ServiceUnavailableError(f"cannot connect to Postgres: {type(exc).__name__}: {exc}") from exc
    await init_connection(conn)
    return conn


async def create_pool(
    url: str, *, min_size: int = 1, max_size: int = 10, application_name: str = "chronoq",
    synchronous_commit: bool = True,
) -> asyncpg.Pool:
    # force_custom_plan: asyncpg prepares every statement, and after five runs Postgres may
    # switch it to a generic plan made for no particular parameters and for the table as it was
    # then. A claim planned while the wheel was empty stayed slow for the next burst (1.8k vs
    # 3.2k jobs/s, `chronoq bench burst --runs 3`); planning each batch statement costs far less.
    try:
        return await asyncpg.create_pool(
            url,
            min_size=min_size,
            max_size=max_size,
            init=init_connection,
            server_settings={
                "application_name": application_name,
                "plan_cache_mode": "force_custom_plan",
                "synchronous_commit": "on" if synchronous_commit else "off",
            },
        )
    except CONNECTION_ERRORS as exc:
        raise ServiceUnavailableError(f"cannot connect to Postgres: {type(exc).__name__}: {exc}") from exc


@contextlib.asynccontextmanager
async def acquire(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    async with pool.acquire() as conn:
        yield conn
