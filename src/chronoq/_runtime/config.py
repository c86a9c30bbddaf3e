"""Settings, read once per process from ``CHRONOQ_*`` environment variables and CLI flags.

Every field here is also a CLI flag (``--database-url`` for ``database_url``): the CLI builds its
flags from this model, so the two can never drift apart.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from chronoq._runtime.amqp_urls import check_urls, split_urls
from chronoq._runtime.durations import parse_duration
from chronoq._store.database_url import check_database_url
from chronoq.errors import ConfigError, InvalidJobError
from chronoq.schemas.rules import check_queue_name

DEFAULT_DATABASE_URL = "postgresql://localhost:5432/chronoq"
DEFAULT_AMQP_URL = "amqp://guest:guest@localhost:5672/"
DEFAULT_NAMESPACE = "chronoq"
DEFAULT_CLAIM_BATCH = 500
DEFAULT_TIMER_MAX_IDLE = timedelta(seconds=5)
DEFAULT_REDISPATCH_AFTER = timedelta(minutes=5)
DEFAULT_DELIVERY_LIMIT = 10
DEFAULT_RETENTION = timedelta(days=7)
#: Lanes per worker process: handlers at once. Every group pays a fixed cost (a transaction, two
#: statements, one ack), so the lanes share one inbox and take turns while handlers are fast
#: (consumer/turns.py): a burst, or a timer's batch, runs in few large groups. Slow, I/O-bound
#: handlers run one per group (consumer/handler_times.py), side by side, and want more lanes.
DEFAULT_WORKER_CONCURRENCY = 4
DEFAULT_BATCH_SIZE = 32
DEFAULT_SHUTDOWN_GRACE = timedelta(seconds=30)
DEFAULT_PACK_SIZE = 100
#: Heartbeat asked of RabbitMQ. A connection that hears nothing for about three heartbeats is
#: dropped and moves to the next node: this is how a hung node (alive to TCP, silent) is left.
DEFAULT_AMQP_HEARTBEAT = timedelta(seconds=10)
#: Members of each quorum queue: a queue survives the loss of a minority of them. RabbitMQ
#: places no more members than the cluster has nodes.
DEFAULT_QUORUM_REPLICAS = 3


def _postgres_url(value: str) -> str:
    if not value.startswith(("postgres://", "postgresql://")):
        raise ValueError("must start with postgresql:// or postgres://")
    check_database_url(value)
    return value


def _duration(value: object) -> object:
    """Durations read from the environment may be written like the CLI's: 30s, 5m, 1h30m, 1.5."""
    if isinstance(value, str) and not value.startswith("P"):
        return parse_duration(value)
    return value


Duration = Annotated[timedelta, BeforeValidator(_duration)]


def _namespace(value: str) -> str:
    if not value or not value.isascii() or not value.replace("_", "").replace("-", "").isalnum() or len(value) > 40:
        raise ValueError("must be 1-40 letters, digits, '-' or '_'")
    return value


def _queue_list(value: str) -> str:
    names = [n.strip() for n in value.split(",") if n.strip()]
    for name in names:
        try:
            check_queue_name(name)
        except InvalidJobError as exc:
            raise ValueError(exc.message) from None
    return ",".join(names)


