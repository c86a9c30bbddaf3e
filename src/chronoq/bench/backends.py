"""How often the pipeline's timer and worker wake Postgres: the voluntary context switches of
their sessions' backends (``/proc/<pid>/status``), found by the application names the processes
connect with (``timer@host:pid``, ``timer@host:pid-dispatch``, ``worker@host:pid``, ...).

A backend waiting for its client sleeps; a message from it (a statement, a transaction's BEGIN
or COMMIT: a round trip) wakes it, unless it arrives before the backend has gone back to sleep,
as the next statement of a transaction can. Wake-ups that the session did not ask for are
counted too: a deferred statistics flush after its last transaction, a catch-up after catalog
changes made by sessions elsewhere on the server, which on a busy shared server can outnumber
the rest. (``pg_stat_statements`` counts round trips exactly, but not by session: see
bench/statements.py.) Local Postgres only: where the backends are not processes of this machine
there is no figure. A session that closes inside the window is missed; one that opens inside
it counts from zero.
"""

from __future__ import annotations

import re
from pathlib import Path

from chronoq._store import bench as store
from chronoq._store.connection import Connection

#: The application names chronoq's timer and worker give their sessions (Postgres keeps 63 bytes).
_NAME = re.compile(r"(?P<role>timer|worker)@.*:(?P<pid>\d+)(?:-[a-z]+)?")

#: Backend pid -> (role, voluntary context switches so far).
Counts = dict[int, tuple[str, int]]


def _switches(pid: int) -> int | None:
    """Voluntary context switches of a local Postgres backend; None if ``pid`` is not one."""
    try:
        if Path(f"/proc/{pid}/comm").read_text().strip() != "postgres":
            return None
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    found = re.search(r"^voluntary_ctxt_switches:\s*(\d+)", status, re.MULTILINE)
    return int(found.group(1)) if found else None


async def count(conn: Connection, pids: dict[str, int]) -> Counts:
    """The wake-ups so far of the sessions of the processes ``pids`` (the pipeline's, by name)."""
    ours = {pid: name.split("-")[0] for name, pid in pids.items()}
    counts: Counts = {}
    for backend, application in (await store.client_sessions(conn)).items():
        named = _NAME.fullmatch(application or "")
        if named is None or ours.get(int(named["pid"])) != named["role"]:
            continue
        switches = _switches(backend)
        if switches is not None:
            counts[backend] = (named["role"], switches)
    return counts


def per_role(before: Counts, after: Counts) -> dict[str, int] | None:
    """Wake-ups between two counts by role (``timer``, ``worker``); None where no session of
    the pipeline was found on this machine."""
    if not after:
        return None
    woken = {"timer": 0, "worker": 0}
    for backend, (role, switches) in after.items():
        woken[role] += switches - before.get(backend, (role, 0))[1]
    return woken
