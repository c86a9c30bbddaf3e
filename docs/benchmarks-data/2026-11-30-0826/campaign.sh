#!/bin/bash
# Figures of the targets, in order; nothing else running. Usage: campaign.sh OUTDIR
# Scratch database chronoq_camp12 (dropped by hand afterwards); reference and peers from
# shared/bench, run from /tmp/peervenv (asyncpg, aio-pika, uvloop, psutil, pgqueuer).
set -u
OUT=${1:-.}
mkdir -p "$OUT"
DB=postgresql://postgres@127.0.0.1:5432/chronoq_camp12
B="/work/venv/bin/chronoq bench"
REF="/tmp/peervenv/bin/python /work/shared/bench/a4_pipeline.py"
cd /work/shared/bench
log() { echo "== $(date +%T) $*" | tee -a "$OUT/campaign.log"; }

log "find-max x3"
$B steady --rate 500 --duration 5 --find-max --handler noop --runs 3 --database-url $DB --out "$OUT/findmax" 2>&1 | tail -25 >> "$OUT/campaign.log"
MAX=$(python3 -c "import json,glob; print(json.load(open(sorted(glob.glob('$OUT/findmax/*.json'))[-1]))['median']['achieved_rate'])")
HALF=$(python3 -c "print(round($MAX/2))")
log "max $MAX half $HALF"
for i in 1 2 3; do
  log "steady half $HALF run $i"
  $B steady --rate $HALF --duration 10 --runs 1 --handler noop --database-url $DB --out "$OUT/half" 2>&1 | grep -E "^│ 1 |total" >> "$OUT/campaign.log"
done
for i in 1 2 3; do
  log "steady 200 run $i"
  $B steady --rate 200 --duration 10 --runs 1 --handler noop --database-url $DB --out "$OUT/s200" 2>&1 | grep -E "^│ 1 |total" >> "$OUT/campaign.log"
done
for i in 1 2 3; do
  log "reference burst $i"
  $REF --jobs 20000 --loop uvloop --txn none 2>&1 | grep -E "drain_jobs_per_s|jobs/s" | head -3 >> "$OUT/campaign.log"
  log "chronoq burst noop $i"
  $B burst --jobs 20000 --runs 1 --handler noop --database-url $DB --out "$OUT/burst" 2>&1 | grep -E "^│ 1 |total" >> "$OUT/campaign.log"
done
for i in 1 2 3; do
  log "reference burst, one commit per job $i"
  $REF --jobs 20000 --loop uvloop --txn explicit 2>&1 | grep -E "drain_jobs_per_s" | head -1 >> "$OUT/campaign.log"
  log "chronoq burst db $i"
  $B burst --jobs 20000 --runs 1 --handler db --database-url $DB --out "$OUT/burstdb" 2>&1 | grep -E "^│ 1 |total" >> "$OUT/campaign.log"
done
log "enqueue x3"
$B enqueue --jobs 30000 --runs 3 --concurrency 8 --database-url $DB --out "$OUT/enqueue" 2>&1 | grep -E "^│ (1|2|3|median) " >> "$OUT/campaign.log"
for i in 1 2 3; do
  log "pgqueuer $i"
  /tmp/peervenv/bin/python /work/shared/bench/b_pgqueuer.py --n 20000 --mode instant --lead 6 --batch 100 2>&1 | tail -2 >> "$OUT/campaign.log"
  log "packed $i"
  $B burst --jobs 40000 --runs 1 --handler noop --packed-queues chronoq.bench --pack-size 250 --claim-batch 1000 --database-url $DB --out "$OUT/packed" 2>&1 | grep -E "^│ 1 " >> "$OUT/campaign.log"
done
log "done"
