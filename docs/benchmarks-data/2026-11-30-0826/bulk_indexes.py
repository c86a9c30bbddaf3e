"""Server time of the bulk enqueue's two COPYs for 10k jobs (pre-encoded), with variants undone by ROLLBACK."""
import asyncio, sys, time, statistics
from datetime import timedelta
import asyncpg, uvloop
from chronoq._store import jobs as J
from chronoq.producer.client import _prepare
VARIANTS = {
    "as is": [],
    "no jobs_once_created": ["DROP INDEX chronoq.jobs_once_created"],
    "no wheel_job": ["DROP INDEX chronoq.wheel_job"],
    "no wheel_one_head": ["DROP INDEX chronoq.wheel_one_head"],
    "no wheel_due": ["DROP INDEX chronoq.wheel_due"],
    "no wheel_pkey": ["ALTER TABLE chronoq.wheel DROP CONSTRAINT wheel_pkey"],
    "no jobs_pkey": ["ALTER TABLE chronoq.results DROP CONSTRAINT results_job_id_fkey", "ALTER TABLE chronoq.attempts DROP CONSTRAINT attempts_job_id_fkey", "ALTER TABLE chronoq.jobs DROP CONSTRAINT jobs_pkey"],
    "no insert trigger": ["DROP TRIGGER wheel_notify_insert ON chronoq.wheel"],
}
async def main():
    c = await asyncpg.connect(sys.argv[1])
    items = [{"queue": "exp.bulk", "payload": {"mode": "noop"}, "delay": timedelta(days=365)}] * 10000
    res = {k: [] for k in VARIANTS}
    for rnd in range(int(sys.argv[2]) if len(sys.argv) > 2 else 5):
        for name, ddl in VARIANTS.items():
            tr = c.transaction(); await tr.start()
            for d in ddl: await c.execute(d)
            ids = await c.fetchval(J.query("allocate_job_ids"), 10000)
            b = J._BulkCopy((_prepare(i, x) for i, x in enumerate(items)), ids, None)
            parts = []
            while not b.exhausted:
                parts.append(await b.next_part())
            b.due_times([timedelta(days=365)], [await c.fetchval("select now() + interval '365 days'")])
            wheel = [b.wheel_rows(p) for p in parts]
            tj = tw = 0
            for p, w in zip(parts, wheel):
                t = time.perf_counter()
                await c.copy_to_table("jobs", schema_name="chronoq", columns=J._JOB_COLUMNS, format="binary", source=memoryview(p.job_rows))
                t2 = time.perf_counter()
                await c.copy_to_table("wheel", schema_name="chronoq", columns=J._WHEEL_COLUMNS, format="binary", source=memoryview(w))
                tj += t2 - t; tw += time.perf_counter() - t2
            await tr.rollback()
            res[name].append((tj, tw))
    for name, v in res.items():
        j = statistics.median(x[0] for x in v) / 10000 * 1e6; w = statistics.median(x[1] for x in v) / 10000 * 1e6
        print(f"{name:22s} jobs {j:.2f}  wheel {w:.2f}  sum {j+w:.2f} us/job")
uvloop.run(main())
