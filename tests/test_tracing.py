"""OpenTelemetry: the handler's span is a child of the span that enqueued the job."""

from __future__ import annotations

from datetime import timedelta

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from chronoq import JobContext, Producer, Worker
from chronoq.consumer.service import WorkerService
from chronoq.timer import Timer
from tests.harness import all_finished, running

_EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    # The global tracer provider can be set once per process.
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        trace.set_tracer_provider(provider)
    return _EXPORTER


async def test_the_handler_span_is_a_child_of_the_enqueue_span(settings, producer: Producer, spans) -> None:
    spans.clear()
    worker = Worker()

    @worker.handler("traced")
    async def traced(ctx: JobContext, payload: dict) -> None:
        if payload["fail"] and ctx.attempt == 1:
            raise RuntimeError("first try fails")

    tracer = trace.get_tracer("test")
    with tracer.start_as_current_span("checkout") as request_span:
        job_id = await producer.enqueue("traced", {"fail": True}, delay=timedelta(milliseconds=100))
    async with running(Timer(settings)), running(WorkerService(worker, settings)):
        await all_finished(producer, [job_id])

    finished = spans.get_finished_spans()
    (enqueue,) = [s for s in finished if s.name == "chronoq enqueue traced"]
    runs = [s for s in finished if s.name == "chronoq run traced"]
    assert enqueue.parent.span_id == request_span.get_span_context().span_id
    assert len(runs) == 2  # the failed attempt and the retry, days later it would be the same
    for run in runs:
        assert run.context.trace_id == request_span.get_span_context().trace_id
        assert run.parent.span_id == enqueue.context.span_id
        assert run.attributes["chronoq.job_id"] == job_id
    assert sorted(r.status.status_code.name for r in runs) == ["ERROR", "UNSET"]
