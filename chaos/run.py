"""A first fault-injection run: real timer and worker processes, a seeded nemesis, a recorded
history, and a checker that judges it. Usage (from the repository root):

    python -m chaos.run --seed 7 --duration 60 --jobs 2000 [--broken]

``--broken`` starts workers without the dedup and fence (CHRONOQ_CHAOS_NO_FENCE=1): the checker
must judge that run invalid. (Acking before the commit, CHRONOQ_CHAOS_ACK_BEFORE_COMMIT=1, is not
caught: the redelivery deadline re-publishes what such a worker loses, so nothing is lost —
only late.) Prints the checker's JSON; exits 0 only if it is valid.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import asyncpg

from chaos.checker import check
from chronoq import Producer, RetryPolicy
from chronoq._runtime.config import Settings
from chronoq._runtime.processes import settings_env
from chronoq._store.migrate import migrate

ADMIN_URL = os.environ.get("CHAOS_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
AMQP_URL = os.environ.get("CHAOS_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
LEDGER = """
CREATE TABLE IF NOT EXISTS chaos_ledger (job_id bigint, occurrence_key text, attempt int, pid int, at timestamptz);
"""


class Fleet:
    def __init__(self, settings: Settings, logs: Path, env: dict[str, str]) -> None:
        self.settings, self.logs, self.env = settings, logs, env
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str) -> None:
        args = ["timer"] if name.startswith("timer") else ["worker", "chaos.handlers:worker"]
        log = (self.logs / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen([sys.executable, "-m", "chronoq", *args], env=self.env, stdout=log, stderr=log)

    def signal(self, name: str, sig: int) -> None:
        proc = self.procs.get(name)
        if proc is not None and proc.poll() is None:
            proc.send_signal(sig)

    def restart(self, name: str) -> None:
        self.signal(name, signal.SIGKILL)
        if name in self.procs:
            self.procs[name].wait()
        self.start(name)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()


async def workload(producer: Producer, rng: random.Random, jobs: int, duration: float) -> dict[str, list[int]]:
    quick = RetryPolicy(max_attempts=4, backoff_base=timedelta(milliseconds=200), backoff_cap=timedelta(seconds=1))
    once = []
    for i in range(jobs):
        kind = rng.choices(["plain", "failing", "flaky", "slow"], weights=[85, 3, 10, 2])[0]
        spec = {"queue": "chaos", "payload": {"kind": kind, "fail_times": 2, "seconds": 3}, "retry": quick,
                "timeout": 2, "delay": rng.uniform(-5, duration * 0.8)}  # some overdue when enqueued
        if spec["delay"] < 0:
            spec["run_at"] = None
            spec["delay"] = 0
        once.append(spec)
    ids = await producer.enqueue_many(once)
    crons = [await producer.schedule("chaos", {"kind": "plain"}, cron="* * * * * *", misfire=policy,
                                     misfire_grace=1, max_backfill=3, key=f"chaos-{policy}")
             for policy in ("skip", "run_once", "backfill")]
    return {"once": ids, "cron": crons}


async def nemesis(fleet: Fleet, rng: random.Random, duration: float, history: list[dict]) -> None:
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        await asyncio.sleep(rng.uniform(1.5, 4))
        fault = rng.choice(["kill_worker", "kill_timer", "pause_worker", "timers_down", "restart_broker"])
        target = None
        if fault == "kill_worker":
            target = rng.choice([n for n in fleet.procs if n.startswith("worker")])
            fleet.restart(target)
        elif fault == "kill_timer":
            target = rng.choice([n for n in fleet.procs if n.startswith("timer")])
            fleet.restart(target)
        elif fault == "pause_worker":  # a zombie past its timeout that wakes up and tries to commit
            target = rng.choice([n for n in fleet.procs if n.startswith("worker")])
            fleet.signal(target, signal.SIGSTOP)
            await asyncio.sleep(3)
            fleet.signal(target, signal.SIGCONT)
        elif fault == "timers_down":
            for name in [n for n in fleet.procs if n.startswith("timer")]:
                fleet.signal(name, signal.SIGKILL)
            await asyncio.sleep(3)
            for name in [n for n in fleet.procs if n.startswith("timer")]:
                fleet.restart(name)
        else:
            subprocess.run(["rabbitmqctl", "stop_app"], capture_output=True, timeout=120)
            await asyncio.sleep(2)
            subprocess.run(["rabbitmqctl", "start_app"], capture_output=True, timeout=120)
            subprocess.run(["rabbitmqctl", "await_startup"], capture_output=True, timeout=120)
        history.append({"t": round(time.time(), 3), "fault": fault, "target": target})


async def run(args: argparse.Namespace) -> dict:
    rng = random.Random(args.seed)
    name = f"chronoq_chaos_{args.seed}"
    admin = await asyncpg.connect(ADMIN_URL)
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    url = ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    await migrate(url)
    settings = Settings.load(database_url=url, amqp_url=AMQP_URL, namespace=f"chaos{args.seed}",
                             redispatch_after="5s", timer_max_idle="1s", shutdown_grace="5s")
    logs = Path(tempfile.mkdtemp(prefix="chronoq-chaos-"))
    effects = logs / "external-effects.log"
    env = {**settings_env(settings), "CHAOS_EFFECTS_FILE": str(effects),
           "PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")]))}
    if args.broken:
        env["CHRONOQ_CHAOS_NO_FENCE"] = "1"
    conn = await asyncpg.connect(url)
    await conn.execute(LEDGER)
    fleet = Fleet(settings, logs, env)
    for n in range(3):
        fleet.start(f"worker-{n}")
    for n in range(2):
        fleet.start(f"timer-{n}")
    history: list[dict] = []
    try:
        async with Producer(url) as producer:
            work = await workload(producer, rng, args.jobs, args.duration)
            await nemesis(fleet, rng, args.duration, history)
            # Heal: everything up, recurring jobs stopped, then drain.
            for name_ in list(fleet.procs):
                if fleet.procs[name_].poll() is not None:
                    fleet.start(name_)
            for job_id in work["cron"]:
                await producer.cancel(job_id)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                if (await producer.summary(work["once"]))["pending"] == 0:
                    break
                await asyncio.sleep(1)
    finally:
        fleet.stop_all()  # never leave processes behind, whatever happened
    report = await check(conn, work, effects, settings)
    report["seed"], report["faults"], report["logs"] = args.seed, history, str(logs)
    await conn.close()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=random.randrange(1_000_000))
    parser.add_argument("--duration", type=float, default=60)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--broken", action="store_true")
    args = parser.parse_args()
    report = asyncio.run(run(args))
    print(json.dumps(report, indent=2, default=str))
    sys.exit(0 if report["valid"] else 1)


if __name__ == "__main__":
    main()
