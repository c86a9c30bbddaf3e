"""Opening Postgres connections and pools, with chronoq's codecs and error translation."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Literal, ParamSpec, TypeAlias, TypeGuard, TypeVar, cast

import asyncpg
import asyncpg.pool
import orjson
from asyncpg.connect_utils import SessionAttribute

from chronoq._store.database_url import writable_session_attrs
from chronoq._store.hosts import Hosts, hosts_of
from chronoq.errors import (
    ChronoqError,
    ConfigError,
    InvalidJobError,
    ReadOnlyDatabaseError,
    ServiceUnavailableError,
    bad_setting,
    cannot_connect,
)

#: What every query takes: a connection of its own or one lent by a pool.
Connection: TypeAlias = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy

#: Errors that mean "the database is not reachable right now" rather than "the query is wrong".
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.TargetServerAttributeNotMatched,  # no host of a multi-host URL is writable: mid-failover
    TimeoutError,
)


#: SQLSTATE classes that say the server cannot serve right now, whatever was asked: connection
#: exceptions (08), insufficient resources (53), operator intervention (57: shutdown, cannot
#: connect now), a transaction that conflicted with another (40: serialization failure,
#: deadlock; it changed nothing), a read-only transaction (25006: a standby, during failover),
#: and a deployment that is not ready for chronoq's own statements (42: a table missing, a
#: privilege not granted; 3F, 3D, 28: schema, database or role missing). None of these is the
#: fault of the job or message at hand: the same work succeeds once the server is back or fixed.
_UNAVAILABLE_STATES = ("08", "53", "57", "40", "25006", "42", "3F", "3D", "28")


def database_unavailable(exc: BaseException) -> bool:
    """True if ``exc`` means Postgres is unreachable or cannot serve for now, so the same work
    may succeed later; False for everything that says what was asked is wrong."""
    if isinstance(exc, (*CONNECTION_ERRORS, asyncpg.InternalClientError)):
        # InternalClientError: asyncpg's protocol found itself mid-operation on a connection the
        # server had just closed (a terminated backend, a restart); the next connection works.
        return True
    if isinstance(exc, asyncpg.PostgresError):
        state = getattr(exc, "sqlstate", None) or ""
        return state.startswith(_UNAVAILABLE_STATES)
    return False


def translated(exc: BaseException) -> ChronoqError:
    """A driver error as the ChronoqError a caller handles. Messages name the problem, never the
    values of the statement."""
    if isinstance(exc, ChronoqError):
        return exc
    if isinstance(exc, (asyncpg.ClientConfigurationError, asyncpg.InvalidAuthorizationSpecificationError,
                        asyncpg.InvalidPasswordError)):
        return bad_setting("database_url", _first_line(exc))
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return bad_setting("database_url", f"{_first_line(exc)} (create it, or run `chronoq migrate`)")
    if isinstance(exc, (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError, asyncpg.UndefinedFunctionError)):
        return ConfigError(f"the database has no chronoq schema or an older one ({_first_line(exc)}): run `chronoq migrate`")
    if isinstance(exc, asyncpg.InsufficientPrivilegeError):
        return bad_setting("database_url", f"the role may not do this ({_first_line(exc)})")
    if isinstance(exc, asyncpg.ReadOnlySQLTransactionError):
        return ReadOnlyDatabaseError("Postgres refused to write: the connection is to a standby or its transaction "
                                     "is read-only (SQLSTATE 25006); writes need the primary")
    if database_unavailable(exc):
        return ServiceUnavailableError(f"Postgres is unavailable: {type(exc).__name__}")
    if isinstance(exc, (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError)):
        return InvalidJobError("job", f"refused by the database: {type(exc).__name__}")
    return DatabaseError(f"Postgres refused the statement: {type(exc).__name__}")


class DatabaseError(ChronoqError):
    """Postgres refused a statement for a reason chronoq has no better name for."""


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


_DATABASE_ERRORS: tuple[type[BaseException], ...] = (asyncpg.PostgresError, asyncpg.InternalClientError, *CONNECTION_ERRORS)


@contextlib.contextmanager
def database_errors() -> Iterator[None]:
    """Driver errors raised inside become ChronoqErrors (``translated``)."""
    try:
        yield
    except ChronoqError:
        raise
    except _DATABASE_ERRORS as exc:
        raise translated(exc) from exc


_P = ParamSpec("_P")
_T = TypeVar("_T")


def with_database_errors(method: Callable[_P, Awaitable[_T]]) -> Callable[_P, Awaitable[_T]]:
    """Decorate a public coroutine so that no driver error leaves it (``database_errors``)."""

    @functools.wraps(method)
    async def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        with database_errors():
            return await method(*args, **kwargs)

    return wrapper


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


@contextlib.contextmanager
def _connecting() -> Iterator[None]:
    """Errors of opening a connection or a pool, as ChronoqErrors."""
    try:
        yield
    except asyncpg.ClientConfigurationError as exc:
        raise bad_setting("database_url", _first_line(exc)) from exc
    except CONNECTION_ERRORS as exc:
        raise cannot_connect("Postgres", exc) from exc
    except asyncpg.PostgresError as exc:
        raise translated(exc) from exc


def session_attrs(url: str) -> SessionAttribute | None:
    """What every connection chronoq opens asks of its host: one that accepts writes, among the
    hosts of a multi-host URL (database_url.py). None: asyncpg's default, for a single host."""
    try:
        attrs = writable_session_attrs(url)
    except ValueError as exc:
        raise bad_setting("database_url", str(exc)) from None
    return None if attrs is None else SessionAttribute(attrs)


