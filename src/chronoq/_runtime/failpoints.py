"""Failpoints: named places where a test can make a process die or fail on purpose.

Enabled only through ``CHRONOQ_FAILPOINTS`` (for example ``timer.after_confirm=kill``), read
once at import. With the variable unset a failpoint is a dictionary lookup that finds nothing.
Actions: ``kill`` (SIGKILL this process: no cleanup, no flush, like a machine dying) and
``raise`` (raise FailpointError). ``kill@0.05`` fires on 5 % of the passes only, so a long
fault-injection run can keep a failpoint armed in processes it restarts.

The places: ``timer.after_claim``, ``timer.before_confirm`` (published, confirms not yet
awaited), ``timer.after_confirm``, ``timer.before_commit``; ``consumer.before_transaction``,
``consumer.before_commit`` (the handlers' writes done), ``consumer.after_commit`` (before the ack).
"""

from __future__ import annotations

import os
import random
import signal

from chronoq.errors import ChronoqError

ENV_VAR = "CHRONOQ_FAILPOINTS"


class FailpointError(ChronoqError):
    """Raised by a failpoint set to ``raise``."""


def _parse(spec: str) -> dict[str, tuple[str, float]]:
    points: dict[str, tuple[str, float]] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, setting = item.partition("=")
        action, _, probability = setting.strip().partition("@")
        if (action or "kill") not in ("kill", "raise"):
            raise ValueError(f"{ENV_VAR}: unknown failpoint action {action!r} for {name.strip()!r}")
        points[name.strip()] = (action or "kill", float(probability) if probability else 1.0)
    return points


_ACTIVE = _parse(os.environ.get(ENV_VAR, ""))


def armed(name: str) -> bool:
    return name in _ACTIVE


def failpoint(name: str) -> None:
    point = _ACTIVE.get(name)
    if point is None:
        return
    action, probability = point
    if probability < 1.0 and random.random() >= probability:
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    raise FailpointError(f"failpoint {name} triggered")
