"""The gate that runs a suspected poison delivery with the rest of its worker process quiet
(consumer/suspects.py). Events, not sleeps, order the steps."""

from __future__ import annotations

import asyncio

from chronoq.consumer.suspects import SuspectGate


async def test_a_suspect_waits_for_running_groups_and_holds_back_new_ones() -> None:
    gate = SuspectGate()
    order: list[str] = []
    first_inside, release_first = asyncio.Event(), asyncio.Event()

    async def ordinary(name: str, inside: asyncio.Event | None = None, release: asyncio.Event | None = None) -> None:
        async with gate.ordinary():
            order.append(f"{name} in")
            if inside is not None:
                inside.set()
            if release is not None:
                await release.wait()
            order.append(f"{name} out")

    async def suspect() -> None:
        async with gate.suspect():
            order.append("suspect in")
            order.append("suspect out")

    first = asyncio.create_task(ordinary("first", first_inside, release_first))
    await first_inside.wait()
    waiting_suspect = asyncio.create_task(suspect())
    # The gate has no event for "a suspect waits"; each sleep(0) lets the suspect take one step.
    while not gate._suspect:  # noqa: ASYNC110 - the suspect has claimed its turn
        await asyncio.sleep(0)
    late = asyncio.create_task(ordinary("late"))
    for _ in range(20):  # give both every chance to run early
        await asyncio.sleep(0)
    assert order == ["first in"], order
    release_first.set()
    await asyncio.gather(first, waiting_suspect, late)
    assert order == ["first in", "first out", "suspect in", "suspect out", "late in", "late out"]


async def test_ordinary_groups_run_side_by_side() -> None:
    gate = SuspectGate()
    both_inside = asyncio.Barrier(2)

    async def ordinary() -> None:
        async with gate.ordinary():
            await asyncio.wait_for(both_inside.wait(), timeout=5)

    await asyncio.gather(ordinary(), ordinary())


async def test_a_suspect_cancelled_while_waiting_lets_ordinary_groups_through() -> None:
    gate = SuspectGate()
    inside, release = asyncio.Event(), asyncio.Event()

    async def holder() -> None:
        async with gate.ordinary():
            inside.set()
            await release.wait()

    held = asyncio.create_task(holder())
    await inside.wait()

    async def suspect() -> None:
        async with gate.suspect():
            raise AssertionError("must not get in while an ordinary group runs")

    waiting = asyncio.create_task(suspect())
    while not gate._suspect:  # noqa: ASYNC110 - as above
        await asyncio.sleep(0)
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    assert waiting.cancelled()  # not ended by the AssertionError of a suspect that got in
    async with gate.ordinary():  # not held back by a suspect that gave up
        pass
    release.set()
    await held
