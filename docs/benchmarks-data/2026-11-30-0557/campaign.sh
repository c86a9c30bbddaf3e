#!/bin/bash
# Campaign at c5055dd: ours alternating with the reference; nothing else running.
set -u
B=/work/venv/bin/chronoq
OUT=/tmp/camp11
E=postgresql://postgres@127.0.0.1/chronoq_exp
cd /tmp
for i in 1 2 3; do
  (cd /work/shared/bench && /tmp/peervenv/bin/python a4_pipeline.py --jobs 20000 --loop uvloop --txn none 2>/dev/null | tail -1) >> $OUT/reference-a4.jsonl
  $B bench burst --jobs 20000 --runs 1 --handler noop --database-url $E --out $OUT/burst > $OUT/burst-$i.log 2>&1
done
for i in 1 2 3; do
  (cd /work/shared/bench && /tmp/peervenv/bin/python a4_pipeline.py --jobs 20000 --loop uvloop --txn explicit 2>/dev/null | tail -1) >> $OUT/reference-a4-explicit.jsonl
  $B bench burst --jobs 20000 --runs 1 --handler db --database-url $E --out $OUT/burst-db > $OUT/burst-db-$i.log 2>&1
done
for i in 1 2 3; do $B bench steady --rate 200 --duration 10 --runs 1 --handler noop --database-url $E --out $OUT/steady > $OUT/steady-$i.log 2>&1; done
$B bench steady --find-max --runs 1 --handler noop --database-url $E --out $OUT/findmax > $OUT/findmax.log 2>&1
echo done > $OUT/DONE
