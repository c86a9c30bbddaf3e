"""The nemesis: seeded faults, one at a time, each logged with its time, kind and target.

Faults come in rounds: every round is a seeded shuffle of all kinds (on the HA topology some
kinds several times, chaos/machine_faults.py), and a run lasts at least one round, so every run
has seen every kind. Between faults a seeded gap. Faults on the processes and the proxies are
here; faults on the engines come from an ``EngineFaults`` object: ``LocalFaults`` for the
machine's own Postgres and RabbitMQ, ``MachineFaults`` for the HA topology.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from typing import Protocol

from chaos import services
from chaos.fleet import Fleet
from chaos.proxy import Proxy

KINDS = ("kill_worker", "kill_timer", "pause_worker", "timers_down", "broker_restart", "broker_kill",
         "postgres_restart", "proxy_latency", "proxy_cut")
#: A paused worker sleeps past its job timeout (2 s) and past its redelivery lease, so another
#: worker takes its occurrences over while it sleeps.
PAUSE_S = (8.0, 11.0)
TIMERS_DOWN_S = (4.0, 6.0)
LATENCY_MS = (50, 200)
LATENCY_S = (3.0, 6.0)


class EngineFaults(Protocol):
    #: Every kind of one round, in a fixed order (a kind listed twice comes twice per round).
    round: tuple[str, ...]

    async def perform(self, kind: str, entry: dict) -> None:
        """Inject an engine fault, recording what it did in ``entry`` (``t`` is when it struck).
        It may leave its recovery running in the background, still writing to ``entry``."""

    async def settle(self) -> None:
        """Wait for every recovery still running."""

    def ready(self, kind: str) -> bool:
        """False while ``kind`` would have to wait for a recovery still running."""


class LocalFaults:
    """Faults of the machine's own Postgres and RabbitMQ (one node each)."""

    round = KINDS

    async def perform(self, kind: str, entry: dict) -> None:
        entry.update(await getattr(self, kind)())

    async def settle(self) -> None:
        return None

    def ready(self, kind: str) -> bool:
        return True

    async def broker_restart(self) -> dict:
        await asyncio.to_thread(services.restart_broker_gracefully)
        return {"target": "rabbitmq (stop_app/start_app)"}

    async def broker_kill(self) -> dict:
        pids = await asyncio.to_thread(services.kill_broker)
        return {"target": "rabbitmq (kill -9 beam.smp)", "pid": pids}

    async def postgres_restart(self) -> dict:
        await asyncio.to_thread(services.restart_postgres)
        return {"target": "postgres (stop -m immediate)"}


class Nemesis:
    def __init__(self, fleet: Fleet, proxies: list[Proxy], rng: random.Random, history: list[dict],
                 *, gap: tuple[float, float], engines: EngineFaults | None = None) -> None:
        self.fleet, self.proxies, self.rng, self.history, self.gap = fleet, proxies, rng, history, gap
        self.engines: EngineFaults = engines or LocalFaults()
        self._round: list[str] = []

    def _next_kind(self) -> str:
        """The round's next kind; one that would wait for a recovery still running (a RabbitMQ
        node not back yet) gives way to the next kind that would not, if any."""
        if not self._round:
            self._round = list(self.engines.round)
            self.rng.shuffle(self._round)
        for n in range(len(self._round) - 1, -1, -1):
            kind = self._round[n]
            if hasattr(self, kind) or self.engines.ready(kind):
                return self._round.pop(n)
        return self._round.pop()

    async def run(self, duration: float, min_faults: int = len(KINDS)) -> None:
        """Inject faults for ``duration`` seconds, and past it until ``min_faults`` happened (by
        default one full round: every run sees every kind). Recoveries the engine faults left
        running are waited for at the end."""
        deadline = time.monotonic() + duration
        while True:
            await asyncio.sleep(self.rng.uniform(*self.gap))
            if time.monotonic() >= deadline and len(self.history) >= min_faults:
                break
            kind = self._next_kind()
            entry: dict = {"t": round(time.time(), 3), "fault": kind}
            if hasattr(self, kind):
                entry.update(await getattr(self, kind)())
            else:
                await self.engines.perform(kind, entry)
            entry["end"] = round(time.time(), 3)
            self.history.append(entry)
        await self.engines.settle()

    async def kill_worker(self) -> dict:
        target = self.rng.choice(self.fleet.names("worker"))
        return {"target": target, "pid": await self.fleet.kill(target)}

    async def kill_timer(self) -> dict:
        target = self.rng.choice(self.fleet.names("timer"))
        return {"target": target, "pid": await self.fleet.kill(target)}

    async def pause_worker(self) -> dict:
        """SIGSTOP a worker past its timeout, then SIGCONT: a zombie that wakes up and tries to
        commit what it was doing."""
        target = self.rng.choice(self.fleet.names("worker"))
        seconds = self.rng.uniform(*PAUSE_S)
        pid = self.fleet.signal(target, signal.SIGSTOP)
        stopped = time.time()
        await asyncio.sleep(seconds)
        self.fleet.signal(target, signal.SIGCONT)
        return {"target": target, "pid": pid, "stopped": round(stopped, 3), "continued": round(time.time(), 3)}

    async def timers_down(self) -> dict:
        """No live timer for a few seconds: cron ticks fall due with nobody to judge them."""
        timers = self.fleet.names("timer")
        for name in timers:
            await self.fleet.kill(name, hold=True)
        down = time.time()
        await asyncio.sleep(self.rng.uniform(*TIMERS_DOWN_S))
        up = time.time()
        for name in timers:
            self.fleet.start(name)
        return {"target": "all timers", "down": round(down, 3), "up": round(up, 3)}

    async def proxy_latency(self) -> dict:
        seconds = self.rng.uniform(*LATENCY_S)
        low, high = LATENCY_MS[0] / 1000, LATENCY_MS[1] / 1000
        for proxy in self.proxies:
            proxy.add_latency(low, high, seconds)
        await asyncio.sleep(seconds)
        return {"target": "proxies (postgres, rabbitmq)", "latency_ms": list(LATENCY_MS), "seconds": round(seconds, 2)}

    async def proxy_cut(self) -> dict:
        cut = [proxy.cut() for proxy in self.proxies]
        return {"target": "proxies (postgres, rabbitmq)", "connections_cut": cut}
