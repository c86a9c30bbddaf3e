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


@settings(max_examples=300, deadline=None)
@given(ticks=tick_lists, policy=policies)
def test_each_policy_keeps_its_promise(ticks, policy) -> None:
    verdict = judge(ticks, now=NOW, **policy)
    missed = [t for t in ticks if NOW - t > policy["grace"]]
    ran_missed = [t for t in verdict.run if t in missed]
    if policy["paused"]:
        assert verdict.run == [] and {s.reason for s in verdict.skip} <= {"paused"}
        return
    if policy["overlap"] == "skip":
        assert len(verdict.run) <= 1
        if policy["previous_running"]:
            assert verdict.run == []
    elif policy["misfire"] != "backfill":
        on_time = [t for t in ticks if t not in missed]
        assert [t for t in verdict.run if t not in missed] == on_time  # on-time ticks always run
    if policy["misfire"] == "skip":
        assert ran_missed == []
    elif policy["misfire"] == "run_once":
        assert len(ran_missed) <= 1
        if ran_missed:
            assert ran_missed == [missed[-1]]  # the latest missed tick
    else:
        assert len(ran_missed) <= max(policy["max_backfill"] - policy["backfilled"], 0)
        assert ran_missed == missed[: len(ran_missed)]  # oldest first
