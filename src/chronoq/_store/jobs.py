"""Statements on jobs: enqueue (single and bulk), cancel, and whether a job exists."""

from __future__ import annotations

import asyncio
import itertools
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson

from chronoq._store.connection import Connection, one_row
from chronoq._store.sql import query
from chronoq._store.wheel import fire_time_suffix
from chronoq.errors import InvalidJobError
from chronoq.schemas.job import JobSpec, RetryPolicy
from chronoq.schemas.rules import short


@dataclass(frozen=True)
class Enqueued:
    job_id: int
    created: bool  # False: a job with the same (queue, key) already existed


_MILLISECOND = timedelta(milliseconds=1)


def milliseconds(delta: timedelta) -> int:
    """Whole milliseconds, computed exactly (``total_seconds() * 1000`` is a float: 1.001 s
    would be 1000.9999999999999 ms)."""
    return delta // _MILLISECOND


def _trace_text(trace: dict[str, str] | None) -> str | None:
    return orjson.dumps(trace).decode() if trace else None


def _row(spec: JobSpec, payload: bytes) -> tuple[object, ...]:
    retry = spec.retry
    return (
        spec.queue,
        spec.key,
        payload.decode(),  # orjson's output is UTF-8
        retry.max_attempts,
        milliseconds(retry.backoff_base),
        milliseconds(retry.backoff_cap),
        retry.jitter,
        milliseconds(spec.timeout),
        spec.run_at,
        # No time given means now, by the database's clock; a debounced job is due a debounce
        # period from now.
        (spec.delay or spec.debounce or timedelta(0)) if spec.run_at is None else None,
        spec.misfire,
        milliseconds(spec.misfire_grace),
        spec.waits_at_most,
        # The runs of a job that is replaced take turns: a trailing run waits for the one before.
        "skip" if spec.replaces else "allow",
    )


async def enqueue(conn: Connection, spec: JobSpec, payload: bytes, trace: dict[str, str] | None = None) -> Enqueued:
    args = (*_row(spec, payload), _trace_text(trace))
    if spec.replaces:
        async with conn.transaction():  # a savepoint in a caller's transaction
            return await _enqueue_replacing(conn, spec, args)
    # A concurrent enqueue of the same key can commit between our conflict check and our
    # read of the existing row; one more round always sees it.
    for _ in range(3):
        row = await conn.fetchrow(query("enqueue"), *args)
        if row is not None:
            return Enqueued(row["id"], row["created"])
    raise RuntimeError(f"enqueue of key {short(spec.key)} found neither a new nor an existing job")


async def _enqueue_replacing(conn: Connection, spec: JobSpec, args: tuple[object, ...]) -> Enqueued:
    """A new job, or the stored job of the key replaced (``replace_occurrence``). A job pruned
    between the two steps is enqueued afresh in the next round."""
    for _ in range(3):
        row = await conn.fetchrow(query("enqueue"), *args)
        if row is None:
            continue  # the concurrent enqueue that won the key is not visible yet
        if row["created"]:
            return Enqueued(row["id"], True)
        if await replace(conn, row["id"], spec, args):
            return Enqueued(row["id"], False)
    raise RuntimeError(f"enqueue of key {short(spec.key)} found neither a new nor an existing job")


async def replace(conn: Connection, job_id: int, spec: JobSpec, args: Sequence[object]) -> bool:
    """Replace the stored one-shot job ``job_id`` of ``spec``'s key by ``spec`` (``args``: its
    row and trace, as ``enqueue`` takes them), in the caller's transaction. False if the job is
    gone. A cancelled job stays as it is; a recurring job's key is refused."""
    job = await conn.fetchrow(query("lock_replaced_job"), job_id)
    if job is None:
        return False
    if job["kind"] != "once":
        raise InvalidJobError("key", f"{short(spec.key)} names a recurring job on this queue; it cannot be replaced")
    if job["state"] != "cancelled":
        await conn.fetchrow(query("replace_occurrence"), job_id, *args)
    return True


#: Columns a bulk enqueue COPYs; the rest take their defaults (kind 'once', no key, now()).
_JOB_COLUMNS = ("id", "queue", "payload", "max_attempts", "backoff_base_ms", "backoff_cap_ms", "jitter", "timeout_ms",
                "misfire", "misfire_grace_ms", "trace")
