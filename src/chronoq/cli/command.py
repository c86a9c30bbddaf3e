"""How a command is declared and run: its parser, the settings it takes, and the function that
acts on the parsed arguments (``run(args, settings) -> exit code``), chosen by argparse itself."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeAlias, TypeVar

from chronoq._runtime.config import Settings
from chronoq.cli.arguments import one_of
from chronoq.cli.settings import add_settings

_T = TypeVar("_T")
Run = Callable[[argparse.Namespace, Settings], int]
#: What add_subparsers returns: where commands are added.
Actions: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def add_command(
    actions: Actions, name: str, help_text: str, *, settings: tuple[str, ...] = (), run: Run | None = None,
) -> argparse.ArgumentParser:
    """A command (or a group of actions, when ``run`` is None) taking the flags of ``settings``."""
    parser: argparse.ArgumentParser = actions.add_parser(name, help=help_text, description=help_text)
    add_settings(parser, settings)
    parser.add_argument("--log-level", default=argparse.SUPPRESS, help="default INFO",
                        **one_of("log_level", *LOG_LEVELS))
    if run is not None:
        parser.set_defaults(run=run)
    return parser


def add_actions(group: argparse.ArgumentParser, dest: str) -> Actions:
    return group.add_subparsers(dest=dest, required=True, metavar="ACTION")


def run_async(coro: Coroutine[Any, Any, _T], *, fast_loop: bool = False) -> _T:
    """Run a command's coroutine; ``fast_loop``: on uvloop, for the long-running services."""
    if fast_loop:
        try:
            import uvloop
        except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
            return asyncio.run(coro)
        return uvloop.run(coro)
    return asyncio.run(coro)
