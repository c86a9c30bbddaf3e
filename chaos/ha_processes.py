"""Process plumbing shared by the HA topology's RabbitMQ and Postgres nodes.

The topology starts every server as a child that outlives the Python process that started it, so
any later process (another ``Topology(slot=K)``) must find, signal and wait for it from its pid
alone. Everything here works on pids read from ``/proc``, and identifies a process as ours by what
it carries (an environment variable naming our node, a command line naming our data directory),
never by a program name shared with the machine's default services.

Every wait polls a condition with a deadline and says what it waited for when it gives up.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path

DEADLINE = 60.0


class TopologyError(RuntimeError):
    """A node of the HA topology did not reach the state asked for in time."""


def until(condition: Callable[[], object], what: str, deadline: float = DEADLINE, every: float = 0.1) -> None:
    """Poll ``condition`` until it is truthy; raise ``TopologyError`` naming ``what`` after ``deadline`` s."""
    end = time.monotonic() + deadline
    while not condition():
        if time.monotonic() > end:
            raise TopologyError(f"{what}: not reached within {deadline:.0f} s")
        time.sleep(every)


def run(args: Iterable[str], *, timeout: float = DEADLINE, env: dict[str, str] | None = None,
        user: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command to completion, output captured, never raising on a non-zero exit."""
    command = list(args)
    if user is not None:
        command = ["runuser", "-u", user, "--", *command]
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    except subprocess.TimeoutExpired as exc:
        return subprocess.CompletedProcess(command, 124, stdout="", stderr=f"timed out after {exc.timeout} s")


def process_state(pid: int) -> str | None:
    """The one-letter state in ``/proc/<pid>/stat`` (R, S, T, Z, ...), or None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name in parentheses may contain spaces: the state follows the last ')'.
    return stat.rsplit(")", 1)[1].split()[0]


def alive(pid: int | None) -> bool:
    """True while the process exists and has not exited (a zombie waiting to be reaped counts as gone)."""
    if pid is None:
        return False
    state = process_state(pid)
    return state is not None and state not in ("Z", "X")


def stopped(pid: int | None) -> bool:
    """True if the process is suspended by SIGSTOP (a hung machine)."""
    return pid is not None and process_state(pid) in ("T", "t")


def reap(pid: int) -> None:
    """Collect the exit status if the process is our own child, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def children_of(pid: int) -> list[int]:
    """Direct children of ``pid`` (a postmaster's backends and auxiliary processes)."""
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        if parent_of(int(entry.name)) == pid:
            found.append(int(entry.name))
    return found


def environment_of(pid: int) -> dict[str, str]:
    """The environment a process was started with (empty if it is gone or unreadable)."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return {}
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {key.decode(errors="replace"): value.decode(errors="replace") for key, value in pairs}


def command_line_of(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def all_pids() -> list[int]:
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]


def kill_and_wait(pids: Iterable[int], what: str, deadline: float = 30.0) -> None:
    """SIGKILL every pid at once (a machine dying takes all its processes together) and wait until all are gone."""
    targets = [pid for pid in pids if alive(pid)]
    for pid in targets:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    def gone() -> bool:
        for pid in targets:
            reap(pid)
        return not any(alive(pid) for pid in targets)

    until(gone, f"{what} exiting after SIGKILL", deadline=deadline, every=0.02)


def signal_pid(pid: int | None, signum: signal.Signals, what: str) -> None:
    if not alive(pid):
        raise TopologyError(f"{what} is not running")
    assert pid is not None
    os.kill(pid, signum)
