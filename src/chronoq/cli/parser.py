"""The ``chronoq`` parser, assembled from the command groups. Command and flag names are a
contract other tools drive.

Every value is checked while the arguments are parsed, by the rules the Python API and AMQP
submissions obey (``schemas/rules.py``).
"""

from __future__ import annotations

import argparse
from importlib import metadata
from typing import NoReturn

from chronoq.cli import bench, demo, dlq, jobs, queues, services, status, submit
from chronoq.cli.errors import EXIT_USAGE, MESSAGE_LENGTH

DESCRIPTION = "The chronoq command line: run the services, submit and inspect jobs, measure a deployment."
#: Each adds its commands to the parser, in the order ``chronoq --help`` lists them.
GROUPS = (services, submit, status, queues, jobs, dlq, bench, demo)


class Refused(SystemExit):
    """A command line the parser refused: exit 2, with a message ``main`` prints on one line. A
    SystemExit, as argparse's own refusal is, for callers of ``build_parser`` other than main."""

    def __init__(self, message: str) -> None:
        super().__init__(EXIT_USAGE)
        self.message = message


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # argparse would print the whole usage and quote a value it refuses in full; main()
        # prints one bounded line instead.
        raise Refused(f"{self.prog}: error: {message[:MESSAGE_LENGTH]} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="chronoq", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"chronoq {metadata.version('chronoq')}")
    actions = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.add_commands(actions)
    return parser
