"""Medians and ratios of a campaign.log written by campaign.sh (A: after, B: before, R: the
reference or PGQueuer, alternately). Usage: python summarize.py OUTDIR"""

import json
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path

runs: dict[str, list[dict]] = defaultdict(list)
current = None
for line in (Path(sys.argv[1]) / "campaign.log").read_text().splitlines():
    if line.startswith("=="):
        current = re.sub(r" #\d+$", "", line[12:])
        continue
    cells = [c.strip() for c in line.split("│")[1:-1]]
    if line.startswith("│ 1 "):
        runs[current].append({"row": cells})
    elif len(cells) == 2 and current and runs[current] and line.startswith("│ "):
        runs[current][-1][cells[0]] = float(cells[1])
    elif line.startswith("{") and '"cpu"' in line and current:
        d = json.loads(line)
        c, n = d["cpu"], d["jobs"]
        runs[current].append({"drain": d["drain_jobs_per_s"], "lateness": (d["lateness_p50_ms"], d["lateness_p99_ms"],
                              d["lateness_max_ms"]), "total": sum(v for k, v in c.items() if k.endswith("_cpu_s")) * 1000 / n,
                              "postgres": c["postgres_cpu_s"] * 1000 / n})
    elif line.startswith("{") and current and current.startswith("pgqueuer"):
        runs[current].append(json.loads(line))


def med(xs):
    return round(statistics.median(xs), 3)


for name, items in runs.items():
    print(f"## {name}")
    for r in items:
        print("  ", {k: v for k, v in r.items()})
for scenario, a, b, r in (("steady", "A steady 200", "B steady 200", "R spread 10"),):
    for key in ("total", "postgres", "timer", "worker", "rabbitmq"):
        av = [x.get(key) for x in runs[a]]
        bv = [x.get(key) for x in runs[b]]
        rv = [x.get(key) for x in runs[r]] if key in ("total", "postgres") else None
        line = f"{scenario} cpu {key}: A {av} B {bv}"
        if rv:
            line += f" R {[round(v, 3) for v in rv]} A/R {med([x / y for x, y in zip(av, rv)])} B/R {med([x / y for x, y in zip(bv, rv)])}"
        line += f" A/B {med([x / y for x, y in zip(av, bv)])}"
        print(line)
