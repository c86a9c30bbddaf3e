"""Lanes taking turns (consumer/turns.py): a partial group waits while another group runs, but
never past a full batch, the end of the running group or the linger; slow handlers still run
``concurrency`` at once. Events, not sleeps, order the steps."""

from __future__ import annotations

import asyncio
import functools

from chronoq import JobContext, Producer, Worker
from chronoq._broker.consumer import Incoming
from chronoq.consumer.service import WorkerService
from chronoq.consumer.turns import Turns
from chronoq.timer import Timer
from tests.harness import all_finished, dispatch_once, eventually, running

LONG = 60.0  # a linger no test waits out


async def _spin() -> None:
    for _ in range(20):  # every chance for a waiter to return early
        await asyncio.sleep(0)


def test_with_no_group_running_a_lane_starts_without_waiting() -> None:
    waiting = Turns(LONG).wait(lambda: False)
    try:
        waiting.send(None)
    except StopIteration:
        pass  # returned without ever suspending
    else:
        waiting.close()
        raise AssertionError("an idle worker held a delivery back")


async def test_a_partial_group_waits_until_the_running_group_ends() -> None:
    turns = Turns(LONG)
    turns.started()
    waiting = asyncio.create_task(turns.wait(lambda: False))
    await _spin()
    assert not waiting.done()
    turns.ended()
    await asyncio.wait_for(waiting, 5)
    assert turns.running == 0


async def test_a_full_batch_stops_waiting_when_woken() -> None:
    turns = Turns(LONG)
    turns.started()
    full = False
    waiting = asyncio.create_task(turns.wait(lambda: full))
    await _spin()
    turns.wake()  # woken with the batch still partial: it goes on waiting
    await _spin()
    assert not waiting.done()
    full = True
    turns.wake()
    await asyncio.wait_for(waiting, 5)
    assert turns.running == 1  # the other group still runs


async def test_the_linger_bounds_the_wait() -> None:
    turns = Turns(0.05)
    turns.started()
    loop = asyncio.get_running_loop()
    began = loop.time()
    await asyncio.wait_for(turns.wait(lambda: False), 5)
    assert loop.time() - began >= 0.05


async def test_a_cancelled_waiter_leaves_nothing_behind() -> None:
    turns = Turns(LONG)
    turns.started()
    waiting = asyncio.create_task(turns.wait(lambda: False))
    await _spin()
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    assert waiting.cancelled() and not turns._waiters
    turns.ended()  # wakes nobody, raises nothing


async def test_a_delivery_that_completes_the_waiting_lanes_batch_ends_its_wait(settings) -> None:
    """The delivery the waiting lane holds counts: the batch is full when the inbox holds one
    fewer than a batch, and the delivery that makes it so wakes the lane."""
    worker = Worker()

    @worker.handler("fast")
    async def fast(ctx: JobContext, payload: dict) -> None:
        return None

    service = WorkerService(worker, settings.model_copy(update={"batch_size": 2}))
    service.turns = Turns(LONG)
    service.turns.started()  # another lane's group runs
    first = Incoming(b"{}", {"x-chronoq-queue": "fast"}, False, None, "channel")  # type: ignore[arg-type]
    service.times.observe("fast", 0.0001)
    waiting = asyncio.create_task(service.turns.wait(functools.partial(service.group_ready, first)))
    await _spin()
    assert not waiting.done()
    await service._receive(Incoming(b"{}", {"x-chronoq-queue": "fast"}, False, None, "channel"))  # type: ignore[arg-type]
    await asyncio.wait_for(waiting, 5)


async def test_slow_handlers_still_run_concurrency_at_once(settings, producer: Producer) -> None:
    """Each lane's group outlasts the linger: the lanes stop waiting for each other and all
    three handlers are inside at the same time."""
    worker = Worker()
    all_inside = asyncio.Barrier(3)

    @worker.handler("slow")
    async def slow(ctx: JobContext, payload: dict) -> None:
        await asyncio.wait_for(all_inside.wait(), timeout=10)

    service = WorkerService(worker, settings.model_copy(update={"concurrency": 3}))
    async with running(Timer(settings)), running(service):
        ids = await producer.enqueue_many([{"queue": "slow", "payload": {"n": n}} for n in range(3)])
        await all_finished(producer, ids)
    assert service.outcomes["succeeded"] == 3


async def test_fast_deliveries_waiting_together_run_in_one_group_whatever_the_lane_count(settings, producer: Producer,
                                                                                          db) -> None:
    """The lanes share one inbox: twenty deliveries of a fast handler, all waiting when a lane
    picks, run in one group (one transaction), not spread over the four lanes as they were
    when each lane had its own channel."""
    worker = Worker()

    @worker.handler("fast")
    async def fast(ctx: JobContext, payload: dict) -> int:
        return await ctx.db.fetchval("SELECT txid_current()")  # the group's transaction

    ids = await producer.enqueue_many([{"queue": "fast", "payload": {"n": n}} for n in range(20)])
    assert await dispatch_once(settings) == 20  # all in the queue before the worker subscribes
    service = WorkerService(worker, settings.model_copy(update={"concurrency": 4}))
    service.times.observe("fast", 0.0001)  # a handler this worker has seen run fast
    await service.picking.acquire()  # no lane picks until all twenty are in the inbox
    async with running(service):

        async def all_buffered() -> bool:
            return service.inbox.qsize() == 20

        await eventually(all_buffered, what="the twenty deliveries to reach the worker's inbox")
        service.picking.release()
        await all_finished(producer, ids)
    transactions = await db.fetchval("SELECT count(DISTINCT result) FROM chronoq.results WHERE job_id = ANY($1)", ids)
    assert transactions == 1
