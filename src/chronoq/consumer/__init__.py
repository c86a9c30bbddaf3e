"""The worker runtime: handler registry, consumer, dedup-then-run, commit-then-ack."""
