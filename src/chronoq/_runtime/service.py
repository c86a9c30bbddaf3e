"""One lifecycle for every long-running part: run(), stop() (safe twice), signal handling."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Protocol

from chronoq.errors import ServiceUnavailableError


class Service(Protocol):
    async def run(self) -> None: ...
    def stop(self) -> None: ...


async def run_until_signalled(service: Service, signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)) -> None:
    """Run ``service``; the first SIGTERM/SIGINT asks it to stop gracefully. Handlers are
    restored afterwards, so embedding applications keep their own."""
    loop = asyncio.get_running_loop()
    for sig in signals:
        loop.add_signal_handler(sig, service.stop)
    try:
        await service.run()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


async def pause(stopping: asyncio.Event, seconds: float) -> None:
    """Wait ``seconds``, or less if ``stopping`` is set first: a service's loops pause this way,
    so that stop() never waits for a pause to run out."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), timeout=seconds)


#: Longest a half-started service gets to close what it opened.
CLOSE_AFTER_FAILED_START = 10.0


async def start_or_close(
    start: Callable[[], Awaitable[None]], close: Callable[[], Awaitable[None]], log: logging.Logger,
    *, unavailable: tuple[type[BaseException], ...] = (),
) -> None:
    """Start a service; if that fails, close what it opened before the error goes on. Without
    this a robust AMQP connection stays behind, reconnecting: asyncio.run then cancels its task
    on the way out, the reconnect loop takes the cancellation for a failed attempt and carries
    on, and the process never exits, alive and idle while its jobs wait. Errors while closing are
    logged, never raised: the start's own error is the one to see.

    An ``unavailable`` error (a connection lost after it was made, during a query the start
    makes) becomes :class:`ServiceUnavailableError`, as a connection refused at once does: the
    process exits with the code for "try again" instead of a traceback."""
    try:
        await start()
    except BaseException as exc:
        try:
            await asyncio.wait_for(close(), CLOSE_AFTER_FAILED_START)
        except Exception as close_exc:  # the start's error matters, not this one
            log.warning("closing after a failed start failed",
                        extra={"action": "close_failed", "error": type(close_exc).__name__})
        if isinstance(exc, unavailable):
            raise ServiceUnavailableError(f"lost a connection while starting: {type(exc).__name__}: {exc}") from exc
        raise
