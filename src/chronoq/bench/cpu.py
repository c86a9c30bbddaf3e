"""Where the CPU goes during a run: CPU time by process class, from ``/proc`` (Linux).

Classes: the bench's own ``timer`` and ``worker`` processes (by pid), ``postgres`` and
``rabbitmq`` (every local process of that name: a remote deployment shows nothing there), the
bench process itself, and everything else on the machine as ``other``. On 2 cores, the sum of
all classes per job bounds the throughput: 2 s of CPU per second at most. The reference
pipeline (``shared/bench/a4_pipeline.py``) reports the same classes, measured the same way.

A process alive at both snapshots counts its own user + system time between them; one that
starts inside the window counts from zero. One that exits inside the window is gone from
``/proc`` by the second snapshot: a Postgres backend (a connection closed by a pool, an
autovacuum worker) is counted through its postmaster's reaped-children time (cutime + cstime,
which grow by a child's whole life when it is reaped), less what the child had already used at
the first snapshot, so that nothing is counted twice. Other classes do not count reaped
children: a process that exits inside the window is missed there (the timer, the worker and
RabbitMQ keep theirs running).
"""

from __future__ import annotations

import os
from collections.abc import Collection
from pathlib import Path
from typing import NamedTuple

PROC = Path("/proc")
#: Process names (``/proc/<pid>/comm``) of the services, by class.
SERVICE_NAMES = {"postgres": "postgres", "beam.smp": "rabbitmq", "epmd": "rabbitmq", "erl_child_setup": "rabbitmq"}
#: Classes whose processes' reaped-children time counts: the postmaster's children are its
#: backends, which come and go with connections.
REAPERS = frozenset({"postgres"})
#: Fields of /proc/<pid>/stat counted from the one after the command name (proc(5) numbers
#: them from 1 with the pid; the state is its field 3).
_PPID, _UTIME, _STIME, _CUTIME, _CSTIME, _STARTTIME = 1, 11, 12, 13, 14, 19


class Process(NamedTuple):
    cls: str
    own: float  # CPU seconds: user + system
    reaped: float  # CPU seconds of the children it has reaped (only for the REAPERS classes)
    parent: int
    started: int  # clock ticks after boot: tells a process from a later one with its pid


Snapshot = dict[int, Process]


def available() -> bool:
    return (PROC / "self" / "stat").exists()


def _stat(pid: int) -> list[str] | None:
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:  # gone meanwhile
        return None
    return stat[stat.rfind(")") + 2 :].split()  # the command name may hold spaces


def _class(pid: int, roles: dict[int, str]) -> str:
    if pid in roles:
        return roles[pid]
    try:
        comm = (PROC / str(pid) / "comm").read_text().strip()
    except OSError:
        return "other"
    return SERVICE_NAMES.get(comm, "other")


def snapshot(pids: dict[str, int], *, reapers: Collection[str] = REAPERS) -> Snapshot:
    """CPU seconds so far of every process, classed. ``pids``: the pipeline's processes by
    name (``worker-0``, ``timer-0``, ...); the calling process is ``bench``. Processes of the
    ``reapers`` classes also carry their reaped children's time."""
    roles = {pid: name.split("-")[0] for name, pid in pids.items()}
    roles[os.getpid()] = "bench"
    tick = os.sysconf("SC_CLK_TCK")
    taken: Snapshot = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        fields = _stat(pid)
        if fields is None:
            continue
        cls = _class(pid, roles)
        reaped = (int(fields[_CUTIME]) + int(fields[_CSTIME])) / tick if cls in reapers else 0.0
        own = (int(fields[_UTIME]) + int(fields[_STIME])) / tick
        taken[pid] = Process(cls, own, reaped, int(fields[_PPID]), int(fields[_STARTTIME]))
    return taken


def _same(before: Snapshot, after: Snapshot, pid: int) -> bool:
    return pid in before and pid in after and before[pid].started == after[pid].started


def used(before: Snapshot, after: Snapshot) -> dict[str, float]:
    """CPU seconds by class between two snapshots (see the module's docstring)."""
    seconds: dict[str, float] = {}
    for pid, now in after.items():
        then = before[pid] if _same(before, after, pid) else None
        spent = now.own + now.reaped - (then.own + then.reaped if then else 0.0)
        seconds[now.cls] = seconds.get(now.cls, 0.0) + spent
    for pid, then in before.items():
        if _same(before, after, pid) or not _same(before, after, then.parent):
            continue
        parent = after[then.parent]
        if parent.reaped > before[then.parent].reaped:
            # Exited inside the window and reaped by a parent whose reaped time counts: that
            # grew by the child's whole life, of which this much was spent before the window.
            seconds[parent.cls] -= then.own + then.reaped
    return seconds


def per_job(before: Snapshot, after: Snapshot, jobs: int) -> dict[str, float]:
    """Milliseconds of CPU per job by class between two snapshots, plus their ``total``."""
    return _scaled(used(before, after), 1000 / jobs, 3)


def percent_of_core(before: Snapshot, after: Snapshot, seconds: float) -> dict[str, float]:
    """Percent of one core by class over ``seconds`` of wall time, plus their ``total``."""
    return _scaled(used(before, after), 100 / seconds, 2)


def _scaled(spent: dict[str, float], factor: float, digits: int) -> dict[str, float]:
    figures = {cls: round(s * factor, digits) for cls, s in sorted(spent.items(), key=lambda kv: -kv[1])}
    figures["total"] = round(sum(spent.values()) * factor, digits)
    return figures


def begin(pids: dict[str, int]) -> Snapshot | None:
    """The CPU so far, where ``/proc`` is there (else None): the start of a measured phase."""
    return snapshot(pids) if available() else None


def per_job_since(before: Snapshot | None, pids: dict[str, int], jobs: int) -> dict[str, float] | None:
    """``per_job`` from ``begin``'s snapshot to now; None where there was none."""
    return per_job(before, snapshot(pids), jobs) if before is not None else None
