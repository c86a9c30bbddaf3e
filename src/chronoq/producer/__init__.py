"""The client library: enqueue, cancel and inspect jobs. Talks to Postgres only."""

from chronoq.producer.client import Producer

__all__ = ["Producer"]
