"""OpenTelemetry, when installed (``pip install 'chronoq[otel]'``): the enqueuer's trace context
travels with the job (a column) and its messages (``traceparent`` headers), and the worker runs
each handler in a span whose parent is the span that enqueued it. Without the package every
function here is a cheap no-op.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

try:
    from opentelemetry import propagate, trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
except ImportError:  # pragma: no cover - exercised where opentelemetry is absent
    trace = None  # type: ignore[assignment]  # the module, or None where OpenTelemetry is absent

_TRACER_NAME = "chronoq"
TRACE_HEADERS = ("traceparent", "tracestate")


def enabled() -> bool:
    """True once the application has installed a real tracer provider (an SDK). Until then the
    API hands out no-op spans; skipping them saves per-job work at thousands of jobs per second."""
    if trace is None:
        return False
    return not isinstance(trace.get_tracer_provider(), (trace.ProxyTracerProvider, trace.NoOpTracerProvider))


@contextlib.contextmanager
def enqueue_span(queue: str) -> Iterator[dict[str, str] | None]:
    """A PRODUCER span around an enqueue; yields the carrier to store with the job."""
    if not enabled():
        yield None
        return
    tracer = trace.get_tracer(_TRACER_NAME)
    with tracer.start_as_current_span(f"chronoq enqueue {queue}", kind=SpanKind.PRODUCER,
                                      attributes={"messaging.system": "chronoq", "messaging.destination.name": queue}):
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        yield carrier or None


@contextlib.contextmanager
def handler_span(queue: str, headers: Mapping[str, Any], attributes: Mapping[str, Any]) -> Iterator[Any]:
    """A CONSUMER span around a handler, child of the enqueuer's span found in the headers."""
    if not enabled():
        yield None
        return
    carrier = {k: (v.decode() if isinstance(v, bytes) else str(v)) for k, v in headers.items() if k in TRACE_HEADERS}
    parent = propagate.extract(carrier)
    tracer = trace.get_tracer(_TRACER_NAME)
    with tracer.start_as_current_span(f"chronoq run {queue}", context=parent, kind=SpanKind.CONSUMER,
                                      attributes={"messaging.system": "chronoq", "messaging.destination.name": queue,
                                                  **attributes}, record_exception=False,
                                      set_status_on_exception=False) as span:
        yield span


def mark_failed(span: Any, exc: BaseException) -> None:
    if span is not None:
        span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
