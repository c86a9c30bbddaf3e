"""What the chaos run asks of chronoq: one-shot jobs of every kind spread over the run (some
already overdue when enqueued, some due only after the nemesis stops, some cancelled before they
run), payloads just under the size limit, one poison job, and per-second cron jobs under each
missed-run policy."""

from __future__ import annotations

import asyncio
import hashlib
import random
import string
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import orjson

from chronoq import Producer, RetryPolicy
from chronoq.schemas.payload import MAX_PAYLOAD_BYTES

QUEUE = "chaos"
MAX_ATTEMPTS = 4
TIMEOUT_S = 2
KINDS = {"plain": 80, "failing": 3, "flaky": 9, "slow": 2, "big": 1, "cancel": 5}
MISFIRE_GRACE_S = 1
MAX_BACKFILL = 3
RETRY = RetryPolicy(max_attempts=MAX_ATTEMPTS, backoff_base=timedelta(milliseconds=200), backoff_cap=timedelta(seconds=1))


@dataclass
class Work:
    once: list[int] = field(default_factory=list)
    kinds: dict[int, str] = field(default_factory=dict)
    cron: dict[int, str] = field(default_factory=dict)  # job id -> missed-run policy
    to_cancel: list[int] = field(default_factory=list)
    cancelled_at: dict[int, float] = field(default_factory=dict)  # job id -> epoch seconds
    poison: int | None = None
    big_payload_bytes: int = 0
    #: Jobs enqueued one at a time during the nemesis (HA runs): idempotency key -> the id the
    #: enqueue returned; the keys whose enqueue never returned are asked again after healing.
    trickled: dict[str, int] = field(default_factory=dict)
    trickle_unanswered: list[str] = field(default_factory=list)


def big_payload(rng: random.Random) -> dict:
    """A payload whose encoded JSON is 16 bytes under the limit, with its own checksum."""
    skeleton = {"kind": "big", "sha256": "0" * 64, "blob": ""}
    size = MAX_PAYLOAD_BYTES - 16 - len(orjson.dumps(skeleton))
    blob = "".join(rng.choices(string.ascii_letters + string.digits, k=size))
    return {"kind": "big", "sha256": hashlib.sha256(blob.encode()).hexdigest(), "blob": blob}


async def enqueue(producer: Producer, rng: random.Random, jobs: int, duration: float) -> Work:
    work = Work()
    specs, kinds = [], []
    for _ in range(jobs):
        kind = rng.choices(list(KINDS), weights=list(KINDS.values()))[0]
        # Spread over the nemesis; some overdue already; some due after it stops (lateness after
        # recovery); jobs to cancel are due well after their cancellation.
        phase = rng.choices(["overdue", "during", "after"], weights=[2, 6, 1])[0]
        when = {"overdue": -rng.uniform(0, 5), "during": rng.uniform(0, duration),
                "after": rng.uniform(duration + 5, duration + 12)}[phase]
        if kind == "cancel":
            when = duration + 30
        plain = {"kind": "plain" if kind == "cancel" else kind, "fail_times": 2, "seconds": 3}
        payload = big_payload(rng) if kind == "big" else plain
        spec = {"queue": QUEUE, "payload": payload, "retry": RETRY, "timeout": TIMEOUT_S}
        if when < 0:  # overdue when enqueued: due a few seconds ago
            spec["run_at"] = datetime.now(UTC) + timedelta(seconds=when)
        else:
            spec["delay"] = when
        specs.append(spec)
        kinds.append(kind)
    work.once = await producer.enqueue_many(specs)
    work.kinds = dict(zip(work.once, kinds, strict=True))
    work.to_cancel = [j for j, k in work.kinds.items() if k == "cancel"]
    work.big_payload_bytes = len(orjson.dumps(big_payload(random.Random(0))))
    # The poison job: kills whichever worker runs it, every time.
    work.poison = await producer.enqueue(QUEUE, {"kind": "poison"}, retry=RETRY, timeout=TIMEOUT_S,
                                         delay=min(5.0, duration / 4))
    work.once.append(work.poison)
    work.kinds[work.poison] = "poison"
    for policy in ("skip", "run_once", "backfill"):
        job_id = await producer.schedule(QUEUE, {"kind": "plain"}, cron="* * * * * *", misfire=policy,
                                         misfire_grace=MISFIRE_GRACE_S, max_backfill=MAX_BACKFILL,
                                         key=f"chaos-{policy}", retry=RETRY, timeout=TIMEOUT_S)
        work.cron[job_id] = policy
    return work


async def trickle(producer: Producer, work: Work, rng: random.Random, rate: float, duration: float,
                  retrying: Callable[[Callable[[], Awaitable[int]]], Awaitable[int]]) -> None:
    """Enqueue plain jobs one at a time, ``rate`` a second for ``duration`` seconds, each with its
    own idempotency key and retried through outages until it returns: what a producer saw
    committed, against which a failover's loss is counted."""
    end = time.monotonic() + duration
    n = 0
    while time.monotonic() < end:
        key, n = f"trickle-{n}", n + 1
        try:
            job_id = await retrying(lambda key=key: enqueue_trickled(producer, key, rng.uniform(0, 2)))
        except Exception:  # never returned: it may exist or not; settled by asking again later
            work.trickle_unanswered.append(key)
        else:
            work.trickled[key] = job_id
        await asyncio.sleep(1 / rate)


async def enqueue_trickled(producer: Producer, key: str, delay: float) -> int:
    return await producer.enqueue(QUEUE, {"kind": "plain"}, key=key, delay=delay, retry=RETRY, timeout=TIMEOUT_S)


async def settle_trickle(producer: Producer, work: Work) -> None:
    """Ask again, by key, for the enqueues that never returned (the system healed): an existing
    job's id comes back, a missing one is stored now. All of them are then jobs of the run."""
    for key in work.trickle_unanswered:
        work.trickled[key] = await enqueue_trickled(producer, key, 0)
    for job_id in set(work.trickled.values()) - set(work.once):
        work.once.append(job_id)
        work.kinds[job_id] = "plain"
