"""Where the CPU goes per job during a run: CPU time by process class, from ``/proc`` (Linux).

Classes: the bench's own ``timer`` and ``worker`` processes (by pid), ``postgres`` and
``rabbitmq`` (every local process of that name: a remote deployment shows nothing there), the
bench process itself, and everything else on the machine as ``other``. On 2 cores, the sum of
all classes per job bounds the throughput: 2 s of CPU per second at most. The reference
pipeline (``shared/bench/a4_pipeline.py``) reports the same classes, so the two line up.

A process that starts during the window counts from zero; one that exits during it is missed
(a burst keeps its connections open, so neither happens to the hot processes).
"""

from __future__ import annotations

import os
from pathlib import Path

PROC = Path("/proc")
#: Process names (``/proc/<pid>/comm``) of the services, by class.
SERVICE_NAMES = {"postgres": "postgres", "beam.smp": "rabbitmq", "epmd": "rabbitmq", "erl_child_setup": "rabbitmq"}

Snapshot = dict[int, tuple[str, float]]


def available() -> bool:
    return (PROC / "self" / "stat").exists()


def _cpu_seconds(pid: int) -> float | None:
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:  # gone meanwhile
        return None
    fields = stat[stat.rfind(")") + 2 :].split()  # the command name may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _class(pid: int, roles: dict[int, str]) -> str:
    if pid in roles:
        return roles[pid]
    try:
        comm = (PROC / str(pid) / "comm").read_text().strip()
    except OSError:
        return "other"
    return SERVICE_NAMES.get(comm, "other")


def snapshot(pids: dict[str, int]) -> Snapshot:
    """CPU seconds so far of every process, classed. ``pids``: the pipeline's processes by
    name (``worker-0``, ``timer-0``, ...); the calling process is ``bench``."""
    roles = {pid: name.split("-")[0] for name, pid in pids.items()}
    roles[os.getpid()] = "bench"
    taken: Snapshot = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            pid = int(entry.name)
            seconds = _cpu_seconds(pid)
            if seconds is not None:
                taken[pid] = (_class(pid, roles), seconds)
    return taken


def per_job(before: Snapshot, after: Snapshot, jobs: int) -> dict[str, float]:
    """Milliseconds of CPU per job by class between two snapshots, plus their ``total``."""
    used: dict[str, float] = {}
    for pid, (cls, seconds) in after.items():
        used[cls] = used.get(cls, 0.0) + seconds - before.get(pid, (cls, 0.0))[1]
    ms = {cls: round(s * 1000 / jobs, 3) for cls, s in sorted(used.items(), key=lambda kv: -kv[1])}
    ms["total"] = round(sum(used.values()) * 1000 / jobs, 3)
    return ms


def begin(pids: dict[str, int]) -> Snapshot | None:
    """The CPU so far, where ``/proc`` is there (else None): the start of a measured phase."""
    return snapshot(pids) if available() else None


def per_job_since(before: Snapshot | None, pids: dict[str, int], jobs: int) -> dict[str, float] | None:
    """``per_job`` from ``begin``'s snapshot to now; None where there was none."""
    return per_job(before, snapshot(pids), jobs) if before is not None else None

