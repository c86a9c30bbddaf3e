# CPU cost of enqueue_many's per-item validation alone (no database): the bench's bulk items.
import time, statistics
from datetime import timedelta
from chronoq.producer import client
far = timedelta(days=365)
items = [{"queue": "chronoq.bench", "payload": {"mode": "noop"}, "delay": far}] * 10_000
ts = []
for _ in range(7):
    t = time.perf_counter()
    for i, it in enumerate(items):
        p = client._prepare(i, it)
        p[0].encoded_payload() if hasattr(p[0], "encoded_payload") else None
    ts.append(time.perf_counter() - t)
print(client.__file__, "us/item median", round(statistics.median(ts) / 10_000 * 1e6, 2), [round(x, 3) for x in ts])
