"""`chronoq dlq`: list, show, replay (a fresh attempt, recorded) and purge dead occurrences."""

from __future__ import annotations

from datetime import timedelta

import orjson

from chronoq import JobContext, Producer, RetryPolicy, Worker
from chronoq.consumer.service import WorkerService
from chronoq.timer import Timer
from tests.harness import all_finished, running
from tests.test_cli import chronoq

ONCE = RetryPolicy(max_attempts=1, backoff_base=timedelta(0))


async def test_list_show_replay_purge(settings, producer: Producer, db) -> None:
    healed = {"now": False}
    worker = Worker()

    @worker.handler("invoices")
    async def invoices(ctx: JobContext, payload: dict) -> str:
        if not healed["now"]:
            raise RuntimeError("ledger service down")
        return "sent"

    ids = [await producer.enqueue("invoices", {"n": n}, retry=ONCE) for n in range(3)]
    async with running(Timer(settings)), running(WorkerService(worker, settings)):
        await all_finished(producer, ids)
    assert {(await producer.get(i)).state for i in ids} == {"dead"}

    listing = orjson.loads(chronoq(settings, "dlq", "ls", "--json").stdout)
    assert [(r["queue"], r["dead"], r["dead_letter_messages"]) for r in listing] == [("invoices", 3, 3)]
    shown = orjson.loads(chronoq(settings, "dlq", "show", "--queue", "invoices", "--json").stdout)
    assert len(shown) == 3 and {m["reason"] for m in shown} == {"max_attempts"}
    assert {m["error"] for m in shown} == {"RuntimeError: ledger service down"}
    assert "payload" not in str(shown)

    first_key = (await producer.get(ids[0])).occurrences[0].occurrence_key
    replayed = chronoq(settings, "dlq", "replay", "--queue", "invoices", "--occurrence", first_key)
    assert replayed.returncode == 0 and "replayed 1" in replayed.stdout and "1 dead-letter copy removed" in replayed.stdout
    healed["now"] = True
    async with running(Timer(settings)), running(WorkerService(worker, settings)):
        await all_finished(producer, [ids[0]])
    job = await producer.get(ids[0])
    assert (job.state, job.occurrences[0].attempt, job.occurrences[0].result) == ("succeeded", 2, "sent")
    assert [a.outcome for a in job.occurrences[0].attempts] == ["failed", "replayed", "succeeded"]

    listing = orjson.loads(chronoq(settings, "dlq", "ls", "--json").stdout)
    assert [(r["dead"], r["dead_letter_messages"]) for r in listing] == [(2, 2)]
    purged = chronoq(settings, "dlq", "purge", "--queue", "invoices")
    assert "purged 2" in purged.stdout
    listing = orjson.loads(chronoq(settings, "dlq", "ls", "--json").stdout)
    assert [(r["dead"], r["dead_letter_messages"]) for r in listing] == [(2, 0)]  # Postgres keeps the record
