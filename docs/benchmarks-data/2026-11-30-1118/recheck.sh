#!/bin/bash
# A recheck of the ratio targets at 4a31532 in a slow phase of the machine,
# ours alternating with the reference or the peer. Scratch database chronoq_camp12 (created
# before, dropped after); peers from /tmp/peervenv. Usage: recheck.sh OUTDIR
set -u
OUT=$1; mkdir -p $OUT
DB=postgresql://postgres@127.0.0.1:5432/chronoq_camp12
B="/work/venv/bin/chronoq bench"
REF="/tmp/peervenv/bin/python /work/shared/bench/a4_pipeline.py"
cd /work/shared/bench
log() { echo "== $(date +%T) $*" | tee -a "$OUT/campaign.log"; }
for i in 1 2 3; do
  log "reference burst $i"
  $REF --jobs 20000 --loop uvloop --txn none 2>&1 | grep -o '"drain_jobs_per_s": [0-9.]*' >> "$OUT/campaign.log"
  log "chronoq burst noop $i"
  $B burst --jobs 20000 --runs 1 --handler noop --database-url $DB --out "$OUT/burst" 2>&1 | grep -E "^│ 1 " >> "$OUT/campaign.log"
done
for i in 1 2 3; do
  log "reference 200/s $i"
  $REF --jobs 2000 --spread 10 --loop uvloop --txn explicit --queue-type quorum 2>&1 | grep -o '"lateness_p50_ms": [0-9.]*, "lateness_p99_ms": [0-9.]*, "lateness_max_ms": [0-9.]*' >> "$OUT/campaign.log"
  log "chronoq steady 200 $i"
  $B steady --rate 200 --duration 10 --runs 1 --handler noop --database-url $DB --out "$OUT/s200" 2>&1 | grep -E "^│ 1 " >> "$OUT/campaign.log"
done
for i in 1 2 3; do
  log "pgqueuer $i"
  /tmp/peervenv/bin/python /work/shared/bench/b_pgqueuer.py --n 20000 --mode instant --lead 6 --batch 100 2>&1 | grep -o '"drain_jobs_per_s": [0-9.]*' >> "$OUT/campaign.log"
  log "packed $i"
  $B burst --jobs 40000 --runs 1 --handler noop --packed-queues chronoq.bench --pack-size 250 --claim-batch 1000 --database-url $DB --out "$OUT/packed" 2>&1 | grep -E "^│ 1 " >> "$OUT/campaign.log"
done
log "done"
