"""Property tests of the missed-run and overlap decisions: every tick is accounted for once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from chronoq.schemas.policies import judge

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)

tick_lists = st.lists(st.integers(min_value=0, max_value=7200), min_size=1, max_size=60, unique=True).map(
    lambda seconds: [NOW - timedelta(seconds=s) for s in sorted(seconds, reverse=True)]
)
policies = st.fixed_dictionaries(
    {
        "grace": st.integers(min_value=0, max_value=600).map(lambda s: timedelta(seconds=s)),
        "misfire": st.sampled_from(["skip", "run_once", "backfill"]),
        "max_backfill": st.integers(min_value=0, max_value=20),
        "backfilled": st.integers(min_value=0, max_value=20),
        "more_follow": st.booleans(),
        "paused": st.booleans(),
        "overlap": st.sampled_from(["allow", "skip"]),
        "previous_running": st.booleans(),
    }
)


@settings(max_examples=300, deadline=None)
@given(ticks=tick_lists, policy=policies)
def test_every_tick_is_run_or_skipped_exactly_once(ticks, policy) -> None:
    verdict = judge(ticks, now=NOW, **policy)
    skipped = [s.fire_at for s in verdict.skip]
    assert sorted(verdict.run + skipped) == ticks
    assert not set(verdict.run) & set(skipped)
    assert verdict.run == sorted(verdict.run)
    assert all(s.reason in ("misfire", "overlap", "paused", "backfill_cap") for s in verdict.skip)


def missed_that_run(missed: list, policy: dict) -> list:
    """What each policy promises for the missed ticks of one call, both bounds: ``skip`` none,
    ``run_once`` exactly the latest (in the outage's last call), ``backfill`` every one, oldest
    first, up to what is left of its cap."""
    if policy["misfire"] == "skip":
        return []
    if policy["misfire"] == "run_once":
        return missed[-1:] if not policy["more_follow"] else []
    return missed[: max(policy["max_backfill"] - policy["backfilled"], 0)]


@settings(max_examples=300, deadline=None)
@given(ticks=tick_lists, policy=policies)
def test_each_policy_keeps_its_promise(ticks, policy) -> None:
    verdict = judge(ticks, now=NOW, **policy)
    missed = [t for t in ticks if NOW - t > policy["grace"]]
    on_time = [t for t in ticks if t not in missed]
    if policy["paused"]:
        assert verdict.run == [] and {s.reason for s in verdict.skip} <= {"paused"}
        return
    promised = missed_that_run(missed, policy) + on_time  # on-time ticks always run
    if policy["overlap"] == "skip":
        promised = [] if policy["previous_running"] else promised[:1]
    assert verdict.run == promised
    not_run = {s.fire_at: s.reason for s in verdict.skip}
    want = "backfill_cap" if policy["misfire"] == "backfill" else "misfire"
    assert all(not_run[t] == want for t in missed if t not in missed_that_run(missed, policy))
    ran_late = len(missed_that_run(missed, policy)) if policy["misfire"] == "backfill" else 0
    # A tick on time ends the outage: the next one starts with a fresh budget.
    assert verdict.backfilled == (0 if on_time else policy["backfilled"] + ran_late)


def test_backfill_gives_each_outage_its_own_budget_even_when_the_next_begins_at_once() -> None:
    """An outage ends when a tick runs on time, even one judged in the same call as the missed
    ones; the next outage, starting right after it, backfills its own ``max_backfill``."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    second = timedelta(seconds=1)
    grace = 2 * second
    first = judge([start + n * second for n in range(7)], now=start + 6 * second, grace=grace,
                  misfire="backfill", max_backfill=3)
    assert len(first.run) == 3 + 3 and [s.reason for s in first.skip] == ["backfill_cap"]
    assert first.backfilled == 0
    later = start + 7 * second
    second_outage = judge([later + n * second for n in range(10)], now=later + 20 * second, grace=grace,
                          misfire="backfill", max_backfill=3, backfilled=first.backfilled)
    assert second_outage.run == [later, later + second, later + 2 * second]
    assert second_outage.backfilled == 3
