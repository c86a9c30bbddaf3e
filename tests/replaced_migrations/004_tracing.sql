-- chronoq 004: the enqueuer's trace context (W3C traceparent/tracestate), carried to every
-- occurrence's message so that a handler's span is a child of the span that enqueued the job,
-- even days later. NULL when the producer has no OpenTelemetry.
ALTER TABLE chronoq.jobs ADD COLUMN trace jsonb;
