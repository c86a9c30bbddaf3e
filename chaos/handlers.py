"""The chaos workload's handlers. Every run writes a ledger row through ctx.db (no unique
constraint: a duplicate effect stays visible) and, before its commit, appends a line to an
fsynced "external effect" file (duplicates there are what only an idempotency key absorbs).

Kinds: ``plain``; ``failing`` (always raises: ends dead after max_attempts); ``flaky`` (raises on
its first ``fail_times`` attempts); ``slow`` (first attempt sleeps past its timeout); ``big`` (a
payload just under the size limit, checked intact); ``poison`` (SIGKILLs its own worker process
every time it is delivered: must end dead past the delivery limit).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import time

from chronoq import JobContext, Worker

worker = Worker()
EFFECTS_FILE = os.environ.get("CHAOS_EFFECTS_FILE", "/tmp/chronoq-chaos-effects.log")
POISON_FILE = os.environ.get("CHAOS_POISON_FILE", "/tmp/chronoq-chaos-poison.log")
LEDGER_SQL = """
INSERT INTO chaos_ledger (job_id, occurrence_key, attempt, pid, at) VALUES ($1, $2, $3, $4, clock_timestamp())
"""


def _append(path: str, line: str) -> None:
    with open(path, "a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


@worker.handler("chaos")
async def chaos(ctx: JobContext, payload: dict) -> None:
    kind = payload.get("kind", "plain")
    if kind == "poison":
        _append(POISON_FILE, str(os.getpid()))  # so the harness can tell this death from others
        os.kill(os.getpid(), signal.SIGKILL)
    if kind == "failing":
        raise RuntimeError("always fails")
    if kind == "flaky" and ctx.attempt <= payload.get("fail_times", 1):
        raise RuntimeError("fails this time")
    if kind == "slow" and ctx.attempt == 1:
        await asyncio.sleep(payload.get("seconds", 3))
    if kind == "big" and hashlib.sha256(payload["blob"].encode()).hexdigest() != payload["sha256"]:
        raise ValueError("payload at the size limit arrived damaged")
    await ctx.db.execute(LEDGER_SQL, ctx.job_id, ctx.idempotency_key, ctx.attempt, os.getpid())
    _append(EFFECTS_FILE, json.dumps({"key": ctx.idempotency_key, "attempt": ctx.attempt, "pid": os.getpid(),
                                      "redelivered": ctx.redelivered, "t": round(time.time(), 3)}))
