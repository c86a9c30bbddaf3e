"""A running pipeline for a benchmark: a database, timer and worker processes, jobs to time."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from chronoq._runtime.config import Settings
from chronoq._runtime.processes import start_fleet, stop
from chronoq._store import bench as store
from chronoq._store.connection import Connection
from chronoq._store.migrate import migrate as apply_migrations
from chronoq.producer import Producer


@dataclass
class Pipeline:
    settings: Settings
    producer: Producer
    conn: Connection
    logs: Path
    exit_codes: list[int]
    pids: dict[str, int] = field(default_factory=dict)  # "worker-0", "timer-0", ... -> process id


@asynccontextmanager
async def pipeline(settings: Settings, *, timers: int, workers: int) -> AsyncIterator[Pipeline]:
    """Migrated database (wheel emptied of earlier benchmark jobs), processes up and ready."""
    await apply_migrations(settings.database_url)
    logs = Path(tempfile.mkdtemp(prefix="chronoq-bench-"))
    procs: list[subprocess.Popen[bytes]] = []
    conn = await asyncpg.connect(settings.database_url)
    try:
        await store.setup_effects(conn)
        async with Producer(settings.database_url) as producer:
            await start_fleet(settings, worker_target="chronoq.bench.handlers:worker", workers=workers, timers=timers,
                              logs=logs, procs=procs)
            names = [f"worker-{n}" for n in range(workers)] + [f"timer-{n}" for n in range(timers)]
            running = Pipeline(settings, producer, conn, logs, [], dict(zip(names, (p.pid for p in procs), strict=True)))
            try:
                yield running
            finally:
                running.exit_codes = stop(procs)
                procs = []
    finally:
        stop(procs)
        await conn.close()
