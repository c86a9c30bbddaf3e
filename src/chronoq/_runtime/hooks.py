"""Observability hooks: the events timers and workers report, and the Prometheus adapter.

Services call a :class:`Hooks` object at the few points that matter; the default does nothing,
``PrometheusHooks`` turns the calls into metrics (``--metrics-port``). Another adapter
(StatsD, OpenTelemetry metrics) implements the same methods. Every metric is listed in
docs/metrics.md.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

# Lateness and durations in seconds: from a millisecond to ten minutes.
_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 600)


#: Counted in the producer's own process, on prometheus-client's default registry: a service that
#: already exposes /metrics shows how many jobs it enqueued, per queue.
ENQUEUED = Counter("chronoq_jobs_enqueued", "Jobs stored by this process's Producer", ["queue"])


def count_enqueued(queue: str, n: int = 1) -> None:
    ENQUEUED.labels(queue).inc(n)


class Hooks:
    """No-op base: override what you need."""

    def batch_claimed(self, size: int, seconds: float) -> None: ...
    def dispatched(self, queue: str, lateness_s: float) -> None: ...
    def publish_refused(self, queue: str) -> None: ...
    def set_aside(self, queue: str, reason: str) -> None: ...
    def confirm_latency(self, seconds: float) -> None: ...
    def tick_skipped(self, queue: str, reason: str) -> None: ...
    def due_backlog(self, rows: int) -> None: ...
    def deferred(self, queue: str, reason: str) -> None: ...
    def job_started(self, queue: str, lateness_s: float) -> None: ...
    def job_finished(self, queue: str, outcome: str, seconds: float) -> None: ...


class PrometheusHooks(Hooks):
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.claimed = Histogram("chronoq_claim_batch_size", "Rows claimed per timer transaction",
                                 buckets=(1, 10, 50, 100, 250, 500, 1000, 5000), registry=r)
        self.claim_seconds = Histogram("chronoq_claim_duration_seconds", "Claim-publish-mark transaction time",
                                       buckets=_SECONDS, registry=r)
        self.dispatched_total = Counter("chronoq_jobs_dispatched", "Occurrences published with confirms", ["queue"], registry=r)
        self.dispatch_lateness = Histogram("chronoq_dispatch_lateness_seconds", "Publish time minus due time",
                                           ["queue"], buckets=_SECONDS, registry=r)
        self.refused = Counter("chronoq_publish_refused", "Messages the broker nacked or returned", ["queue"], registry=r)
        self.set_aside_total = Counter("chronoq_set_aside", "Occurrences a timer set aside as dead because they "
                                       "cannot be dispatched, by reason", ["queue", "reason"], registry=r)
        self.confirm = Histogram("chronoq_confirm_latency_seconds", "Time to get every confirm of a batch",
                                 buckets=_SECONDS, registry=r)
        self.skipped = Counter("chronoq_ticks_skipped", "Ticks recorded as skipped", ["queue", "reason"], registry=r)
        self.deferred_total = Counter("chronoq_deferred", "Occurrences that came due in a paused or limited queue and "
                                      "wait for its resume or its limits, by reason (paused, limited)",
                                      ["queue", "reason"], registry=r)
        self.backlog = Gauge("chronoq_due_backlog", "Rows due and not yet dispatched (seen by this timer)", registry=r)
        self.start_lateness = Histogram("chronoq_start_lateness_seconds", "Handler start minus due time",
                                        ["queue"], buckets=_SECONDS, registry=r)
        self.finished = Counter("chronoq_jobs", "Deliveries settled by outcome (succeeded, retry, dead, "
                                "cancelled, duplicate, stale, rejected)", ["queue", "outcome"], registry=r)
        self.handler_seconds = Histogram("chronoq_handler_duration_seconds", "Handler run time", ["queue"],
                                         buckets=_SECONDS, registry=r)

    def batch_claimed(self, size: int, seconds: float) -> None:
        self.claimed.observe(size)
        self.claim_seconds.observe(seconds)

    def dispatched(self, queue: str, lateness_s: float) -> None:
        self.dispatched_total.labels(queue).inc()
        self.dispatch_lateness.labels(queue).observe(max(lateness_s, 0.0))

    def publish_refused(self, queue: str) -> None:
        self.refused.labels(queue).inc()

    def set_aside(self, queue: str, reason: str) -> None:
        self.set_aside_total.labels(queue, reason).inc()

    def confirm_latency(self, seconds: float) -> None:
        self.confirm.observe(seconds)

    def tick_skipped(self, queue: str, reason: str) -> None:
        self.skipped.labels(queue, reason).inc()

    def due_backlog(self, rows: int) -> None:
        self.backlog.set(rows)

    def deferred(self, queue: str, reason: str) -> None:
        self.deferred_total.labels(queue, reason).inc()

    def job_started(self, queue: str, lateness_s: float) -> None:
        self.start_lateness.labels(queue).observe(max(lateness_s, 0.0))

    def job_finished(self, queue: str, outcome: str, seconds: float) -> None:
        self.finished.labels(queue, outcome).inc()
        if outcome in ("succeeded", "retry", "dead", "cancelled"):
            self.handler_seconds.labels(queue).observe(seconds)

    def serve(self, port: int, address: str = "0.0.0.0") -> None:
        """Expose /metrics on ``port`` (a daemon thread of prometheus-client)."""
        start_http_server(port, addr=address, registry=self.registry)