class Settings(BaseSettings):
    """Configuration shared by every chronoq process."""

    model_config = SettingsConfigDict(env_prefix="CHRONOQ_", extra="ignore", frozen=True)

    database_url: Annotated[str, AfterValidator(_postgres_url)] = Field(
        DEFAULT_DATABASE_URL,
        description="Postgres URL (libpq form; sslmode=... is honoured). With several hosts "
        "(postgresql://h1:5432,h2:5432/chronoq) every connection goes to the one that accepts writes, "
        "each host given connect_timeout seconds (default 5).",
    )
    amqp_url: Annotated[str, AfterValidator(check_urls)] = Field(
        DEFAULT_AMQP_URL,
        description="RabbitMQ URL (amqps:// for TLS), or a comma-separated list of the nodes of one cluster.",
    )
    amqp_heartbeat: Duration = Field(
        DEFAULT_AMQP_HEARTBEAT,
        ge=timedelta(seconds=1),
        le=timedelta(minutes=10),
        description="AMQP heartbeat, whole seconds; a node silent for about three of them is left for the next.",
    )
    namespace: Annotated[str, AfterValidator(_namespace)] = Field(
        DEFAULT_NAMESPACE,
        description="Prefix of every RabbitMQ exchange and queue chronoq declares.",
    )
    claim_batch: int = Field(
        DEFAULT_CLAIM_BATCH, ge=1, le=10_000, description="Timer: due rows claimed per transaction."
    )
    timer_max_idle: Duration = Field(
        DEFAULT_TIMER_MAX_IDLE,
        gt=timedelta(0),
        le=timedelta(seconds=60),
        description="Timer: longest sleep without looking at the wheel (a safety net for lost NOTIFYs).",
    )
    redispatch_after: Duration = Field(
        DEFAULT_REDISPATCH_AFTER,
        ge=timedelta(seconds=1),
        description="Timer: a dispatched occurrence with no outcome after this long (plus its timeout) is published again.",
    )
    retention: Duration = Field(
        DEFAULT_RETENTION,
        ge=timedelta(minutes=1),
        description="Timer: results, failed attempts and finished one-shot jobs older than this are pruned.",
    )
    delivery_limit: int = Field(
        DEFAULT_DELIVERY_LIMIT,
        ge=1,
        le=1000,
        description="Starts of one attempt by workers (and broker redeliveries) before it ends dead as poison.",
    )
    concurrency: int = Field(
        DEFAULT_WORKER_CONCURRENCY, ge=1, le=1000, description="Worker: handlers run at once."
    )
    batch_size: int = Field(
        DEFAULT_BATCH_SIZE,
        ge=1,
        le=1000,
        description="Worker: deliveries run and committed together in one transaction per lane (1: one commit per job).",
    )
    shutdown_grace: Duration = Field(
        DEFAULT_SHUTDOWN_GRACE,
        ge=timedelta(0),
        description="Worker/timer: time in-flight work gets to finish after SIGTERM.",
    )
    metrics_port: int | None = Field(
        None, ge=1, le=65535, description="Timer/worker: serve Prometheus metrics on this port (off when unset)."
    )
    packed_queues: Annotated[str, AfterValidator(_queue_list)] = Field(
        "",
        description="Timer: comma-separated queues whose due jobs travel many to one AMQP message "
        "(see docs/benchmarks.md, packed queues); every other queue gets one message per job.",
    )
    pack_size: int = Field(
        DEFAULT_PACK_SIZE, ge=2, le=1000, description="Timer: most jobs in one message of a packed queue."
    )
    queue_type: str = Field(
        "quorum", pattern="^(quorum|classic)$", description="RabbitMQ queue type for job queues."
    )
    quorum_replicas: int = Field(
        DEFAULT_QUORUM_REPLICAS,
        ge=1,
        le=7,
        description="Members of each new quorum queue (at most the cluster's nodes); existing queues keep theirs.",
    )

    @property
    def amqp_urls(self) -> list[str]:
        """The RabbitMQ nodes to connect to, one URL each."""
        return split_urls(self.amqp_url)

    @property
    def amqp_heartbeat_seconds(self) -> int:
        """The heartbeat in the whole seconds AMQP negotiates, rounded up."""
        return math.ceil(self.amqp_heartbeat.total_seconds())

    @property
    def packed(self) -> frozenset[str]:
        return frozenset(filter(None, self.packed_queues.split(",")))

    @classmethod
    def load(cls, **overrides: Any) -> Settings:
        """Read the environment plus explicit overrides; a bad value raises ConfigError naming it."""
        try:
            return cls(**{k: v for k, v in overrides.items() if v is not None})
        except ValidationError as exc:
            problems = "; ".join(
                f"CHRONOQ_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg'].removeprefix('Value error, ')}"
                for err in exc.errors()
            )
            raise ConfigError(f"invalid setting: {problems}") from None
