"""Failpoints: named places where a test can make a process die or fail on purpose.

Enabled only through ``CHRONOQ_FAILPOINTS`` (for example ``timer.after_confirm=kill``), read
once at import. With the variable unset a failpoint is a dictionary lookup that finds nothing.
Actions: ``kill`` (SIGKILL this process: no cleanup, no flush, like a machine dying) and
``raise`` (raise FailpointError).
"""

from __future__ import annotations

import os
import signal

from chronoq.errors import ChronoqError

ENV_VAR = "CHRONOQ_FAILPOINTS"


class FailpointError(ChronoqError):
    """Raised by a failpoint set to ``raise``."""


def _parse(spec: str) -> dict[str, str]:
    points: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, action = item.partition("=")
        points[name.strip()] = action.strip() or "kill"
    return points


_ACTIVE = _parse(os.environ.get(ENV_VAR, ""))


def failpoint(name: str) -> None:
    action = _ACTIVE.get(name)
    if action is None:
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    raise FailpointError(f"failpoint {name} triggered")
