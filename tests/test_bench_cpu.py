"""The bench's CPU meter (bench/cpu.py) counts a process that exits inside the measured window
through its parent's reaped-children time, once: real child processes of this test burn a known
amount of CPU and exit between the two snapshots."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from chronoq.bench import cpu

pytestmark = pytest.mark.skipif(not cpu.available(), reason="the CPU meter reads /proc (Linux)")

#: The child burns this many CPU seconds for each line it reads, says so, and exits at the end of its stdin.
BURN = 0.3
CHILD = f"""
import sys, time
for _ in sys.stdin:
    end = time.process_time() + {BURN}
    while time.process_time() < end:
        pass
    print("burned", flush=True)
"""
#: Clock ticks are 10 ms: each of the figures compared may be a tick off.
TICKS = 0.03
#: The test process counts the time of the children it reaps, as a postmaster's class does.
REAPERS = ("bench",)


def _start() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE)


def _burn(child: subprocess.Popen[bytes]) -> None:
    """Returns once the child has burned another share."""
    assert child.stdin is not None and child.stdout is not None
    child.stdin.write(b"burn\n")
    child.stdin.flush()
    assert child.stdout.readline() == b"burned\n"


def _finish(child: subprocess.Popen[bytes]) -> float:
    """End the child and reap it; returns its whole life's CPU seconds."""
    assert child.stdin is not None and child.stdout is not None
    child.stdin.close()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    child.stdout.close()
    assert child.returncode == 0
    return usage.ru_utime + usage.ru_stime


def _children_share(before: cpu.Snapshot, after: cpu.Snapshot) -> float:
    """What the bench class was charged beyond this process's own CPU."""
    me = os.getpid()
    return cpu.used(before, after)["bench"] - (after[me].own - before[me].own)


def test_a_child_born_and_reaped_inside_the_window_is_counted_whole_for_its_parent() -> None:
    before = cpu.snapshot({}, reapers=REAPERS)
    child = _start()
    _burn(child)
    life = _finish(child)
    after = cpu.snapshot({}, reapers=REAPERS)
    assert child.pid not in after and life >= BURN
    assert _children_share(before, after) == pytest.approx(life, abs=TICKS)


def test_a_child_that_exits_inside_the_window_counts_only_what_it_used_inside_it() -> None:
    child = _start()
    _burn(child)
    before = cpu.snapshot({}, reapers=REAPERS)
    spent_before = before[child.pid].own
    assert spent_before >= BURN - TICKS
    _burn(child)
    life = _finish(child)
    after = cpu.snapshot({}, reapers=REAPERS)
    share = _children_share(before, after)
    assert share == pytest.approx(life - spent_before, abs=TICKS)  # not its whole life again
    assert share < life - BURN / 2


def test_a_child_alive_at_both_snapshots_is_counted_by_its_own_time_only() -> None:
    child = _start()
    try:
        _burn(child)
        before = cpu.snapshot({}, reapers=REAPERS)
        _burn(child)
        after = cpu.snapshot({}, reapers=REAPERS)
        assert after[child.pid].started == before[child.pid].started and after[child.pid].cls == "other"
        assert after[child.pid].own - before[child.pid].own == pytest.approx(BURN, abs=TICKS)
        assert _children_share(before, after) == pytest.approx(0.0, abs=1e-9)  # nothing reaped yet
    finally:
        _finish(child)


def test_classes_that_do_not_reap_ignore_their_children() -> None:
    before = cpu.snapshot({})
    child = _start()
    _burn(child)
    _finish(child)
    after = cpu.snapshot({})
    assert before[os.getpid()].reaped == after[os.getpid()].reaped == 0.0
    assert _children_share(before, after) == pytest.approx(0.0, abs=1e-9)