_WHEEL_COLUMNS = ("occurrence_key", "job_id", "queue", "fire_at", "run_at", "due_at", "head")
#: Jobs per pair of COPYs (see enqueue_many). Each COPY costs Postgres a fixed amount besides
#: its rows: about 1.2 us per job with parts of 1,000, 0.3 with parts of 5,000. But the parts
#: queued when the last one is encoded are Postgres's alone to write, the tail of every call.
BULK_PART = 2000
#: The first part is small: Postgres has nothing to do until it is encoded.
FIRST_PART = 250
#: Parts encoded ahead of the COPYs: enough that Postgres never waits for the next one, few
#: enough that a bulk enqueue's memory stays a few parts whatever its size.
_PARTS_AHEAD = 2
#: Jobs validated between two looks at the event loop. Each look lets the writer send a COPY's
#: data or start the next COPY; Postgres idles for as long as this process does not look.
_SLICE = 20
#: COPY's binary format: signature, flags, header extension length; a tuple count of -1 ends it.
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
_COPY_TRAILER = b"\xff\xff"
_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_INT8 = struct.Struct(">iq")  # a field's length (8), then the value
_JOB_ROW_START = struct.Struct(">hiq")  # a tuple's field count, then its id field
_JOB_OPTIONS = struct.Struct(">iiiqiqifiq")  # max_attempts .. timeout_ms, each with its length
_NULL = b"\xff\xff\xff\xff"


def _text(value: bytes) -> bytes:
    return len(value).to_bytes(4, "big") + value


@dataclass
class _Part:
    """Up to ``BULK_PART`` keyless jobs of a bulk enqueue: their ``jobs`` COPY data, and what their ``wheel`` rows
    need: id, queue as COPY text, and the due time (microseconds since 2000) or the delay that
    gives it."""

    job_rows: bytearray
    occurrences: list[tuple[int, bytes, int | timedelta]]


