"""Encoding job payloads to JSON, strictly.

orjson alone is not strict enough for a durable queue: it writes NaN as ``null`` (silently
changing the payload) and Postgres ``jsonb`` rejects ``\\u0000``. A payload is checked once,
here, before anything is stored, so a bad one fails with a message naming where it is bad.
"""

from __future__ import annotations

import math
from typing import Any

import orjson
from pydantic import BaseModel

from chronoq.errors import InvalidJobError
from chronoq.schemas.rules import short

#: Largest encoded payload accepted, in bytes. Big blobs belong in object storage, with the
#: job carrying a reference; RabbitMQ and the wheel both slow down with large messages.
MAX_PAYLOAD_BYTES = 256 * 1024
_MAX_DEPTH = 64
_INT_RANGE = (-(2**63), 2**64 - 1)
#: Largest float magnitude stored as given. Postgres keeps JSON numbers as decimals: a float
#: beyond 2**53 (an integer-valued one, written with an exponent) reads back as the integer
#: of its shortest decimal form, another number than the one sent.
_FLOAT_LIMIT = float(2**53)


def encode_payload(payload: Any, *, field: str = "payload") -> bytes:
    """Return the payload as compact JSON bytes or raise InvalidJobError naming the problem."""
    if not _plain(payload, 0):
        if isinstance(payload, BaseModel):
            payload = payload.model_dump(mode="json")
        _check(payload, field, 0)  # raises, naming where; or accepts subclasses of JSON types
    try:
        encoded = orjson.dumps(payload)
    except (TypeError, orjson.JSONEncodeError) as exc:  # pragma: no cover - _check is stricter
        raise InvalidJobError(field, f"not JSON-serialisable: {exc}") from None
    if len(encoded) > MAX_PAYLOAD_BYTES:
        raise InvalidJobError(
            field, f"{len(encoded)} bytes encoded, over the limit of {MAX_PAYLOAD_BYTES} bytes"
        )
    return encoded


def _plain(value: Any, depth: int) -> bool:
    """True if ``value`` passes ``_check``, decided by exact types only and without building
    the error locations (the common case costs a fraction of ``_check``). False means: ask
    ``_check``, which raises or accepts (a subclass of a JSON type, say)."""
    kind = type(value)
    if kind is str:
        return "\x00" not in value and (value.isascii() or _utf8(value))
    if value is None or kind is bool:
        return True
    if kind is int:
        integer: int = value
        return _INT_RANGE[0] <= integer <= _INT_RANGE[1]
    if kind is float:
        number: float = value
        return -_FLOAT_LIMIT <= number <= _FLOAT_LIMIT  # False for NaN too
    if depth >= _MAX_DEPTH:
        return False
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str or "\x00" in key or not (key.isascii() or _utf8(key)):
                return False
            if not _plain(item, depth + 1):
                return False
        return True
    if kind is list or kind is tuple:
        return all(_plain(item, depth + 1) for item in value)
    return False


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check(value: Any, where: str, depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise InvalidJobError(where, f"nested deeper than {_MAX_DEPTH} levels")
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        if not _INT_RANGE[0] <= value <= _INT_RANGE[1]:
            raise InvalidJobError(where, "integer outside the 64-bit range")
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidJobError(where, f"{value} is not valid JSON (NaN and infinity are not)")
        if not -_FLOAT_LIMIT <= value <= _FLOAT_LIMIT:
            raise InvalidJobError(where, "a float beyond ±2**53 would be stored as another number: "
                                         "send it as an integer or a string")
        return
    if isinstance(value, str):
        _check_text(value, where)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidJobError(where, f"object key {short(key)} is not a string")
            _check_text(key, f"{where} key")
            _check(item, f"{where}.{_path_part(key)}", depth + 1)
        return
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check(item, f"{where}[{index}]", depth + 1)
        return
    raise InvalidJobError(where, f"{type(value).__name__} is not a JSON type")


def _path_part(key: str) -> str:
    """A key as part of the location an error names: short, one line (a key may be anything)."""
    part = key if len(key) <= 40 and key.isprintable() else short(key)
    return part


def _check_text(text: str, where: str) -> None:
    if "\x00" in text:
        raise InvalidJobError(where, "contains NUL (\\u0000), which Postgres jsonb cannot store")
    if not _utf8(text):
        raise InvalidJobError(where, "contains a lone surrogate, not valid UTF-8")
