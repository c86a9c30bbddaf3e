"""Jobs from other languages over AMQP: a Node.js producer (amqplib from npm), rejected
submissions, and the JSON Schema kept in sync with the models."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aio_pika
import orjson
import pytest

from chronoq import JobContext, Producer, Worker
from chronoq._broker.topology import Topology
from chronoq.consumer.service import WorkerService
from chronoq.schemas.submission import json_schema
from chronoq.timer import Timer
from tests.harness import eventually, running

REPO = Path(__file__).resolve().parents[1]


def test_the_published_json_schema_matches_the_models() -> None:
    published = orjson.loads((REPO / "schemas" / "submission.schema.json").read_bytes())
    assert published == json_schema(), "run `chronoq schema > schemas/submission.schema.json`"


@pytest.fixture(scope="session")
def node_example(tmp_path_factory) -> Path:
    """The Node.js example with its dependency (amqplib) installed from npm."""
    node, npm = shutil.which("node"), shutil.which("npm")
    assert node and npm, "Node.js and npm are needed for the polyglot test (apt-get install nodejs npm)"
    folder = tmp_path_factory.mktemp("node-example")
    shutil.copytree(REPO / "examples" / "node", folder, dirs_exist_ok=True)
    subprocess.run([npm, "install", "--no-audit", "--no-fund"], cwd=folder, check=True, capture_output=True, timeout=300)
    return folder


@pytest.mark.timeout(120)
async def test_a_node_producer_submits_a_delayed_and_a_cron_job_that_a_python_worker_runs(
    settings, producer: Producer, node_example: Path
) -> None:
    worker = Worker()
    seen: list[tuple[str, int]] = []

    @worker.handler("node.greetings")
    async def greet(ctx: JobContext, payload: dict) -> None:
        seen.append((payload["greeting"], ctx.job_id))

    async with running(Timer(settings)), running(WorkerService(worker, settings)):
        env = {"PATH": "/usr/bin:/bin", "AMQP_URL": settings.amqp_url, "CHRONOQ_NAMESPACE": settings.namespace}
        # In a thread: the timer and worker on this loop take the submissions meanwhile.
        result = await asyncio.to_thread(subprocess.run, ["node", "submit.js", "node.greetings"], cwd=node_example, env=env,
                                         capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr

        async def both_ran() -> bool:
            greetings = [g for g, _ in seen]
            return "hello from node" in greetings and greetings.count("tick from node") >= 2

        await eventually(both_ran, what="the node-submitted jobs to run")
        # Submitting again is idempotent by key: no second job of either kind.
        again = await asyncio.to_thread(subprocess.run, ["node", "submit.js", "node.greetings"], cwd=node_example, env=env,
                                        capture_output=True, text=True, timeout=60)
        assert again.returncode == 0, again.stderr
    jobs = await producer.list_jobs(queue="node.greetings")
    assert sorted((j.kind, j.key) for j in jobs) == [("cron", "node-cron"), ("once", "node-once")]
    cron_job = next(j for j in jobs if j.kind == "cron")
    assert (cron_job.cron, cron_job.timezone) == ("* * * * * *", "Europe/Berlin")


async def test_an_invalid_submission_is_rejected_with_its_error_and_nothing_is_stored(settings, producer: Producer, db) -> None:
    bad = [
        b"{not json",
        orjson.dumps({"kind": "once", "queue": "amq.nope", "payload": {}}),
        orjson.dumps({"kind": "cron", "queue": "reports", "cron": "61 * * * *"}),
        orjson.dumps({"kind": "sometimes", "queue": "reports"}),
        orjson.dumps({"kind": "once", "queue": "reports", "delay_s": -5}),
    ]
    async with running(Timer(settings)):
        connection = await aio_pika.connect(settings.amqp_url)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            exchange = await channel.get_exchange(f"{settings.namespace}.submit")
            for body in bad:
                await exchange.publish(aio_pika.Message(body, content_type="application/json"), routing_key="")
            rejected = await channel.get_queue(f"{settings.namespace}.submissions.rejected")
            errors: list[str] = []

            async def all_rejected() -> bool:
                message = await rejected.get(fail=False)
                if message is not None:
                    errors.append(message.headers["x-chronoq-error"])
                    await message.ack()
                return len(errors) == len(bad)

            await eventually(all_rejected, what="every bad submission in the rejected queue")
    assert any("JSON" in e or "json" in e for e in errors)
    assert any("reserved" in e for e in errors) and any("minute value 61" in e for e in errors)
    assert await db.fetchval("SELECT count(*) FROM chronoq.jobs") == 0


def test_a_submission_without_kind_is_a_one_shot_job() -> None:
    from chronoq.schemas.job import JobSpec
    from chronoq.schemas.submission import parse_submission

    spec = parse_submission(orjson.dumps({"queue": "reports", "payload": {"n": 1}, "delay_s": 5}))
    assert isinstance(spec, JobSpec) and spec.queue == "reports" and spec.delay.total_seconds() == 5


@asynccontextmanager
async def submit_exchange(settings) -> AsyncIterator[aio_pika.abc.AbstractExchange]:
    """The submission exchange, on a channel with publisher confirms."""
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        yield await channel.get_exchange(f"{settings.namespace}.submit")


async def test_a_keyless_submission_delivered_twice_is_stored_once_by_its_message_id(
    settings, services, producer: Producer
) -> None:
    from tests.conftest import _management
    body = orjson.dumps({"kind": "once", "queue": "reports", "payload": {"n": 1}, "delay_s": 3600})
    async with running(Timer(settings)), submit_exchange(settings) as exchange:
        for _ in range(2):  # as a redelivery after a lost ack would arrive
            await exchange.publish(aio_pika.Message(body, message_id="order-7-reminder"), routing_key="")
        other = orjson.dumps({"kind": "once", "queue": "reports", "payload": {"n": 2}, "delay_s": 3600})
        await exchange.publish(aio_pika.Message(other, message_id="another-message"), routing_key="")

        async def all_consumed() -> bool:  # every copy acked, i.e. stored or found a duplicate
            queue = _management(services, "GET", f"/api/queues/%2F/{settings.namespace}.submissions")
            return queue.get("messages") == 0 and queue.get("messages_unacknowledged") == 0 and \
                len(await producer.list_jobs(queue="reports")) >= 2

        await eventually(all_consumed, what="the submissions to be consumed")
    import hashlib

    jobs = await producer.list_jobs(queue="reports")
    expected = "amqp-message:" + hashlib.sha256(b"order-7-reminder").hexdigest()[:32]
    assert len(jobs) == 2 and expected in {j.key for j in jobs}


async def test_the_timer_dispatches_while_its_submissions_consumer_cannot_start(settings, producer: Producer, db) -> None:
    """The submissions queue's neighbour exists with other arguments, so the timer's consumer
    cannot subscribe: the timer still turns the wheel, and keeps retrying the consumer."""
    topology = Topology.for_settings(settings)
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.declare_queue(topology.rejected_submissions_queue, durable=True,
                                    arguments={"x-queue-type": "classic", "x-max-length": 7})
    job_id = await producer.enqueue("dispatched.anyway", {})
    timer = Timer(settings)
    await timer.start()
    try:
        assert await timer.run_once() == 1
        assert await db.fetchval("SELECT dispatches FROM chronoq.wheel WHERE job_id = $1", job_id) == 1
        assert timer.side_tasks.running == {"intake"}  # retrying in the background
    finally:
        await timer.close()
    assert timer.side_tasks.running == set()  # closing stops the retries


def test_a_submission_may_replace_or_debounce_by_key_and_is_refused_naming_the_json_field() -> None:
    from chronoq.errors import InvalidJobError
    from chronoq.schemas.submission import parse_submission

    spec = parse_submission(orjson.dumps({"queue": "q", "key": "k", "debounce_s": 2, "max_wait_s": 30}))
    assert (spec.replaces, spec.debounce.total_seconds(), spec.max_wait.total_seconds()) == (True, 2, 30)
    assert parse_submission(orjson.dumps({"queue": "q", "key": "k", "on_conflict": "replace"})).on_conflict == "replace"
    for body, field in [({"queue": "q", "debounce_s": 2}, "debounce_s"),
                        ({"queue": "q", "key": "k", "debounce_s": 2, "max_wait_s": 1}, "max_wait_s"),
                        ({"queue": "q", "key": "k", "on_conflict": "update"}, "on_conflict"),
                        ({"queue": "q", "key": "k", "debounce_s": 0}, "debounce_s")]:
        with pytest.raises(InvalidJobError) as caught:
            parse_submission(orjson.dumps(body))
        assert caught.value.field == field, (body, str(caught.value))


async def test_a_submission_with_on_conflict_replace_replaces_the_stored_job_of_its_key(settings, producer: Producer, db) -> None:
    job_id = await producer.enqueue("reports", {"n": 1}, key="report-7", delay=3600)
    body = orjson.dumps({"queue": "reports", "key": "report-7", "payload": {"n": 2}, "debounce_s": 60})
    async with running(Timer(settings)), submit_exchange(settings) as exchange:
        await exchange.publish(aio_pika.Message(body, message_id="replace-report-7"), routing_key="")

        async def replaced() -> bool:
            return (await producer.get(job_id)).payload == {"n": 2}

        await eventually(replaced, what="the submission to replace the job's payload")
    due_in = await db.fetchval("SELECT due_at - now() FROM chronoq.wheel WHERE job_id = $1", job_id)
    assert due_in.total_seconds() <= 60  # debounced: due a minute after the submission, not in an hour
    assert len(await producer.list_jobs(queue="reports")) == 1
