"""The ``chronoq`` command line: one module per command group (``services``, ``submit``,
``status``, ``jobs``, ``dlq``, ``bench``, ``demo``), each declaring its commands with the flags
they use (``command.py``, ``settings.py``); ``render.py`` prints, ``errors.py`` reports a
failure on one line, ``main.py`` ties them together."""

from chronoq.cli.main import main
from chronoq.cli.parser import build_parser
from chronoq.cli.services import load_worker

__all__ = ["build_parser", "load_worker", "main"]
