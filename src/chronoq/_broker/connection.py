"""Connecting to RabbitMQ, with errors translated to chronoq's."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any, TypeAlias

import aio_pika
import aiormq.exceptions
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractRobustConnection

from chronoq.errors import bad_setting, cannot_connect

log = logging.getLogger("chronoq.broker")

#: The connection a service holds: it reconnects by itself (``connect``).
BrokerConnection: TypeAlias = AbstractRobustConnection

#: Errors that mean the broker is unreachable or the connection or channel broke.
BROKER_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ConnectionError,
    aio_pika.exceptions.AMQPConnectionError,
    aio_pika.exceptions.ChannelInvalidStateError,
    aio_pika.exceptions.ChannelClosed,
    aio_pika.exceptions.ConnectionClosed,
)


def broker_unavailable(exc: BaseException) -> bool:
    """True if ``exc`` means the broker is unreachable or the connection or channel broke."""
    return isinstance(exc, BROKER_ERRORS)


#: Seconds between reconnection attempts after the broker went away.
RECONNECT_INTERVAL = 1.0
#: Longest wait for the broker to complete a connection's handshake. Without it a broker that
#: accepts the TCP connection and never answers (still booting, or stuck) keeps a starting
#: service waiting for ever, where it should exit as unavailable and be restarted.
CONNECT_TIMEOUT = 30.0

#: Seconds a broker call made while stopping may take. A robust channel waits for its connection
#: to come back before it sends anything, so without a bound a consumer cancel or a channel close
#: made while the broker is unreachable waits for ever, and SIGTERM never ends the process.
STOPPING_CALL_TIMEOUT = 3.0

#: What a broker call on the way out may raise without mattering (``while_stopping``).
_STOPPING_ERRORS: tuple[type[BaseException], ...] = (*BROKER_ERRORS, RuntimeError, TimeoutError)

#: What the connection's handshake raises when the broker is not there or goes away meanwhile;
#: StopAsyncIteration comes from aiormq's frame reader when the broker closes the socket.
_HANDSHAKE_ERRORS: tuple[type[BaseException], ...] = (*BROKER_ERRORS, StopAsyncIteration)


async def while_stopping(call: Awaitable[Any]) -> None:
    """Make a best-effort broker call on the way out (cancel a consumer, close a channel): a
    broken connection or a broker that does not answer in time is not an error then, since the
    broker requeues whatever the closed connection still held."""
    try:
        async with asyncio.timeout(STOPPING_CALL_TIMEOUT):
            await call
    except _STOPPING_ERRORS:
        pass


# ASYNC109: the timeout is aio-pika's, which keeps it for every reconnection; a deadline around
# this call would cover the first connection only.
async def connect(url: str, *, name: str, timeout: float = CONNECT_TIMEOUT) -> AbstractRobustConnection:  # noqa: ASYNC109
    """A robust connection: it reconnects by itself and restores channels and consumers."""
    try:
        connection = await aio_pika.connect_robust(
            url, client_properties={"connection_name": name}, reconnect_interval=RECONNECT_INTERVAL,
            timeout=timeout,
        )
    except TimeoutError as exc:  # before BROKER_ERRORS: it is an OSError
        raise cannot_connect("RabbitMQ", f"no answer within {timeout:g} s") from exc
    except (aiormq.exceptions.AuthenticationError, aiormq.exceptions.ProbableAuthenticationError) as exc:
        raise bad_setting("amqp_url", "RabbitMQ refused the login (check the user and password)") from exc
    except (aiormq.exceptions.InvalidFrameError, aiormq.exceptions.ConnectionNotAllowed) as exc:
        # RabbitMQ closes the handshake both while it shuts down and instead of opening a virtual
        # host that does not exist or that the user may not use; aiormq does not say which.
        raise cannot_connect(
            "RabbitMQ", "it closed the handshake (shutting down, or a virtual host that does not exist or that "
            "the user may not use)"
        ) from exc
    except _HANDSHAKE_ERRORS as exc:
        raise cannot_connect("RabbitMQ", exc) from exc
    except asyncio.CancelledError as exc:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # we are being cancelled
        # A broker shutting down closes the handshake with CONNECTION_FORCED, which aiormq
        # surfaces as a cancellation of its own.
        raise cannot_connect("RabbitMQ", "the broker closed the connection") from exc
    _log_losses(connection, name)
    return connection


async def open_channel(connection: AbstractConnection, **kwargs: Any) -> AbstractChannel:
    """A new channel on ``connection``, or a broker error if the connection is down. While a
    robust connection reconnects, aio-pika raises a bare RuntimeError ("Connection was not
    opened", "<Connection …> closed"), which a service would take for a bug in itself: an error
    with a traceback in its log at every broker restart."""
    try:
        return await connection.channel(**kwargs)
    except RuntimeError as exc:
        raise aio_pika.exceptions.AMQPConnectionError(f"the broker connection is down: {exc}") from exc


def _log_losses(connection: AbstractRobustConnection, name: str) -> None:
    """One warning when the connection breaks and one line when it is back, so that an operator
    sees why a service is idle (aio-pika's own reconnect chatter is silenced, see logs.py)."""

    def lost(sender: AbstractConnection | None, exc: BaseException | None) -> None:
        if connection.close_called:  # our own close() on the way out
            return
        log.warning("broker connection lost; reconnecting", extra={
            "action": "broker_connection_lost", "connection": name,
            "error": type(exc).__name__ if exc is not None else None})

    def restored(sender: AbstractConnection | None) -> None:
        log.info("broker connection restored", extra={"action": "broker_connection_restored", "connection": name})

    connection.close_callbacks.add(lost)
    connection.reconnect_callbacks.add(restored)
