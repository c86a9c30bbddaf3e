"""``ctx.db``: the group's connection, behind a savepoint that is opened on first use.

A group runs many handlers in one transaction, each of which must be able to fail alone: its
writes roll back, its neighbours' stay. That needs a savepoint per handler, which costs a round
trip per job, paid even by the many handlers that never touch the database. So the savepoint is
opened the first time the handler uses ``ctx.db`` (any coroutine method, ``transaction()`` or
``cursor()``), and only then released or rolled back after it.

What a handler does on ``ctx.db`` may outlive its group (a session ``SET``, a ``LISTEN``, an
advisory lock), so the connection it used is reset when the group hands it back to the pool.
A connection no handler touched ran only chronoq's own statements, which leave nothing behind:
it skips the reset, a round trip of four statements per group (``_store.connection.OwnSession``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from chronoq._store import savepoints
from chronoq._store.connection import Connection


class JobConnection:
    """Duck-typed ``asyncpg.Connection`` for one handler; see the module docstring."""

    __slots__ = ("_conn", "opened")

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self.opened = False  # whether this handler's savepoint exists

    async def _open(self) -> None:
        if not self.opened:
            # Before anything runs: from here on, the handler may leave session state behind.
            lend = getattr(self._conn, "lend", None)  # through the pool's proxy; a plain connection has none
            if lend is not None:
                lend()
            await savepoints.open_job(self._conn)
            self.opened = True

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._conn, name)
        if name in ("transaction", "cursor"):
            return _Deferred(self, attribute)
        return _opening_first(self, attribute)

    async def _after_open(self, pending: Any) -> Any:
        try:
            await self._open()
        except BaseException:
            if inspect.iscoroutine(pending):
                pending.close()  # never awaited: say so, instead of a "never awaited" warning
            raise
        return await pending

    def __repr__(self) -> str:
        return f"<JobConnection savepoint={'open' if self.opened else 'not yet'} {self._conn!r}>"


class _Deferred:
    """``transaction()`` / ``cursor()``: their objects run SQL when entered or awaited, so the
    savepoint is opened just before that."""

    def __init__(self, owner: JobConnection, factory: Callable[..., Any]) -> None:
        self._owner = owner
        self._factory = factory

    def __call__(self, *args: Any, **kwargs: Any) -> _Opening:
        return _Opening(self._owner, self._factory(*args, **kwargs))


class _Opening:
    def __init__(self, owner: JobConnection, inner: Any) -> None:
        self._owner = owner
        self._inner = inner

    async def __aenter__(self) -> Any:
        await self._owner._open()
        return await self._inner.__aenter__()

    async def __aexit__(self, *exc: object) -> Any:
        return await self._inner.__aexit__(*exc)

    def __await__(self) -> Any:
        return self._awaited().__await__()

    async def _awaited(self) -> Any:
        await self._owner._open()
        return await self._inner

    def __aiter__(self) -> Any:
        return self._iterate()

    async def _iterate(self) -> Any:
        await self._owner._open()
        async for item in self._inner:
            yield item

    def __getattr__(self, name: str) -> Any:  # Transaction.start(), Cursor.fetch(), ...
        return _opening_first(self._owner, getattr(self._inner, name))


def _opening_first(owner: JobConnection, attribute: Any) -> Any:
    """``attribute`` as it is, or, if it is callable, wrapped so that a call returning something
    awaitable opens the savepoint before that runs. (A pool's connection proxy wraps its
    coroutine methods in plain functions, so what the call returns is what tells: a coroutine
    has not run yet.)"""
    if not callable(attribute):
        return attribute

    def call(*args: Any, **kwargs: Any) -> Any:
        result = attribute(*args, **kwargs)
        return owner._after_open(result) if inspect.isawaitable(result) else result

    return call
