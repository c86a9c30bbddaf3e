"""Connecting to RabbitMQ, with errors translated to chronoq's."""

from __future__ import annotations

import asyncio

import aio_pika
from aio_pika.abc import AbstractRobustConnection

from chronoq.errors import ServiceUnavailableError

#: Errors that mean the broker is unreachable or the connection or channel broke.
BROKER_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ConnectionError,
    aio_pika.exceptions.AMQPConnectionError,
    aio_pika.exceptions.ChannelInvalidStateError,
    aio_pika.exceptions.ChannelClosed,
    aio_pika.exceptions.ConnectionClosed,
)


#: Seconds between reconnection attempts after the broker went away.
RECONNECT_INTERVAL = 1.0


async def connect(url: str, *, name: str) -> AbstractRobustConnection:
    """A robust connection: it reconnects by itself and restores channels and consumers."""
    try:
        return await aio_pika.connect_robust(
            url, client_properties={"connection_name": name}, reconnect_interval=RECONNECT_INTERVAL
        )
    except (*BROKER_ERRORS, StopAsyncIteration) as exc:
        # StopAsyncIteration: aiormq's frame reader, when the broker closes the socket mid-handshake.
        raise ServiceUnavailableError(f"cannot connect to RabbitMQ: {type(exc).__name__}: {exc}") from exc
    except asyncio.CancelledError as exc:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # we are being cancelled
        # A broker shutting down closes the handshake with CONNECTION_FORCED, which aiormq
        # surfaces as a cancellation of its own.
        raise ServiceUnavailableError("cannot connect to RabbitMQ: the broker closed the connection") from exc
