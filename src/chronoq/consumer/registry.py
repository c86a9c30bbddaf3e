"""The handler registry: which coroutine runs a queue's jobs, and how its payload is parsed."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pydantic import TypeAdapter

from chronoq.consumer.context import JobContext
from chronoq.errors import UnknownQueueError
from chronoq.schemas.job import MAX_TIMEOUT, check_queue_name

HandlerFn = Callable[[JobContext, Any], Awaitable[Any]]


@dataclass(frozen=True)
class Handler:
    queue: str
    fn: HandlerFn
    payload: TypeAdapter[Any]
    timeout: timedelta | None  # overrides the job's own timeout when set

    def parse(self, raw: Any) -> Any:
        """Validate the payload against the handler's annotation (raises pydantic's ValidationError)."""
        return self.payload.validate_python(raw)


def _payload_adapter(fn: HandlerFn) -> TypeAdapter[Any]:
    params = list(inspect.signature(fn).parameters.values())
    if len(params) != 2:
        raise TypeError(f"handler {fn.__qualname__} must take (ctx, payload), takes {len(params)} parameters")
    try:
        hints = typing.get_type_hints(fn)
    except NameError as exc:
        raise TypeError(f"handler {fn.__qualname__}: cannot resolve its payload annotation ({exc}); "
                        "define the payload model at module level") from None
    return TypeAdapter(hints.get(params[1].name, Any))


class Worker:
    """A set of handlers, one per queue. Run it with ``chronoq worker module:attr``."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def handler(self, queue: str, *, timeout: timedelta | None = None) -> Callable[[HandlerFn], HandlerFn]:
        check_queue_name(queue)
        if timeout is not None and not timedelta(0) < timeout <= MAX_TIMEOUT:
            raise ValueError(f"handler timeout must be positive and at most {MAX_TIMEOUT} (RabbitMQ's consumer_timeout)")

        def register(fn: HandlerFn) -> HandlerFn:
            if not inspect.iscoroutinefunction(fn):
                raise TypeError(f"handler {fn.__qualname__} must be an async function")
            if queue in self._handlers:
                raise ValueError(f"queue {queue!r} already has a handler")
            self._handlers[queue] = Handler(queue, fn, _payload_adapter(fn), timeout)
            return fn

        return register

    @property
    def queues(self) -> list[str]:
        return sorted(self._handlers)

    def get(self, queue: str) -> Handler | None:
        return self._handlers.get(queue)

    def select(self, queues: Iterable[str] | None) -> list[str]:
        """The queues to consume: all registered ones, or the named subset (each must exist)."""
        if not queues:
            if not self._handlers:
                raise UnknownQueueError("the worker has no handlers registered")
            return self.queues
        chosen = list(dict.fromkeys(queues))
        unknown = [q for q in chosen if q not in self._handlers]
        if unknown:
            raise UnknownQueueError(
                f"no handler for queue(s) {', '.join(map(repr, unknown))}; registered: {', '.join(self.queues) or 'none'}"
            )
        return chosen
