"""The engines a chaos run stands on: where its Postgres and RabbitMQ are, how the harness reaches
them (admin URL, management API, ``rabbitmqctl``) and how it heals them after the nemesis.

``LocalEngines`` is the machine's default Postgres and RabbitMQ (one of each); ``HaEngines`` the
HA topology of chaos/ha.py (3 RabbitMQ nodes, a Postgres primary and a streaming standby). The
run, its drain and the checker ask only this object, so they are the same for both.
"""

from __future__ import annotations

import os
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

from chaos import services
from chaos.ha import Topology

ADMIN_URL = os.environ.get("CHAOS_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
AMQP_URL = os.environ.get("CHAOS_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
LOOPBACK = "127.0.0.1"


class Engines(Protocol):
    def admin_url(self) -> str:
        """A superuser's URL of the ``postgres`` database on the current primary."""

    def database_url(self, name: str) -> str:
        """The URL clients use to reach database ``name`` directly (the producer, the checker)."""

    def postgres_ports(self) -> list[int]:
        """Every Postgres endpoint on the loopback, one proxy each."""

    def amqp_urls(self) -> list[str]:
        """Every RabbitMQ node's AMQP URL, one proxy each."""

    def broker(self) -> services.Broker:
        """A management API and ``rabbitmqctl`` of the nodes that run now."""

    def heal(self) -> None:
        """Everything up and serving again (blocks)."""


def with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def over_ports(url: str, ports: list[int], *, user: str | None = None, query: str | None = None) -> str:
    """``url`` with its hosts replaced by the loopback ``ports`` (a multi-host URL for several),
    its user by ``user`` if given, and ``query`` added to its own."""
    parts = urlsplit(url)
    userinfo = user or parts.netloc.rpartition("@")[0]
    hosts = ",".join(f"{LOOPBACK}:{port}" for port in ports)
    joined = "&".join(q for q in (parts.query, query) if q)
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{hosts}" if userinfo else hosts, query=joined))


class LocalEngines:
    """The machine's default Postgres and RabbitMQ."""

    def admin_url(self) -> str:
        return ADMIN_URL

    def database_url(self, name: str) -> str:
        return with_database(ADMIN_URL, name)

    def postgres_ports(self) -> list[int]:
        return [urlsplit(ADMIN_URL).port or 5432]

    def amqp_urls(self) -> list[str]:
        return [AMQP_URL]

    def broker(self) -> services.Broker:
        return services.LOCAL

    def heal(self) -> None:
        services.ensure_postgres()
        services.ensure_broker()


class HaEngines:
    """The HA topology of chaos/ha.py: its multi-host database URL (``target_session_attrs=
    read-write`` finds the primary), the management API and ``rabbitmqctl`` of running nodes."""

    def __init__(self, topology: Topology) -> None:
        self.topology = topology

    def admin_url(self) -> str:
        return self.topology.database_url

    def database_url(self, name: str) -> str:
        return with_database(self.topology.database_url, name)

    def postgres_ports(self) -> list[int]:
        return [node.port for node in self.topology.postgres]

    def amqp_urls(self) -> list[str]:
        return list(self.topology.amqp_urls)

    def broker(self) -> services.Broker:
        running = [node for node in self.topology.rabbit if node.running()] or list(self.topology.rabbit)
        return services.Broker(self.topology.management_url(running[0].index), tuple(node.ctl for node in running))

    def heal(self) -> None:
        """Every RabbitMQ node running and resumed; a primary and a streaming standby."""
        for node in self.topology.rabbit:
            if node.pid() is not None:
                node.resume()  # SIGCONT: nothing if it was not stopped
            if not node.running():
                node.start()
        primary = self.topology.primary()
        if self.topology.standby() is None:
            for node in self.topology.postgres:
                if node is not primary:
                    node.rebuild_as_standby(primary)
