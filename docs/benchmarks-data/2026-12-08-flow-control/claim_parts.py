"""Per-execution time of claim_due and of variants without parts of it, alternating, in one
keyed session on a migrated database (chronoq_fca). OLD is the claim before queue controls, read
from a checkout of 8614944 at /work/wt/benchA."""
import asyncio, time, sys
import asyncpg
sys.path.insert(0, "/work/main/src")
from chronoq._store.sql import query
from chronoq._store.connection import PLANNER_SETTINGS
NEW = query("claim_due")
OLD = open("/work/wt/benchA/src/chronoq/_store/queries/wheel.sql").read().split("-- name: claim_due")[1].split("-- name:")[0].strip()
def cut(text, start, end):
    i = text.index(start); j = text.index(end, i)
    return text[:i] + text[j:]
V = {"old": OLD, "new": NEW}
V["no_ctrl_fn"] = NEW.replace("(SELECT CASE WHEN EXISTS (SELECT FROM chronoq.queue_controls) THEN chronoq.controls_due_in() END)", "NULL::float8")
V["no_controlled_cte"] = cut(V["no_ctrl_fn"], "), controlled AS (", "), claimed AS (").replace("""(SELECT CASE WHEN c.paused THEN 'paused' ELSE 'limited' END FROM controlled c
                   WHERE c.queue = due.queue)""", "NULL::text")
V["no_not_controlled"] = V["no_controlled_cte"].replace(" AND NOT controlled", "").replace(" AND NOT l.controlled", "").replace(" AND NOT n.controlled", "")
async def main():
    c = await asyncpg.connect("postgresql://postgres@127.0.0.1/chronoq_fca", server_settings={**PLANNER_SETTINGS["keyed"]})
    st = {k: await c.prepare(t) for k, t in V.items()}
    res = {k: [] for k in V}
    for rnd in range(5):
        for k in V:
            t0 = time.perf_counter()
            for _ in range(300):
                await st[k].fetch(500)
            res[k].append((time.perf_counter() - t0) / 300 * 1e6)
    for k, r in res.items():
        r.sort(); print(f"{k:28s} {r[2]:7.1f} us")
    for k in ("old", "no_not_controlled", "no_controlled_cte"):
        print(k, "\n".join(r[0] for r in await c.fetch("EXPLAIN (ANALYZE, TIMING OFF, SUMMARY ON) " + V[k].replace("$1", "500")))[-300:])
asyncio.run(main())
