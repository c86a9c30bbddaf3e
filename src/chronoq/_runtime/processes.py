"""Starting and stopping real ``chronoq timer`` / ``chronoq worker`` processes (for the demo and
the benchmarks): the same commands an operator runs, configured through CHRONOQ_* variables."""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from chronoq._runtime.config import Settings

READY_TIMEOUT = 30.0
PR_SET_PDEATHSIG = 1  # prctl(2)
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None


def settings_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        text = str(value.total_seconds()) if hasattr(value, "total_seconds") else str(value)
        env[f"CHRONOQ_{name.upper()}"] = text
    return env


def spawn(args: list[str], settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    handle = log.open("ab")
    # The processes log at this process's level, so `chronoq bench --log-level DEBUG` shows the
    # timer's batch phases in the logs folder.
    level = logging.getLevelName(logging.getLogger().getEffectiveLevel())
    return subprocess.Popen(
        [sys.executable, "-m", "chronoq", *args, "--log-level", level],
        # preexec_fn runs between fork and exec; it only calls a function resolved beforehand
        # (no import, no dlopen, no lock that another thread of this process could hold).
        env=settings_env(settings), stdout=handle, stderr=handle, preexec_fn=_stop_with_parent,
    )


def _stop_with_parent() -> None:
    """In the child, before exec: have Linux send it SIGTERM when the process that started it
    dies, however it dies. A benchmark or demo that is killed (SIGKILL, or a SIGTERM that ends
    it before its own cleanup) would otherwise leave its timers and workers running, loading
    the machine and filling the bench queue. Elsewhere a no-op."""
    if _prctl is not None:
        _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


async def wait_ready(log: Path, marker: bytes, proc: subprocess.Popen[bytes]) -> None:
    """Wait for the process to log ``marker`` (e.g. b"worker_started")."""
    deadline = time.monotonic() + READY_TIMEOUT
    while marker not in await asyncio.to_thread(log.read_bytes):
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before it was ready; see {log}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"process not ready after {READY_TIMEOUT:.0f}s; see {log}")
        await asyncio.sleep(0.05)


def stop(procs: list[subprocess.Popen[bytes]], timeout: float = 40) -> list[int]:
    """SIGTERM all, wait for each; SIGKILL what does not exit in time. Returns exit codes."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(timeout=timeout))
        except subprocess.TimeoutExpired:
            p.kill()
            codes.append(p.wait())
    return codes


async def start_fleet(
    settings: Settings, *, worker_target: str, workers: int, timers: int, logs: Path,
    procs: list[subprocess.Popen[bytes]],
) -> None:
    """Start workers first (their queues exist before anything is published), then timers, each
    ready before the next starts. Appends to ``procs`` as it goes, so the caller can stop
    whatever started even if a later one fails."""
    for n in range(workers):
        log = logs / f"worker-{n}.log"
        procs.append(spawn(["worker", worker_target], settings, log))
        await wait_ready(log, b"worker_started", procs[-1])
    for n in range(timers):
        log = logs / f"timer-{n}.log"
        procs.append(spawn(["timer"], settings, log))
        await wait_ready(log, b"timer_started", procs[-1])
