"""Finding the Postgres and RabbitMQ the tests talk to.

Order: CHRONOQ_TEST_DATABASE_URL / CHRONOQ_TEST_AMQP_URL; else the local defaults; else
testcontainers where a Docker engine answers; else the run stops with one sentence saying how
to provide them. Tests never skip because a service is missing.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from contextlib import ExitStack
from dataclasses import dataclass

import aio_pika
import asyncpg

LOCAL_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
LOCAL_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
HOW_TO = (
    "chronoq's tests need PostgreSQL and RabbitMQ: set CHRONOQ_TEST_DATABASE_URL (an admin URL, "
    "e.g. postgresql://postgres@127.0.0.1:5432/postgres) and CHRONOQ_TEST_AMQP_URL (e.g. "
    "amqp://guest:guest@127.0.0.1:5672/), run them locally on the default ports, or start a Docker engine "
    "for testcontainers."
)


@dataclass(frozen=True)
class Services:
    admin_database_url: str  # a database the tests may connect to in order to create others
    amqp_url: str
    management_url: str | None  # RabbitMQ management HTTP API, when reachable


async def _postgres_ok(url: str) -> bool:
    try:
        conn = await asyncio.wait_for(asyncpg.connect(url), 5)
    except Exception:
        return False
    await conn.close()
    return True


async def _amqp_ok(url: str) -> bool:
    try:
        conn = await asyncio.wait_for(aio_pika.connect(url), 5)
    except Exception:
        return False
    await conn.close()
    return True


def _docker_available() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0


def discover(stack: ExitStack) -> Services:
    db = os.environ.get("CHRONOQ_TEST_DATABASE_URL", LOCAL_DATABASE_URL)
    amqp = os.environ.get("CHRONOQ_TEST_AMQP_URL", LOCAL_AMQP_URL)
    db_ok = asyncio.run(_postgres_ok(db))
    amqp_ok = asyncio.run(_amqp_ok(amqp))
    if not (db_ok and amqp_ok):
        if not _docker_available():
            missing = " and ".join(n for n, ok in (("PostgreSQL", db_ok), ("RabbitMQ", amqp_ok)) if not ok)
            raise RuntimeError(f"{missing} not reachable. {HOW_TO}")
        from testcontainers.postgres import PostgresContainer
        from testcontainers.rabbitmq import RabbitMqContainer

        if not db_ok:
            pg = stack.enter_context(PostgresContainer("postgres:15", driver=None))
            db = pg.get_connection_url()
        if not amqp_ok:
            rabbit = stack.enter_context(RabbitMqContainer("rabbitmq:3.10-management"))
            amqp = f"amqp://guest:guest@{rabbit.get_container_host_ip()}:{rabbit.get_exposed_port(5672)}/"
    management = os.environ.get("CHRONOQ_TEST_MANAGEMENT_URL", "http://guest:guest@127.0.0.1:15672")
    return Services(db, amqp, management)
