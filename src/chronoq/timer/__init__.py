"""The timer service: turns the Postgres timing wheel into confirmed RabbitMQ messages."""

from chronoq.timer.service import Timer

__all__ = ["Timer"]
