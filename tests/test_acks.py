"""Settling one channel's deliveries (consumer/acks.py): one ``multiple`` ack for the longest
settled run from the oldest delivery, requeues at once and ahead of any ack that covers them,
nothing settled twice, nothing of a replaced channel touched. And the handler-time estimates
that size a group (consumer/handler_times.py), with the same stand-in deliveries."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from chronoq.consumer.acks import ChannelAcks
from chronoq.consumer.handler_times import GROUP_TIME, HandlerTimes
from chronoq.schemas.message import PACK_HEADER


@dataclass(eq=False)
class Delivery:
    """What ChannelAcks uses of an Incoming: its channel and its three ways to be settled."""

    tag: int
    frames: list[tuple]
    channel: object = "channel-1"
    headers: dict = field(default_factory=dict)

    async def ack(self, *, multiple: bool = False) -> None:
        self.frames.append(("ack", self.channel, self.tag, multiple))

    async def requeue(self) -> None:
        self.frames.append(("requeue", self.channel, self.tag))

    async def dead_letter(self) -> None:
        self.frames.append(("dead_letter", self.channel, self.tag))


def _received(acks: ChannelAcks, frames: list, count: int, channel: object = "channel-1") -> list[Delivery]:
    deliveries = [Delivery(tag, frames, channel) for tag in range(1, count + 1)]
    for d in deliveries:
        acks.received(d)  # type: ignore[arg-type]
    return deliveries


async def _assert_nothing_left_unsettled(acks: ChannelAcks, frames: list) -> None:
    """A delivery received now and done is acked at once, with ``multiple``: nothing before it
    is still waiting to be settled."""
    probe = Delivery(99, frames)
    acks.received(probe)  # type: ignore[arg-type]
    await acks.done([probe])  # type: ignore[list-item]
    assert frames[-1] == ("ack", "channel-1", 99, True)


async def test_a_group_that_ends_first_waits_for_the_earlier_one_then_one_ack_settles_both() -> None:
    acks, frames = ChannelAcks(), []
    d = _received(acks, frames, 6)
    await acks.done(d[3:])  # type: ignore[arg-type]
    assert frames == []  # 1-3 still running: an ack of 6 with multiple would settle them too
    await acks.done(d[:3])  # type: ignore[arg-type]
    assert frames == [("ack", "channel-1", 6, True)]
    await _assert_nothing_left_unsettled(acks, frames)


async def test_a_requeue_goes_out_at_once_and_before_the_ack_that_covers_it() -> None:
    acks, frames = ChannelAcks(), []
    d = _received(acks, frames, 4)
    await acks.done([d[0], d[3]])  # type: ignore[list-item]
    await acks.settle(d[1], "requeue")  # type: ignore[arg-type]
    await acks.settle(d[2], "dead_letter")  # type: ignore[arg-type]
    assert frames == [("ack", "channel-1", 1, True), ("requeue", "channel-1", 2),
                      ("dead_letter", "channel-1", 3), ("ack", "channel-1", 4, True)]


async def test_nothing_is_settled_twice_and_a_release_hands_back_only_what_still_runs() -> None:
    acks, frames = ChannelAcks(), []
    d = _received(acks, frames, 3)
    await acks.settle(d[0], "ack")  # type: ignore[arg-type]
    await acks.settle(d[0], "requeue")  # type: ignore[arg-type]
    await acks.done([d[1]])  # type: ignore[list-item]
    await acks.release(d)  # type: ignore[arg-type]
    assert frames == [("ack", "channel-1", 1, False), ("ack", "channel-1", 2, True), ("requeue", "channel-1", 3)]
    await _assert_nothing_left_unsettled(acks, frames)


async def test_a_new_channel_forgets_the_old_ones_deliveries() -> None:
    acks, frames = ChannelAcks(), []
    old = _received(acks, frames, 2, channel="channel-1")
    new = _received(acks, frames, 2, channel="channel-2")  # after a reconnect: tags start again
    await acks.done(new)  # type: ignore[arg-type]
    await acks.done(old)  # type: ignore[arg-type]
    await acks.settle(old[0], "requeue")  # type: ignore[arg-type]
    assert frames == [("ack", "channel-2", 2, True)]  # the old channel's tags mean nothing now


async def test_frames_keep_the_order_in_which_settlements_are_decided() -> None:
    acks, frames = ChannelAcks(), []
    d = _received(acks, frames, 3)
    await asyncio.gather(acks.done([d[0]]), acks.settle(d[1], "requeue"), acks.done([d[2]]))  # type: ignore[list-item,arg-type]
    assert frames == [("ack", "channel-1", 1, True), ("requeue", "channel-1", 2), ("ack", "channel-1", 3, True)]


def test_an_unseen_queue_counts_as_slow_until_its_handlers_have_run() -> None:
    times = HandlerTimes()
    fast = Delivery(1, [], headers={"x-chronoq-queue": "fast"})
    pack = Delivery(2, [], headers={"x-chronoq-queue": "fast", PACK_HEADER: 250})
    assert times.estimate(fast) >= GROUP_TIME  # type: ignore[arg-type]
    times.observe("fast", 0.001)
    assert times.estimate(fast) == 0.001  # type: ignore[arg-type]
    assert times.estimate(pack) >= GROUP_TIME  # type: ignore[arg-type]  # 250 jobs of 1 ms: 250 ms in all
    for _ in range(20):
        times.observe("fast", 1.0)  # the handler turned slow: the mean follows within a few runs
    assert times.estimate(fast) > GROUP_TIME  # type: ignore[arg-type]


async def test_a_long_running_delivery_does_not_hold_back_the_acks_of_finished_ones(monkeypatch) -> None:
    import chronoq.consumer.acks as acks_module

    acks, frames = ChannelAcks(), []
    d = _received(acks, frames, 4)
    await acks.done([d[1]])  # type: ignore[list-item]
    assert frames == []  # 1 runs, and has not yet held the others back for long
    monkeypatch.setattr(acks_module, "HOLD_LIMIT", 0.0)  # now it has
    await acks.done([d[2]])  # type: ignore[list-item]
    assert frames == [("ack", "channel-1", 2, False), ("ack", "channel-1", 3, False)]
    await acks.done([d[0], d[3]])  # type: ignore[list-item]
    assert frames[2:] == [("ack", "channel-1", 4, True)]  # 1 and 4; 2 and 3 are not acked twice
    await _assert_nothing_left_unsettled(acks, frames)


async def test_a_settle_cancelled_before_its_frame_is_out_leaves_the_delivery_to_be_handed_back() -> None:
    acks, frames = ChannelAcks(), []
    (d,) = _received(acks, frames, 1)
    stuck = asyncio.Event()

    async def never_sent() -> None:
        stuck.set()
        await asyncio.Event().wait()  # the connection's write queue is full

    d.requeue = never_sent  # type: ignore[method-assign]
    settling = asyncio.create_task(acks.settle(d, "requeue"))  # type: ignore[arg-type]
    await stuck.wait()
    settling.cancel()
    await asyncio.gather(settling, return_exceptions=True)
    assert settling.cancelled()
    d.requeue = Delivery.requeue.__get__(d)  # type: ignore[method-assign]
    await acks.release([d])  # type: ignore[list-item]
    assert frames == [("requeue", "channel-1", 1)]


def test_odd_header_values_count_as_an_unknown_queue() -> None:
    times = HandlerTimes()
    times.observe("q", 0.001)
    for headers in ({"x-chronoq-queue": ["q"]}, {"x-chronoq-queue": {"a": 1}}, {"x-chronoq-queue": b"q"}):
        assert times.estimate(Delivery(1, [], headers=headers)) >= GROUP_TIME  # type: ignore[arg-type]
    for pack in ("250", None, True, -3, 2.5, [1]):
        assert times.estimate(Delivery(1, [], headers={"x-chronoq-queue": "q", PACK_HEADER: pack})) == 0.001  # type: ignore[arg-type]
