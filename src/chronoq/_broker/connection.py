"""Connecting to RabbitMQ, with errors translated to chronoq's."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Sequence
from typing import Any, TypeAlias

import aio_pika
import aiormq.exceptions
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractRobustConnection
from yarl import URL

from chronoq._runtime.amqp_urls import split_urls
from chronoq._runtime.config import DEFAULT_AMQP_HEARTBEAT, Settings
from chronoq.errors import ChronoqError, ServiceUnavailableError, bad_setting, cannot_connect

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
#: Longest wait for a node to complete a connection's handshake, at start and at every
#: reconnection. Without it a node that accepts the TCP connection and never answers (still
#: booting, or hung) keeps a service waiting for ever, where it should try the next node, or
#: exit as unavailable and be restarted.
CONNECT_TIMEOUT = 10.0
#: The heartbeat (seconds) of a connection made without settings.
DEFAULT_HEARTBEAT = int(DEFAULT_AMQP_HEARTBEAT.total_seconds())

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


#: Name of the method aio-pika's reconnect loop (``RobustConnection.__connection_factory``) calls
#: for every connection attempt, the first one included: the one place to choose each attempt's node.
_ATTEMPT = "_RobustConnection__connect_transport"
if not hasattr(aio_pika.RobustConnection, _ATTEMPT):  # pragma: no cover - an aio-pika this code was not written for
    raise ImportError(f"aio-pika {aio_pika.__version__} has no {_ATTEMPT}: chronoq cannot move between RabbitMQ nodes")


class ClusterConnection(aio_pika.RobustConnection):
    """aio-pika's robust connection over the nodes of one cluster: each connection attempt of its
    reconnect loop goes to the node after the one tried before, so a connection whose node died
    or hung comes back on another node, where aio-pika restores its channels, QoS, consumers and
    publisher confirms as it would on the same node."""

    def __init__(self, nodes: Sequence[URL], first: int, **kwargs: Any) -> None:
        super().__init__(nodes[first], **kwargs)
        self._nodes = tuple(nodes)
        self._next = first

    @property
    def node(self) -> str:
        """``host:port`` of the node this connection is attached to or trying."""
        return f"{self.url.host}:{self.url.port}"

    async def _RobustConnection__connect_transport(self) -> None:
        self.url = self._nodes[self._next]
        self._next = (self._next + 1) % len(self._nodes)
        await getattr(super(), _ATTEMPT)()


def cluster_nodes(url: str, heartbeat: int) -> list[URL]:
    """One URL a node from the ``amqp_url`` setting, each asking for this heartbeat (seconds)."""
    return [URL(node).update_query(heartbeat=heartbeat) for node in split_urls(url)]


# ASYNC109: the timeout is aio-pika's, which keeps it for every connection attempt; a deadline
# around this call would cover the first connection only.
async def connect(
    url: str, *, name: str, timeout: float = CONNECT_TIMEOUT, heartbeat: int = DEFAULT_HEARTBEAT,  # noqa: ASYNC109
) -> AbstractRobustConnection:
    """A robust connection to one of the nodes in ``url`` (a comma-separated list), the first
    tried chosen at random so that processes spread over the cluster; if none answers, the
    error of each. It reconnects by itself, to the next node, restoring channels and consumers.
    ``timeout`` bounds each attempt: a node that accepts TCP and never answers is left."""
    nodes = cluster_nodes(url, heartbeat)
    start = random.randrange(len(nodes))
    failures: list[tuple[str, ChronoqError]] = []
    for step in range(len(nodes)):
        connection = ClusterConnection(
            nodes, (start + step) % len(nodes), client_properties={"connection_name": name},
            reconnect_interval=RECONNECT_INTERVAL,
        )
        try:
            await _first_connection(connection, timeout)
        except ServiceUnavailableError as exc:
            failures.append((connection.node, exc))
            continue
        log.debug("broker connection opened on %s", connection.node, extra={
            "action": "broker_connected", "connection": name, "node": connection.node})
        _log_losses(connection, name)
        return connection
    if len(failures) == 1:
        raise failures[0][1]
    raise cannot_connect("RabbitMQ", "; ".join(
        f"{node}: {str(exc).removeprefix('cannot connect to RabbitMQ: ')}" for node, exc in failures
    ))


async def connect_for(settings: Settings, *, name: str) -> AbstractRobustConnection:
    """The broker connection of a process with these settings (see ``connect``)."""
    return await connect(settings.amqp_url, name=name, heartbeat=settings.amqp_heartbeat_seconds)


async def _first_connection(connection: ClusterConnection, timeout: float) -> None:  # noqa: ASYNC109
    """Connect to the connection's first node, with errors translated to chronoq's: a node
    that cannot be used now is ServiceUnavailableError, a refused login is a bad setting."""
    try:
        await connection.connect(timeout=timeout)
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


async def open_channel(connection: AbstractConnection, **kwargs: Any) -> AbstractChannel:
    """A new channel on ``connection``, or a broker error if the connection is down. While a
    robust connection reconnects, aio-pika raises a bare RuntimeError ("Connection was not
    opened", "<Connection …> closed"), which a service would take for a bug in itself: an error
    with a traceback in its log at every broker restart."""
    try:
        return await connection.channel(**kwargs)
    except RuntimeError as exc:
        raise aio_pika.exceptions.AMQPConnectionError(f"the broker connection is down: {exc}") from exc


def _log_losses(connection: ClusterConnection, name: str) -> None:
    """One warning when the connection breaks and one line when it is back, each naming the node
    by host and port, so that an operator sees why a service is idle and where it went (aio-pika's
    own reconnect chatter is silenced, see logs.py)."""

    def lost(sender: AbstractConnection | None, exc: BaseException | None) -> None:
        if connection.close_called:  # our own close() on the way out
            return
        log.warning("broker connection to %s lost; reconnecting", connection.node, extra={
            "action": "broker_connection_lost", "connection": name, "node": connection.node,
            "error": type(exc).__name__ if exc is not None else None})

    def restored(sender: AbstractConnection | None) -> None:
        log.info("broker connection restored on %s", connection.node, extra={
            "action": "broker_connection_restored", "connection": name, "node": connection.node})

    connection.close_callbacks.add(lost)
    connection.reconnect_callbacks.add(restored)
