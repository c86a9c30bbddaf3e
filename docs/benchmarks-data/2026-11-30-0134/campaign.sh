#!/bin/bash
# The campaign, in order; nothing else ran meanwhile.
# REF: shared/bench; PV: a virtualenv with its requirements (aio-pika asyncpg orjson uvloop psutil pgqueuer).
CQ=chronoq
PV=${PV:-python}
REF=${REF:-../shared/bench}
ref() { (cd $REF && $PV a4_pipeline.py --jobs 20000 --loop uvloop --txn $1 | tail -1) >> reference-a4.jsonl; }
pgq() { (cd $REF && $PV b_pgqueuer.py --n 20000 --mode instant --lead 6 --batch 100 | tail -1) >> pgqueuer.jsonl; }
for i in 1 2 3; do ref none; $CQ bench burst --jobs 20000 --runs 1 --handler noop; done
for i in 1 2 3; do ref explicit; $CQ bench burst --jobs 20000 --runs 1 --handler db; done
for i in 1 2 3; do
    $CQ bench burst --jobs 40000 --runs 1 --handler noop --packed-queues chronoq.bench --pack-size 250 --claim-batch 1000
    pgq
done
for i in 1 2 3; do $CQ bench steady --rate 200 --duration 10 --runs 1 --handler noop; done
for i in 1 2 3; do $CQ bench steady --rate 500 --duration 5 --find-max --handler noop; done
$CQ bench steady --rate 1235 --duration 10 --runs 3 --handler noop
$CQ bench enqueue --jobs 30000 --runs 3 --concurrency 8
$CQ bench memory --jobs 10000 --database-url postgresql://postgres@127.0.0.1/chronoq_mem
$CQ bench scale --runs 3 --database-url postgresql://postgres@127.0.0.1/chronoq_scale   # before 9802520
$CQ bench steady --rate 1164 --duration 10 --runs 3 --handler noop                       # half of the median maximum
$CQ bench churn --autovacuum on --database-url postgresql://postgres@127.0.0.1/chronoq_churn
# on 9802520 (a CHECKPOINT after each preload), in a database dropped afterwards:
$CQ bench scale --runs 3 --keep --database-url postgresql://postgres@127.0.0.1/chronoq_scale9
