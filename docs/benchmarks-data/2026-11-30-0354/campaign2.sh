#!/bin/bash
# As run, part 2 of 2; results in part2/. After it, by hand: the 10^7 scale step again on the rows kept
# (chronoq bench scale --sizes 10000000 --runs 3 --keep ..., part2/scale-again/).
set -u
CQ=/work/venv/bin/chronoq
PV=/tmp/peervenv/bin/python
REF=/work/shared/bench
OUT=/tmp/camp2
E=postgresql://postgres@127.0.0.1/chronoq_exp
mkdir -p $OUT; cd $OUT
ref() { (cd $REF && $PV a4_pipeline.py --jobs 20000 --loop uvloop --txn $1 2>/dev/null | tail -1) >> $OUT/reference-a4.jsonl; }
pgq() { (cd $REF && $PV b_pgqueuer.py --n 20000 --mode instant --lead 6 --batch 100 2>/dev/null | tail -1) >> $OUT/pgqueuer.jsonl; }
for i in 1 2 3; do ref explicit; $CQ bench burst --jobs 20000 --runs 1 --handler db --database-url $E --out $OUT/burst-db > /dev/null 2>&1; done
for i in 1 2 3; do
  $CQ bench burst --jobs 40000 --runs 1 --handler noop --packed-queues chronoq.bench --pack-size 250 --claim-batch 1000 --database-url $E --out $OUT/packed > /dev/null 2>&1
  pgq
done
$CQ bench steady --rate 500 --duration 5 --find-max --handler noop --runs 3 --database-url $E --out $OUT/find-max > $OUT/find-max.log 2>&1
HALF=$(python3 -c "
import json,glob,statistics
d=json.load(open(sorted(glob.glob('$OUT/find-max/*.json'))[-1]))
print(round(statistics.median(r['max_rate_under_100ms_p99'] for r in d['runs'])/2))")
echo "half $HALF" > $OUT/half.txt
$CQ bench steady --rate $HALF --duration 10 --runs 3 --handler noop --database-url $E --out $OUT/half > $OUT/half.log 2>&1
$CQ bench memory --jobs 10000 --database-url postgresql://postgres@127.0.0.1/chronoq_mem10 --out $OUT/memory > $OUT/memory.log 2>&1
$CQ bench scale --runs 3 --keep --database-url postgresql://postgres@127.0.0.1/chronoq_scale10 --out $OUT/scale > $OUT/scale.log 2>&1
echo done > $OUT/DONE
