"""A recurring job declared over AMQP obeys the same lifecycle rules as one declared with the
Producer (``chronoq.lifecycle``): a key is one job's, a redeclaration updates it in place, and a
paused job stays paused."""

from __future__ import annotations

import aio_pika
import orjson
import pytest

from chronoq import InvalidJobError, Producer
from chronoq.timer import Timer
from tests.harness import eventually, running


async def _submit(settings, channel: aio_pika.abc.AbstractChannel, submission: dict) -> None:
    exchange = await channel.get_exchange(f"{settings.namespace}.submit")
    await exchange.publish(aio_pika.Message(orjson.dumps(submission), content_type="application/json"), routing_key="")


async def test_a_schedule_submitted_over_amqp_follows_the_producers_rules(settings, producer: Producer, db) -> None:
    once = await producer.enqueue("reports", {}, key="taken", delay=3600)
    with pytest.raises(InvalidJobError) as refused:
        await producer.schedule("reports", {}, cron="0 * * * *", key="taken")
    paused = await producer.schedule("reports", {}, cron="0 9 * * *", key="nightly")
    await producer.pause(paused)

    async with running(Timer(settings)):
        connection = await aio_pika.connect(settings.amqp_url)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            await _submit(settings, channel, {"kind": "cron", "queue": "reports", "cron": "0 * * * *", "key": "taken"})
            await _submit(settings, channel, {"kind": "cron", "queue": "reports", "cron": "30 9 * * *", "key": "nightly"})
            rejected = await channel.get_queue(f"{settings.namespace}.submissions.rejected")
            errors: list[str] = []

            async def one_rejected() -> bool:
                message = await rejected.get(fail=False)
                if message is not None:
                    errors.append(message.headers["x-chronoq-error"])
                    await message.ack()
                return bool(errors)

            await eventually(one_rejected, what="the submission that takes a one-shot job's key, rejected")

            async def redeclared() -> bool:
                return await db.fetchval("SELECT cron FROM chronoq.jobs WHERE id = $1", paused) == "30 9 * * *"

            await eventually(redeclared, what="the redeclared schedule stored")
    assert errors == [str(refused.value)]
    assert await db.fetchval("SELECT kind FROM chronoq.jobs WHERE id = $1", once) == "once"
    assert await db.fetchval("SELECT count(*) FROM chronoq.jobs WHERE key = 'nightly'") == 1
    job = await producer.get(paused)
    assert job.state == "paused"
    [head] = [t for t in await producer.ticks(paused) if t.state in ("paused", "scheduled")]
    assert head.state == "paused" and (head.fire_at.hour, head.fire_at.minute) == (9, 30)