class _BulkCopy:
    """A bulk enqueue's keyless jobs as COPY data for ``jobs`` and ``wheel``, a part at a time.

    A keyless job conflicts with nothing, so it needs none of INSERT's per-row work: its rows
    are encoded here in COPY's binary format, which involves none of the connection's codecs (a
    caller's own connection works as it is). Jobs with a key are set aside for the INSERT ...
    ON CONFLICT statement (``_enqueue_keyed``)."""

    def __init__(self, jobs: Iterable[tuple[JobSpec, bytes]], ids: Sequence[int], trace: bytes | None) -> None:
        self._jobs = enumerate(jobs)
        self._ids = ids
        self._trace = _text(b"\x01" + trace) if trace is not None else _NULL
        self.keyed: list[tuple[int, JobSpec, bytes]] = []
        self.queues: list[str] = []
        self.exhausted = False
        #: Due times of delays, by the database's clock: filled by the writer (``due_times``).
        self.delayed: dict[timedelta, int] = {}
        self._queue_fields: dict[str, bytes] = {}
        self._options: dict[tuple[object, ...], tuple[RetryPolicy, bytes]] = {}

    async def next_part(self, size: int) -> _Part | None:
        """Validate and encode the next ``size`` jobs; None if none of them is keyless.
        Validation happens here, as the input is iterated: a bad job raises from here, before
        any of its part is sent."""
        occurrences: list[tuple[int, bytes, int | timedelta]] = []
        data = bytearray(_COPY_HEADER)
        for start in range(0, size, _SLICE):
            await asyncio.sleep(0)  # let the writer feed Postgres meanwhile
            for index, (spec, payload) in itertools.islice(self._jobs, min(_SLICE, size - start)):
                self.queues.append(spec.queue)
                if spec.key is not None:
                    self.keyed.append((index, spec, payload))
                    continue
                job_id = self._ids[index]
                queue = self._queue_fields.get(spec.queue)
                if queue is None:
                    queue = self._queue_fields[spec.queue] = _text(spec.queue.encode())
                data += _JOB_ROW_START.pack(len(_JOB_COLUMNS), 8, job_id)
                data += queue
                data += (len(payload) + 1).to_bytes(4, "big")
                data += b"\x01"  # jsonb's binary format: a version byte, then the JSON text
                data += payload
                data += self._job_options(spec)
                if spec.run_at is not None:
                    occurrences.append((job_id, queue, (spec.run_at - _PG_EPOCH) // _MICROSECOND))
                else:
                    occurrences.append((job_id, queue, spec.delay or timedelta(0)))
            if len(self.queues) == len(self._ids):
                self.exhausted = True
                break
        if not occurrences:
            return None
        data += _COPY_TRAILER
        return _Part(data, occurrences)

    def _job_options(self, spec: JobSpec) -> bytes:
        retry = spec.retry
        # By the policy's identity: hashing a pydantic model per job costs more than encoding.
        # The entry holds the policy, so its id cannot be reused by another one meanwhile.
        options = (id(retry), spec.timeout, spec.misfire, spec.misfire_grace)
        cached = self._options.get(options)
        if cached is None:
            cached = self._options[options] = (retry, b"".join((
                _JOB_OPTIONS.pack(4, retry.max_attempts, 8, milliseconds(retry.backoff_base),
                                  8, milliseconds(retry.backoff_cap), 4, retry.jitter, 8, milliseconds(spec.timeout)),
                _text(spec.misfire.encode()),
                _INT8.pack(8, milliseconds(spec.misfire_grace)),
                self._trace,
            )))
        return cached[1]

    def new_delays(self, part: _Part) -> list[timedelta]:
        return list({due for _, _, due in part.occurrences if isinstance(due, timedelta) and due not in self.delayed})

    def due_times(self, delays: Sequence[timedelta], times: Sequence[datetime]) -> None:
        for delay, at in zip(delays, times, strict=True):
            self.delayed[delay] = (at - _PG_EPOCH) // _MICROSECOND

    def wheel_rows(self, part: _Part) -> bytes:
        """The part's first occurrences as ``wheel`` COPY data, with their occurrence keys
        (``wheel.occurrence_key``) built here, one suffix per fire time."""
        times: dict[int, tuple[str, bytes]] = {}
        rows = [_COPY_HEADER]
        for job_id, queue, due in part.occurrences:
            at = self.delayed[due] if isinstance(due, timedelta) else due
            encoded = times.get(at)
            if encoded is None:
                when = _PG_EPOCH + at * _MICROSECOND
                stamp = _INT8.pack(8, at)
                encoded = times[at] = (fire_time_suffix(when), stamp * 3 + b"\x00\x00\x00\x01\x01")
            key = f"{job_id}{encoded[0]}".encode()
            rows.append(b"\x00\x07" + _text(key) + _INT8.pack(8, job_id) + queue + encoded[1])
        rows.append(_COPY_TRAILER)
        return b"".join(rows)


@dataclass(frozen=True)
class BulkEnqueued:
    ids: list[int]  # in input order
    queues: list[str]  # of each job, in input order
    existing: list[int]  # positions whose (queue, key) was already stored: nothing new there


async def enqueue_many(
    conn: Connection, jobs: Iterable[tuple[JobSpec, bytes]], count: int, trace: dict[str, str] | None = None
) -> BulkEnqueued:
    """Store ``count`` one-shot jobs, validated as ``jobs`` is iterated, all or none: in a
    transaction of its own, or a savepoint inside the connection's current transaction, so a
    bad job leaves a caller's transaction usable.

    Keyless jobs go in by COPY, a part at a time, in a pipeline: a writer task sends each
    part's ``jobs`` then ``wheel`` rows while this task validates and encodes the parts after
    it, so that Postgres and this process work at once, on the two CPUs."""
    async with conn.transaction():
        ids = await conn.fetchval(query("allocate_job_ids"), count)
        batch = _BulkCopy(jobs, ids, orjson.dumps(trace) if trace else None)
        parts: asyncio.Queue[_Part | None] = asyncio.Queue(_PARTS_AHEAD)
        writer = asyncio.ensure_future(_write_parts(conn, batch, parts))
        try:
            size = FIRST_PART
            while not batch.exhausted and not writer.done():
                part = await batch.next_part(size)
                size = BULK_PART
                if part is not None:
                    await _put(parts, part, writer)
            await _put(parts, None, writer)
            await writer
        finally:
            if not writer.done():  # a bad job (or a cancel): the COPY running ends, then roll back
                while not parts.empty():
                    parts.get_nowait()  # parts not yet sent are never sent
                parts.put_nowait(None)
                await asyncio.gather(writer, return_exceptions=True)
        existing: list[int] = []
        if batch.keyed:
            indexes = [index for index, _, _ in batch.keyed]
            for index, stored in zip(indexes, await _enqueue_keyed(conn, batch.keyed, ids, trace), strict=True):
                if not stored.created:
                    ids[index] = stored.job_id
                    existing.append(index)
            await _replace_existing(conn, batch.keyed, ids, set(existing), trace)
    return BulkEnqueued(ids, batch.queues, existing)


async def _replace_existing(
    conn: Connection, keyed: Sequence[tuple[int, JobSpec, bytes]], ids: Sequence[int], existing: set[int],
    trace: dict[str, str] | None,
) -> None:
    """The ``replace`` items of a bulk enqueue whose key was stored (before this call, or by an
    earlier item of it), each replacing its job in turn: in key order, as every writer of many
    job rows locks them (no deadlocks), and in input order within a key (the last one wins)."""
    replacing = sorted(
        ((spec.queue, spec.key or "", index), spec, payload)
        for index, spec, payload in keyed if index in existing and spec.replaces
    )
    for (_, _, index), spec, payload in replacing:
        try:
            if not await replace(conn, ids[index], spec, (*_row(spec, payload), _trace_text(trace))):
                raise RuntimeError(f"job {ids[index]} of key {short(spec.key)} vanished during the enqueue")
        except InvalidJobError as exc:
            raise InvalidJobError(exc.field, f"{exc.message} (item {index} of the batch)") from None


async def _write_parts(conn: Connection, batch: _BulkCopy, parts: asyncio.Queue[_Part | None]) -> None:
    """The bulk enqueue's writer: each part's ``jobs`` COPY, then its ``wheel`` COPY, until None."""
    while (part := await parts.get()) is not None:
        if delays := batch.new_delays(part):
            batch.due_times(delays, await conn.fetchval(query("now_plus"), delays))
        # A memoryview: bytes would be taken for a file name.
        copying = asyncio.ensure_future(conn.copy_to_table(
            "jobs", schema_name="chronoq", columns=_JOB_COLUMNS, format="binary",
            source=memoryview(part.job_rows),  # type: ignore[arg-type]  # asyncpg takes any buffer; its stubs omit it
        ))
        await asyncio.sleep(0)  # the COPY starts; its wheel rows are encoded meanwhile
        try:
            wheel_rows = batch.wheel_rows(part)
        finally:
            await copying
        await conn.copy_to_table(
            "wheel", schema_name="chronoq", columns=_WHEEL_COLUMNS, format="binary",
            source=memoryview(wheel_rows),  # type: ignore[arg-type]  # as above
        )


async def _put(parts: asyncio.Queue[_Part | None], part: _Part | None, writer: asyncio.Future[None]) -> None:
    """Hand a part (or the end, None) to the writer, unless the writer has stopped (failed)."""
    if writer.done():
        return
    put = asyncio.ensure_future(parts.put(part))
    try:
        await asyncio.wait((put, writer), return_when=asyncio.FIRST_COMPLETED)
    finally:
        put.cancel()  # the writer stopped first, or we are cancelled: the part is not handed on


async def _enqueue_keyed(
    conn: Connection, keyed: Sequence[tuple[int, JobSpec, bytes]], ids: Sequence[int],
    trace: dict[str, str] | None,
) -> list[Enqueued]:
    """The jobs with a key, in one INSERT ... ON CONFLICT DO NOTHING; the ids of those whose key
    already existed are looked up afterwards."""
    own_ids = [ids[i] for i, _, _ in keyed]
    columns = list(zip(*(_row(spec, payload) for _, spec, payload in keyed), strict=True))
    inserted = {r["id"] for r in await conn.fetch(query("enqueue_keyed"), own_ids, *columns, _trace_text(trace))}
    result = [Enqueued(job_id, True) for job_id in own_ids]
    missing = [n for n, job_id in enumerate(own_ids) if job_id not in inserted]
    if missing:
        rows = await conn.fetch(
            query("existing_ids"), [keyed[n][1].queue for n in missing], [keyed[n][1].key for n in missing]
        )
        by_position = {r["ord"]: r["id"] for r in rows}
        for ordinal, n in enumerate(missing, start=1):
            result[n] = Enqueued(by_position[ordinal], False)
    return result


async def cancel(conn: Connection, job_id: int) -> tuple[bool, int]:
    """Returns (whether the job was active and is now cancelled, occurrences cancelled)."""
    row = await one_row(conn, query("cancel"), job_id)
    return row["cancelled"] > 0, row["occurrences"]


async def job_exists(conn: Connection, job_id: int) -> bool:
    exists: bool = await conn.fetchval(query("job_exists"), job_id)
    return exists
