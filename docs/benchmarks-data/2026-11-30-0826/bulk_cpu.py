import asyncio, sys, time, os
from datetime import timedelta
import uvloop, psutil
from chronoq._store import jobs as J
from chronoq import Producer
URL = sys.argv[1]
if os.environ.get("SLICE"): J._SLICE = int(os.environ["SLICE"])
if os.environ.get("PART"): J.BULK_PART = int(os.environ["PART"])
if os.environ.get("FIRST"): J.FIRST_PART = int(os.environ["FIRST"])
if os.environ.get("AHEAD"): J._PARTS_AHEAD = int(os.environ["AHEAD"])
def pg_cpu():
    t = 0.0
    for p in psutil.process_iter(["name"]):
        if p.info["name"] and p.info["name"].startswith("postgres"):
            try:
                c = p.cpu_times(); t += c.user + c.system
            except psutil.Error: pass
    return t
me = psutil.Process()
async def main():
    async with Producer(URL) as p:
        specs = [{"queue": "exp.bulk", "payload": {"mode": "noop"}, "delay": timedelta(days=365)}] * 30000
        tot = pg = py = 0
        for r in range(10):
            c0 = pg_cpu(); m0 = sum(me.cpu_times()[:2]); t = time.perf_counter()
            for s in range(0, 30000, 10000):
                await p.enqueue_many(specs[s:s+10000])
            tot += time.perf_counter() - t; pg += pg_cpu() - c0; py += sum(me.cpu_times()[:2]) - m0
            async with p.pool.acquire() as c:
                await c.execute("DELETE FROM chronoq.jobs WHERE queue='exp.bulk'")
                await c.execute("VACUUM chronoq.jobs, chronoq.wheel")
        n = 300000
        print(f"{n/tot:.0f}/s  wall {tot/n*1e6:.2f} us/job  pg {pg/n*1e6:.2f}  py {py/n*1e6:.2f}")
uvloop.run(main())
