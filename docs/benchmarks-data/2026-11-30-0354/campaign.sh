#!/bin/bash
# As run, part 1 of 2 (paths of the machine it ran on). Before it, by hand: churn with autovacuum on
# (naptime 60 s) and one with --autovacuum-naptime 5s (churn/), and the A/B of migration 007 (ab-enqueue-migration-007/).
# Campaign: ours alternating with the reference; nothing else running.
set -u
B=/work/venv/bin/chronoq
OUT=/tmp/camp
C=postgresql://postgres@127.0.0.1/chronoq_churn
E=postgresql://postgres@127.0.0.1/chronoq_exp
cd /tmp
for i in 2 3; do $B bench churn --autovacuum-naptime 5s --database-url $C --out $OUT/churn-nap5 > $OUT/churn-nap5-$i.log 2>&1; done
$B bench enqueue --jobs 30000 --runs 3 --concurrency 8 --database-url $E --out $OUT/enqueue > $OUT/enqueue.log 2>&1
for i in 1 2 3; do
  (cd /work/shared/bench && /tmp/peervenv/bin/python a4_pipeline.py --jobs 20000 --loop uvloop --txn none 2>/dev/null | tail -1) >> $OUT/reference-a4.jsonl
  $B bench burst --jobs 20000 --runs 1 --handler noop --database-url $E --out $OUT/burst > $OUT/burst-$i.log 2>&1
done
for i in 1 2 3; do $B bench steady --rate 200 --duration 10 --runs 1 --handler noop --database-url $E --out $OUT/steady > $OUT/steady-$i.log 2>&1; done
echo done > $OUT/DONE
