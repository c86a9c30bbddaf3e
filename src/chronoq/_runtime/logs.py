"""Structured logging: one line per event with a stable ``action`` and ids, never payloads."""

from __future__ import annotations

import logging
import sys

import orjson

_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def _not_a_failed_connect(record: logging.LogRecord) -> bool:
    """aiormq logs every failed connection attempt at ERROR and then raises the same error to
    its caller, which reports it: chronoq's connect as one line (ServiceUnavailableError), a
    robust connection's retry as aio-pika's warning. The record adds nothing but a second line."""
    return not (isinstance(record.msg, str) and record.msg.startswith("error when creating transport"))


def configure(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aio-pika and aiormq log reconnect chatter at INFO; keep their warnings.
    for noisy in ("aio_pika", "aiormq"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("aiormq.connection").addFilter(_not_a_failed_connect)
