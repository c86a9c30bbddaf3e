"""The supervised fleet: real ``chronoq timer`` and ``chronoq worker`` processes.

A supervisor polls every process. One that exits without the nemesis having asked for it (a
failpoint's SIGKILL, the poison job killing its worker, a crash) is recorded with its cause
and started again, as a process manager would; a process the nemesis took down on purpose is
restarted by the nemesis itself. Failpoints are armed (``CHRONOQ_FAILPOINTS``) in some
processes only, so the rest of the fleet always makes progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

TIMER_FAILPOINTS = ("timer.after_claim", "timer.before_confirm", "timer.after_confirm", "timer.before_commit")
WORKER_FAILPOINTS = ("consumer.before_transaction", "consumer.before_commit", "consumer.after_commit")
POLL = 0.1
EXIT_UNAVAILABLE = 3  # chronoq's exit code when a service it needs is unreachable


@dataclass
class Member:
    name: str
    env: dict[str, str]
    mutant: str | None = None  # a deliberately broken build (chaos/mutants.py)
    proc: subprocess.Popen[bytes] | None = None
    held: bool = False  # down on purpose: the supervisor leaves it down
    pids: list[int] = field(default_factory=list)


class Fleet:
    def __init__(self, logs: Path, poison_file: Path, history: list[dict]) -> None:
        self.logs, self.poison_file, self.history = logs, poison_file, history
        self.members: dict[str, Member] = {}
        self.deaths: list[dict] = []
        self._supervisor: asyncio.Task[None] | None = None

    def add(self, name: str, env: dict[str, str], mutant: str | None = None) -> None:
        self.members[name] = Member(name, env, mutant)

    def names(self, prefix: str) -> list[str]:
        return [n for n in self.members if n.startswith(prefix)]

    def start(self, name: str) -> None:
        member = self.members[name]
        args = ["timer"] if name.startswith("timer") else ["worker", "chaos.handlers:worker"]
        log = (self.logs / f"{name}.log").open("ab")
        entry = ["chaos.mutants", member.mutant] if member.mutant else ["chronoq"]
        member.proc = subprocess.Popen([sys.executable, "-m", *entry, *args], env=member.env, stdout=log, stderr=log)
        member.pids.append(member.proc.pid)
        member.held = False

    def pid(self, name: str) -> int | None:
        proc = self.members[name].proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def signal(self, name: str, sig: int) -> int | None:
        proc = self.members[name].proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(sig)
            return proc.pid
        return None

    async def kill(self, name: str, *, hold: bool = False) -> int | None:
        """SIGKILL (on purpose: not counted as a death); restarted unless ``hold``."""
        member = self.members[name]
        member.held = True
        pid = self.signal(name, signal.SIGKILL)
        if member.proc is not None:
            await self._exited(member.proc)
        if not hold:
            self.start(name)
        return pid

    async def _exited(self, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            await asyncio.to_thread(proc.wait, timeout)

    def supervise(self) -> None:
        self._supervisor = asyncio.create_task(self._supervise(), name="supervisor")

    async def _supervise(self) -> None:
        while True:
            await asyncio.sleep(POLL)
            for member in self.members.values():
                proc = member.proc
                if member.held or proc is None or proc.poll() is None:
                    continue
                self.deaths.append({"t": round(time.time(), 3), "target": member.name, "pid": proc.pid,
                                    "returncode": proc.returncode, "cause": self._cause(member, proc)})
                self.start(member.name)

    def _cause(self, member: Member, proc: subprocess.Popen[bytes]) -> str:
        if proc.returncode == EXIT_UNAVAILABLE:
            return "unavailable_at_start"  # started while Postgres or RabbitMQ was down
        if proc.returncode != -signal.SIGKILL:
            return "crash"  # exited by itself: see its log
        if self.poison_file.exists() and str(proc.pid) in self.poison_file.read_text().split():
            return "poison"
        return "failpoint" if "CHRONOQ_FAILPOINTS" in member.env else "unexplained_kill"

    async def stop(self) -> None:
        """Stop the supervisor, wake anything paused, SIGTERM all, SIGKILL what hangs."""
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
        procs = [m.proc for m in self.members.values() if m.proc is not None and m.proc.poll() is None]
        for proc in procs:
            proc.send_signal(signal.SIGCONT)
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            await self._exited(proc, timeout=60)
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    def all_running(self) -> bool:
        return all(m.proc is not None and m.proc.poll() is None for m in self.members.values())


def failpoint_spec(role: str, rate: float) -> str:
    points = TIMER_FAILPOINTS if role == "timer" else WORKER_FAILPOINTS
    return ",".join(f"{p}=kill@{rate}" for p in points)
