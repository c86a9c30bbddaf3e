"""``ctx.db``: the group's connection, for one handler, which tells the group how it was used.

A handler's first use of it (any coroutine method, ``transaction()`` or ``cursor()``) lets the
group prepare the transaction for it (``consumer/writes.py``: the planning setting, and a
savepoint when the group runs with savepoints), so a handler that never touches the database
costs no round trip. Every error raised through it is noticed: a handler that swallows one may
have left the transaction aborted, which the group must find out before going on.

What a handler does on ``ctx.db`` may outlive its group (a session ``SET``, a ``LISTEN``, an
advisory lock), so the connection it used is reset when the group hands it back to the pool.
A connection no handler touched ran only chronoq's own statements, which leave nothing behind:
it skips the reset, a round trip of four statements per group (``_store.connection.OwnSession``).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

from chronoq._store.connection import Connection
from chronoq.consumer.writes import GroupWrites


class JobConnection:
    """Duck-typed ``asyncpg.Connection`` for one handler; see the module docstring."""

    __slots__ = ("_conn", "_writes", "noticed", "used")

    def __init__(self, conn: Connection, writes: GroupWrites) -> None:
        self._conn = conn
        self._writes = writes
        self.used = False  # whether the handler has used it (and the group prepared for that)
        self.noticed: BaseException | None = None  # the first error raised through it

    async def _open(self) -> None:
        if not self.used:
            # Before anything runs: from here on, the handler may leave session state behind.
            lend = getattr(self._conn, "lend", None)  # through the pool's proxy; a plain connection has none
            if lend is not None:
                lend()
            await self._writes.open_job()
            self.used = True

    async def _watched(self, pending: Any) -> Any:
        """``await pending``, noticing what it raises (a cancelled statement too: Postgres
        cancels it with an error)."""
        try:
            return await pending
        except StopAsyncIteration:
            raise  # a cursor's end
        except (Exception, asyncio.CancelledError) as exc:
            if self.noticed is None:
                self.noticed = exc
            raise

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
        return await self._watched(pending)

    def __repr__(self) -> str:
        return f"<JobConnection {'used' if self.used else 'unused'} {self._conn!r}>"


class _Deferred:
    """``transaction()`` / ``cursor()``: their objects run SQL when entered or awaited, so the
    group prepares just before that."""

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
        return await self._owner._watched(self._inner.__aenter__())

    async def __aexit__(self, *exc: object) -> Any:
        return await self._owner._watched(self._inner.__aexit__(*exc))

    def __await__(self) -> Any:
        return self._awaited().__await__()

    async def _awaited(self) -> Any:
        await self._owner._open()
        return await self._owner._watched(self._inner)

    def __aiter__(self) -> Any:
        return self._iterate()

    async def _iterate(self) -> Any:
        await self._owner._open()
        items = self._inner.__aiter__()
        while True:
            try:
                item = await self._owner._watched(items.__anext__())
            except StopAsyncIteration:
                return
            yield item

    def __getattr__(self, name: str) -> Any:  # Transaction.start(), Cursor.fetch(), ...
        return _opening_first(self._owner, getattr(self._inner, name))


def _opening_first(owner: JobConnection, attribute: Any) -> Any:
    """``attribute`` as it is, or, if it is callable, wrapped so that a call returning something
    awaitable lets the group prepare before that runs. (A pool's connection proxy wraps its
    coroutine methods in plain functions, so what the call returns is what tells: a coroutine
    has not run yet.)"""
    if not callable(attribute):
        return attribute

    def call(*args: Any, **kwargs: Any) -> Any:
        result = attribute(*args, **kwargs)
        return owner._after_open(result) if inspect.isawaitable(result) else result

    return call
