"""The occurrence key has one definition, ``chronoq.occurrence_key`` in SQL; its Python form
(``_store.wheel.occurrence_key``, for rows written by COPY and for ``chronoq.testing``) must give
the same text for every time Postgres stores."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from chronoq._store.wheel import occurrence_key

TIMES = [
    datetime(2026, 11, 29, 9, 0, tzinfo=UTC),
    datetime(2026, 11, 29, 9, 0, 0, 1, tzinfo=UTC),  # one microsecond
    datetime(2026, 3, 29, 2, 30, 0, 999_999, tzinfo=ZoneInfo("Europe/Berlin")),  # a DST gap, local time
    datetime(2026, 10, 25, 2, 30, fold=1, tzinfo=ZoneInfo("Europe/Berlin")),  # the second 02:30
    datetime(2030, 1, 1, 23, 59, 59, tzinfo=timezone(timedelta(hours=-9, minutes=-30))),  # another UTC day
    datetime(1, 1, 2, tzinfo=UTC),
    datetime(9999, 12, 31, 23, 59, 59, 999_998, tzinfo=UTC),  # (the microsecond after is asyncpg's infinity)
]


async def test_the_python_occurrence_key_is_the_databases(db) -> None:
    job_ids = [1, 42, 2**63 - 1]
    for job_id in job_ids:
        for at in TIMES:
            assert occurrence_key(job_id, at) == await db.fetchval("SELECT chronoq.occurrence_key($1, $2)", job_id, at)