def _hosts(url: str) -> Hosts:
    try:
        return hosts_of(url)
    except ValueError as exc:
        raise bad_setting("database_url", str(exc)) from None


async def open_session(url: str, **kwargs: Any) -> asyncpg.Connection:
    """A bare connection to the writable host of ``url`` (hosts.py); driver errors as raised."""
    return await _hosts(url).connect(target_session_attrs=session_attrs(url), **kwargs)


async def connect(url: str, *, application_name: str = "chronoq") -> asyncpg.Connection:
    with _connecting():
        conn = await open_session(url, server_settings={"application_name": application_name})
    await init_connection(conn)
    return conn


#: How a pool's sessions plan their statements (``create_pool``).
Planning = Literal["keyed", "custom", "server"]

#: Planner settings of the sessions that run chronoq's hot statements, by ``Planning``.
#: keyed (the timer's dispatch session, the worker's): every statement is planned once per
#: session and the plan reused (a fresh plan per run cost more Postgres CPU than running it, at
#: everyday rates where each job is its own batch). A plan made once must stay right as the
#: tables grow from empty to millions of rows without new statistics (autovacuum may be off), so
#: these sessions never choose a sequential or bitmap scan where an index can serve, and every
#: statement they run reaches each table through an index condition on the keys or due times it
#: was given (queries/*.sql: the redundant ``= ANY($1)`` beside joins on unnest). A handler's
#: statements on the worker's session are planned as Postgres does by default
#: (queries/savepoints.sql).
#: custom (the timer's other sessions: intake, pruning): a plan for each run's values.
#: server: as the server is configured, as on a caller's own connection (the producer).
PLANNER_SETTINGS: dict[str, dict[str, str]] = {
    # JIT off: a scan that is disabled but the only way to a small table (queue_controls) makes
    # a statement's estimated cost huge, and JIT would compile it for every run.
    "keyed": {"plan_cache_mode": "force_generic_plan", "enable_seqscan": "off", "enable_bitmapscan": "off",
              "jit": "off"},
    "custom": {"plan_cache_mode": "force_custom_plan"},
    "server": {},
}


async def create_pool(
    url: str, *, min_size: int = 1, max_size: int = 10, application_name: str = "chronoq",
    synchronous_commit: bool = True, planning: Planning = "custom", own_sessions: bool = False,
) -> asyncpg.Pool:
    # own_sessions (timers and workers): connections no caller acquires (see OwnSession); the
    # producer's pool is public (Producer.pool) and is always reset.
    # Only what chronoq changes is sent: the server's own settings (a synchronous_commit of
    # remote_apply for a standby, say) stay in force everywhere else.
    settings = {"application_name": application_name, **PLANNER_SETTINGS[planning]}
    if not synchronous_commit:
        settings["synchronous_commit"] = "off"
    # The pool reconnects with the same options: a connection lost in a failover is replaced by
    # one to whichever host accepts writes by then.
    attrs, hosts = session_attrs(url), _hosts(url)
    with _connecting():
        return await asyncpg.create_pool(
            url, min_size=min_size, max_size=max_size, init=init_connection, server_settings=settings,
            connection_class=OwnSession if own_sessions else asyncpg.Connection, target_session_attrs=attrs,
            # Typed as asyncpg.connect's whole signature; Hosts.connect passes its keywords on.
            connect=cast(Any, hosts.connect),
        )


async def one_row(conn: Connection, sql: str, *args: object) -> asyncpg.Record:
    """``fetchrow`` for a query that returns exactly one row whatever the data (an aggregate, a
    SELECT without FROM, a function call)."""
    row = await conn.fetchrow(sql, *args)
    if row is None:
        raise RuntimeError("a query that always returns one row returned none")
    return row


def is_connection(value: object) -> TypeGuard[Connection]:
    """An asyncpg connection, or one lent by a pool."""
    return isinstance(value, (asyncpg.Connection, asyncpg.pool.PoolConnectionProxy))


def check_writable(conn: Connection) -> None:
    """Raise ReadOnlyDatabaseError, before anything is sent (the caller's transaction stays
    usable), if ``conn`` is to a standby. The server reports ``in_hot_standby`` to the client as
    it changes (Postgres 14 and later), so this is a look at the connection, not a query; on an
    older server the write itself fails with SQLSTATE 25006, translated to the same error."""
    if getattr(conn.get_settings(), "in_hot_standby", "off") == "on":
        raise ReadOnlyDatabaseError("the connection is to a standby (Postgres in recovery), which cannot store jobs: "
                                    "pass a connection to the primary (target_session_attrs=read-write)")
