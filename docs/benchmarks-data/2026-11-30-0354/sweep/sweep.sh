#!/bin/bash
# As run (paths of that machine), after the campaigns; then bench plot.
E=postgresql://postgres@127.0.0.1/chronoq_sweep
cd /tmp/sweep
for h in noop db; do
  for r in 100 200 400 800 1200 1600 2000 2400; do
    /work/venv/bin/chronoq bench steady --rate $r --duration 10 --runs 3 --handler $h --database-url $E --out /tmp/sweep/data > /tmp/sweep/$h-$r.log 2>&1
  done
done
echo done > /tmp/sweep/DONE
