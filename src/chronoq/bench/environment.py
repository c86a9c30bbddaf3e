"""What every benchmark run records beside its figures: versions, settings, machine."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from typing import Any

from chronoq._runtime.config import Settings
from chronoq._store import bench as store
from chronoq._store.connection import Connection

PACKAGES = ("chronoq", "asyncpg", "aio-pika", "aiormq", "orjson", "uvloop", "pydantic", "croniter")


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _meminfo() -> dict[str, str]:
    """/proc/meminfo's fields; a file the kernel writes from memory, so reading it never waits."""
    if not os.path.exists("/proc/meminfo"):
        return {}
    with open("/proc/meminfo") as f:
        return dict(line.split(":", 1) for line in f if ":" in line)


async def describe(settings: Settings, conn: Connection) -> dict[str, Any]:
    meminfo = _meminfo()
    server = await store.server_environment(conn)
    return {
        "machine": {
            "cpus": os.cpu_count(),
            "memory": meminfo.get("MemTotal", "").strip(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "packages": {p: _version(p) for p in PACKAGES},
        "postgres": server["server_version"],
        "synchronous_commit": server["synchronous_commit"],
        "autovacuum": server["autovacuum"],
        "settings": {k: str(v) for k, v in settings.model_dump().items() if k not in ("database_url", "amqp_url")},
    }
