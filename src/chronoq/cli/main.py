"""``chronoq``'s entry point: parse, load the settings, run the command.

Whatever goes wrong, a refused argument, a database or broker that is unreachable, missing or
misconfigured, ends the command with one line on stderr and a non-zero exit code, never a
traceback (``errors.py``).
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
from collections.abc import Sequence

from chronoq._runtime.config import Settings
from chronoq._runtime.logs import configure as configure_logging
from chronoq.cli.errors import EXIT_INTERRUPTED, EXIT_USAGE, exit_with, reported
from chronoq.cli.parser import Refused, build_parser
from chronoq.cli.settings import load_settings


def main(argv: Sequence[str] | None = None) -> None:
    arguments = list(sys.argv[1:] if argv is None else argv)
    # What an error line may quote: the arguments and the settings from the environment.
    inputs = [*arguments, *(value for name, value in os.environ.items() if name.startswith("CHRONOQ_"))]
    try:
        args = build_parser().parse_args(arguments)
    except Refused as exc:
        exit_with(EXIT_USAGE, exc.message, inputs)
    configure_logging(getattr(args, "log_level", "INFO"))
    logging_off = logging.root.manager.disable
    try:
        code = dispatch(args, load_settings(args))
    except KeyboardInterrupt:
        failure = EXIT_INTERRUPTED, "interrupted"
        logging.disable(logging.CRITICAL)
    except Exception as exc:  # every failure ends as one line, never a traceback
        failure = reported(exc)
        logging.disable(logging.CRITICAL)
    else:
        sys.exit(code)
    # The line is the whole report. What the failed command left (a future of a cancelled
    # connection that nobody retrieved) is collected while logging is off: asyncio would report
    # it as it goes, a second line that only repeats the failure.
    gc.collect()
    logging.disable(logging_off)
    exit_with(*failure, inputs)


def dispatch(args: argparse.Namespace, settings: Settings) -> int:
    """Run the command the arguments name: each command's parser set its ``run``."""
    code: int = args.run(args, settings)
    return code
