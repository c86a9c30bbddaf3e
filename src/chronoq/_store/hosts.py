"""Connecting to the writable host of a multi-host URL, each host with a time limit of its own.

asyncpg tries a URL's hosts in order under one timeout for the whole connect. A host whose
machine died answers nothing (no refusal: its packets go nowhere), so the first host of the list,
dead after a failover, would use up the whole timeout on every reconnect, and the promoted host
behind it would never be tried. Here each host gets its own time (``connect_timeout``, as in
libpq: database_url.py), and the host that last gave a session is tried first, so connections
made after a failover do not wait for the dead host each time.
"""

from __future__ import annotations

import functools
from typing import Any

import asyncpg

from chronoq._store.database_url import host_timeout, single_host_urls

#: Failures that say "this host cannot serve now, try the next": unreachable, silent, starting
#: up or shutting down, or not writable (a standby, refused by target_session_attrs).
NEXT_HOST_ERRORS: tuple[type[BaseException], ...] = (
    OSError, TimeoutError, asyncpg.CannotConnectNowError, asyncpg.TargetServerAttributeNotMatched,
)


class Hosts:
    """The hosts of one ``database_url``. ``connect`` takes asyncpg.connect's keyword arguments,
    so that a pool opens every connection through it (``create_pool(connect=...)``)."""

    def __init__(self, url: str) -> None:
        self.urls = single_host_urls(url)
        self.timeout = host_timeout(url)
        self._first = 0  # the host that last gave a session

    async def connect(self, _dsn: str | None = None, **kwargs: Any) -> asyncpg.Connection:
        """A connection to the first host that gives one, starting with the last that did.
        (``_dsn``: what a pool passes, the URL this object was made from.) Raises the last
        host's failure if none does."""
        failure: BaseException | None = None
        for index in [*range(self._first, len(self.urls)), *range(self._first)]:
            try:
                conn: asyncpg.Connection = await asyncpg.connect(self.urls[index], timeout=self.timeout, **kwargs)
            except NEXT_HOST_ERRORS as exc:
                failure = exc
                continue
            self._first = index
            return conn
        assert failure is not None
        raise failure


@functools.cache
def hosts_of(url: str) -> Hosts:
    """One Hosts per URL and process: every pool and connection of a process learns together
    which host is the primary now."""
    return Hosts(url)
