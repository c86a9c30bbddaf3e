"""Fixtures: one migrated template database per session, a fresh clone of it per test, and a
unique RabbitMQ namespace per test (exchanges and queues deleted afterwards)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import urllib.parse
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, suppress
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from chronoq import Producer
from chronoq._runtime.config import Settings
from chronoq._store.migrate import apply
from chronoq.timer import Timer
from tests.harness import EFFECTS_TABLE, Process, eventually, running
from tests.services import Services, discover

TEMPLATE = f"chronoq_test_tpl_{os.getpid()}"


def database_url(admin_url: str, name: str) -> str:
    return urlunsplit(urlsplit(admin_url)._replace(path=f"/{name}"))


@pytest.fixture(scope="session")
def services() -> Iterator[Services]:
    with ExitStack() as stack:
        try:
            found = discover(stack)
        except RuntimeError as exc:
            pytest.exit(str(exc), returncode=3)
        asyncio.run(_create_template(found.admin_database_url))
        yield found
        asyncio.run(_drop_database(found.admin_database_url, TEMPLATE))


async def _create_template(admin_url: str) -> None:
    await _drop_database(admin_url, TEMPLATE)
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{TEMPLATE}"')
    finally:
        await admin.close()
    conn = await asyncpg.connect(database_url(admin_url, TEMPLATE))
    try:
        await apply(conn)
    finally:
        await conn.close()


async def _drop_database(admin_url: str, name: str) -> None:
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def database(services: Services) -> AsyncIterator[str]:
    """URL of a fresh, migrated database for this test only."""
    name = f"chronoq_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(services.admin_database_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}"')
    finally:
        await admin.close()
    yield database_url(services.admin_database_url, name)
    await _drop_database(services.admin_database_url, name)


@pytest.fixture
def namespace(services: Services) -> Iterator[str]:
    """A RabbitMQ name prefix for this test; its queues and exchanges are deleted afterwards."""
    ns = f"t{uuid.uuid4().hex[:10]}"
    yield ns
    _delete_broker_objects(services, ns)


def _management(services: Services, method: str, path: str) -> object:
    assert services.management_url is not None
    parts = urlsplit(services.management_url)
    request = urllib.request.Request(f"{parts.scheme}://{parts.hostname}:{parts.port}{path}", method=method)
    token = base64.b64encode(f"{parts.username}:{parts.password}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        body = response.read()
    return json.loads(body) if body else None


def _delete_broker_objects(services: Services, ns: str) -> None:
    try:
        queues = _management(services, "GET", "/api/queues/%2F?columns=name")
        exchanges = _management(services, "GET", "/api/exchanges/%2F?columns=name")
    except OSError:
        return  # no management API: the objects stay, named so that nothing else uses them
    for kind, items in (("queues", queues), ("exchanges", exchanges)):
        for item in items:  # type: ignore[union-attr]
            if item["name"].startswith(f"{ns}."):
                quoted = urllib.parse.quote(item["name"], safe="")
                with suppress(OSError):
                    _management(services, "DELETE", f"/api/{kind}/%2F/{quoted}")


@pytest.fixture
def settings(database: str, namespace: str, services: Services) -> Settings:
    """Settings for this test's database and namespace, with short timings so that recovery
    paths run within a test's time."""
    return Settings.load(
        database_url=database,
        amqp_url=services.amqp_url,
        namespace=namespace,
        timer_max_idle="1s",
        shutdown_grace="10s",
    )


@pytest.fixture
async def producer(settings: Settings) -> AsyncIterator[Producer]:
    async with Producer(settings.database_url) as p:
        yield p


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(settings.database_url)
    yield conn
    await conn.close()


@pytest.fixture
def spawn(tmp_path, settings: Settings) -> Iterator:
    """Start ``python -m chronoq *args`` with this test's settings (and ``env``), logging to
    ``<name>.log``; every process started is ended at teardown."""
    started: list[Process] = []

    def start(*args: str, name: str, **env: str) -> Process:
        proc = Process(list(args), child_env(settings, **env), tmp_path / f"{name}.log")
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.close()


def child_env(settings: Settings, **extra: str) -> dict[str, str]:
    """Environment for a chronoq subprocess using this test's settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHRONOQ_")}
    env.update(
        CHRONOQ_DATABASE_URL=settings.database_url,
        CHRONOQ_AMQP_URL=settings.amqp_url,
        CHRONOQ_NAMESPACE=settings.namespace,
        CHRONOQ_TIMER_MAX_IDLE=str(settings.timer_max_idle.total_seconds()),
        CHRONOQ_REDISPATCH_AFTER=str(settings.redispatch_after.total_seconds()),
        CHRONOQ_SHUTDOWN_GRACE=str(settings.shutdown_grace.total_seconds()),
        PYTHONPATH=os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")])),
    )
    env.update(extra)
    return env


@pytest.fixture
def spawn_worker(settings, tmp_path, db):
    """Run real worker processes (restarted whenever one dies) until the given jobs finish."""
    async def run(ids: list[int], settings) -> dict:
        await db.execute(EFFECTS_TABLE)
        env = child_env(settings, CHRONOQ_DELIVERY_LIMIT=str(settings.delivery_limit), CHRONOQ_CONCURRENCY="1",
                        CHRONOQ_BATCH_SIZE="10")
        processes: list[Process] = []
        async with running(Timer(settings)), Producer(settings.database_url) as producer:
            for n in range(10):
                process = Process(["worker", "tests.handlers:worker", "--queue", "crashy"], env, tmp_path / f"w{n}.log")
                processes.append(process)
                await process.wait_for_log("worker_started")

                async def finished_or_dead(process: Process = process) -> bool:
                    return process.popen.poll() is not None or (await producer.summary(ids))["pending"] == 0

                await eventually(finished_or_dead, timeout=60, what="the worker to die or the jobs to finish")
                if process.popen.poll() is None:
                    break
            summary = await producer.summary(ids)
        for process in processes:
            process.terminate()
            process.close()
        return summary

    return run
