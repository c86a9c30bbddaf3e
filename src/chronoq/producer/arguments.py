"""The checks of a Producer call's arguments that are the producer's own: iterables of items,
a caller's connection, and the items of a bulk enqueue (each validated as ``enqueue`` would)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from chronoq._store.connection import check_writable, is_connection
from chronoq.errors import InvalidJobError, wrong_type
from chronoq.schemas.job import JobSpec, prepare_spec, revalidated


def listed(items: object, field: str, expected: str) -> list[Any]:
    """The items of an iterable argument; a string or a mapping is one value, not items."""
    if isinstance(items, (str, bytes, Mapping)) or not isinstance(items, Iterable):
        raise wrong_type(field, expected, items)
    return list(items)


def check_connection(connection: object) -> None:
    """A caller's ``connection=``: an asyncpg connection, and not one to a standby."""
    if connection is None:
        return
    if not is_connection(connection):
        raise wrong_type("connection", "an asyncpg connection", connection)
    check_writable(connection)


def prepare_item(index: int, item: JobSpec | Mapping[str, Any]) -> tuple[JobSpec, bytes]:
    """An item of a bulk enqueue, validated, with its payload encoded. A JobSpec is checked
    again: one changed after it was built must not pass unchecked."""
    try:
        if type(item) is not dict and isinstance(item, JobSpec):
            return revalidated(item)
        if type(item) is not dict and not isinstance(item, Mapping):
            raise wrong_type("job", "a JobSpec or a mapping", item)
        return prepare_spec(**item)
    except InvalidJobError as exc:
        raise InvalidJobError(exc.field, f"{exc.message} (item {index} of the batch)") from None
    except TypeError as exc:  # a mapping whose keys are not argument names
        raise InvalidJobError("job", f"not a set of enqueue arguments (item {index} of the batch)") from exc
