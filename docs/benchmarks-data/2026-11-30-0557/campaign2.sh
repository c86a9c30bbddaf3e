#!/bin/bash
# Part 2 (c5055dd): find-max and half of it, three more burst pairs, packed
# against PGQueuer, enqueue. Nothing else running.
set -u
CQ=/work/venv/bin/chronoq
PV=/tmp/peervenv/bin/python
REF=/work/shared/bench
OUT=/tmp/camp11/part2
E=postgresql://postgres@127.0.0.1/chronoq_exp
mkdir -p $OUT; cd $OUT
ref() { (cd $REF && $PV a4_pipeline.py --jobs 20000 --loop uvloop --txn $1 2>/dev/null | tail -1) >> $OUT/reference-a4.jsonl; }
pgq() { (cd $REF && $PV b_pgqueuer.py --n 20000 --mode instant --lead 6 --batch 100 2>/dev/null | tail -1) >> $OUT/pgqueuer.jsonl; }
$CQ bench steady --rate 500 --duration 5 --find-max --handler noop --runs 3 --database-url $E --out $OUT/find-max > $OUT/find-max.log 2>&1
HALF=$(python3 -c "
import json,glob,statistics
d=json.load(open(sorted(glob.glob('$OUT/find-max/*.json'))[-1]))
print(round(statistics.median(r['max_rate_under_100ms_p99'] for r in d['runs'])/2))")
echo "half $HALF" > $OUT/half.txt
for i in 1 2 3; do $CQ bench steady --rate $HALF --duration 10 --runs 1 --handler noop --database-url $E --out $OUT/half > $OUT/half-$i.log 2>&1; done
for i in 1 2 3; do ref none; $CQ bench burst --jobs 20000 --runs 1 --handler noop --database-url $E --out $OUT/burst > $OUT/burst-$i.log 2>&1; done
for i in 1 2 3; do
  $CQ bench burst --jobs 40000 --runs 1 --handler noop --packed-queues chronoq.bench --pack-size 250 --claim-batch 1000 --database-url $E --out $OUT/packed > $OUT/packed-$i.log 2>&1
  pgq
done
$CQ bench enqueue --jobs 30000 --runs 3 --concurrency 8 --database-url $E --out $OUT/enqueue > $OUT/enqueue.log 2>&1
echo done > $OUT/DONE
