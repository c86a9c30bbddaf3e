"""How the command line reports a failure: one printable line on stderr, of bounded length, that
repeats at most a short prefix of any argument or setting, and the exit code for it. Never a
traceback: the one for an unexpected error is logged at DEBUG."""

from __future__ import annotations

import logging
import socket
import sys
from collections.abc import Iterable
from typing import NoReturn

from chronoq._store.connection import translated
from chronoq.errors import (
    ChronoqError,
    ConfigError,
    InvalidJobError,
    JobNotFoundError,
    JobStateError,
    ServiceUnavailableError,
    UnknownQueueError,
)
from chronoq.schemas.rules import ECHO_LENGTH

log = logging.getLogger("chronoq.cli")

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_UNAVAILABLE = 0, 1, 2, 3
#: Ctrl-C, as a shell reports a process ended by SIGINT.
EXIT_INTERRUPTED = 130
#: Longest error line printed.
MESSAGE_LENGTH = 280


def reported(exc: Exception) -> tuple[int, str]:
    """The exit code and the line that report ``exc``."""
    if _raised_by(exc, "asyncpg"):  # a path that reached Postgres without the store's translation
        exc = translated(exc)
    elif isinstance(exc, (ValueError, OverflowError)) and not isinstance(exc, ChronoqError) and (
        setting := _refused_setting(exc)
    ):
        return EXIT_USAGE, f"error: invalid setting: CHRONOQ_{setting.upper()}: {type(exc).__name__}: {exc}"
    if isinstance(exc, (ConfigError, InvalidJobError, JobNotFoundError, JobStateError, UnknownQueueError)):
        return EXIT_USAGE, f"error: {exc}"
    if isinstance(exc, ServiceUnavailableError):
        return EXIT_UNAVAILABLE, f"unavailable: {exc}"
    if isinstance(exc, ChronoqError):
        return EXIT_FAILURE, f"error: {exc}"
    if _raised_by(exc, "aio_pika", "aiormq", "pamqp"):
        # Connection errors are translated by the broker package; what is left is a refusal,
        # most often of the virtual host or of the user's permissions.
        return EXIT_FAILURE, f"error: RabbitMQ refused: {type(exc).__name__} (check the amqp_url: user, password, virtual host)"
    if isinstance(exc, (ConnectionError, socket.gaierror, TimeoutError)):
        return EXIT_UNAVAILABLE, f"unavailable: {type(exc).__name__}: {exc}"
    if isinstance(exc, OSError):
        return EXIT_FAILURE, f"error: {type(exc).__name__}: {exc}"
    log.debug("internal error", exc_info=exc, extra={"action": "cli_internal_error"})
    return EXIT_FAILURE, f"error: internal error: {type(exc).__name__} (rerun with --log-level DEBUG for the traceback)"


def _refused_setting(exc: BaseException) -> str | None:
    """``database_url`` or ``amqp_url`` if ``exc`` (a bad value) was raised while the driver for
    it was running: the driver found the URL unusable (a port out of range, say)."""
    tb = exc.__traceback__
    while tb is not None:
        module = tb.tb_frame.f_globals.get("__name__", "").partition(".")[0]
        if module == "asyncpg":
            return "database_url"
        if module in ("aio_pika", "aiormq", "yarl"):
            return "amqp_url"
        tb = tb.tb_next
    return None


def _raised_by(exc: BaseException, *packages: str) -> bool:
    """True if ``exc`` is an exception of one of these packages. Drivers are recognised by name:
    the CLI does not import aio-pika (only ``_broker`` does)."""
    return type(exc).__module__.partition(".")[0] in packages


def exit_with(code: int, message: str, inputs: Iterable[str]) -> NoReturn:
    sys.stderr.write(bounded(message, inputs) + "\n")
    sys.exit(code)


def bounded(message: str, inputs: Iterable[str]) -> str:
    """``message`` as one _printable line of at most MESSAGE_LENGTH characters that repeats no
    more than ECHO_LENGTH consecutive characters of any of ``inputs``, whatever produced it:
    argparse quotes a refused choice in full, Postgres names the database that is missing."""
    line = _printable(message)[: 4 * MESSAGE_LENGTH]
    sources = [_printable(text) for text in inputs if len(text) > ECHO_LENGTH]

    def echoed(start: int) -> bool:
        window = line[start : start + ECHO_LENGTH + 1]
        return len(window) > ECHO_LENGTH and any(window in source for source in sources)

    kept, start, i = [], 0, 0
    while i + ECHO_LENGTH < len(line):
        if not echoed(i):
            i += 1
            continue
        end = i + 1
        while echoed(end):
            end += 1
        kept.append(line[start : i + ECHO_LENGTH] + "...")
        start = i = end + ECHO_LENGTH
    kept.append(line[start:])
    text = "".join(kept)
    return text if len(text) <= MESSAGE_LENGTH else text[: MESSAGE_LENGTH - 3] + "..."


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else " " for c in text)
