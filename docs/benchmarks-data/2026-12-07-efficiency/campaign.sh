#!/bin/bash
# Efficiency at everyday rates: the code after these changes (A), the code before them (B) and
# the reference pipeline or peer (R), alternately, three rounds each, nothing else running.
# Usage: campaign.sh OUTDIR. A and B are clones with their own virtualenvs; scratch databases
# chronoq_b18 (A) and chronoq_b18old (B), migrated beforehand.
set -u
OUT=${1:-.}; mkdir -p "$OUT"
A=/tmp/after/.venv/bin/chronoq; B=/tmp/before/.venv/bin/chronoq
DBA=postgresql://postgres@127.0.0.1:5432/chronoq_b18; DBB=postgresql://postgres@127.0.0.1:5432/chronoq_b18old
export CHRONOQ_AMQP_URL=amqp://guest:guest@127.0.0.1:5672/
REF="/tmp/peervenv/bin/python /work/shared/bench/a4_pipeline.py"
cd /work/shared/bench
log() { echo "== $(date +%T) $*" | tee -a "$OUT/campaign.log"; }
rows() { grep -E "^│ (1|median) |│ (postgres|timer|worker|rabbitmq|other|bench|total) " >> "$OUT/campaign.log"; }
ref() { $REF "$@" 2>&1 | grep '^{' | tee -a "$OUT/ref.jsonl" >> "$OUT/campaign.log"; }
for i in 1 2 3; do
  log "A steady 200 #$i"; $A bench steady --rate 200 --duration 10 --runs 1 --handler noop --database-url $DBA --out "$OUT/A-s200" 2>&1 | rows
  log "B steady 200 #$i"; $B bench steady --rate 200 --duration 10 --runs 1 --handler noop --database-url $DBB --out "$OUT/B-s200" 2>&1 | rows
  log "R spread 10 #$i"; ref --jobs 2000 --spread 10 --txn explicit --queue-type quorum --loop uvloop --tag s200
done
for i in 1 2 3; do
  log "A burst noop #$i"; $A bench burst --jobs 20000 --runs 1 --handler noop --database-url $DBA --out "$OUT/A-burst" 2>&1 | rows
  log "B burst noop #$i"; $B bench burst --jobs 20000 --runs 1 --handler noop --database-url $DBB --out "$OUT/B-burst" 2>&1 | rows
  log "R burst txn none #$i"; ref --jobs 20000 --loop uvloop --txn none --tag burst
done
for i in 1 2 3; do
  log "A burst db #$i"; $A bench burst --jobs 20000 --runs 1 --handler db --database-url $DBA --out "$OUT/A-burstdb" 2>&1 | rows
  log "B burst db #$i"; $B bench burst --jobs 20000 --runs 1 --handler db --database-url $DBB --out "$OUT/B-burstdb" 2>&1 | rows
  log "R burst txn explicit #$i"; ref --jobs 20000 --loop uvloop --txn explicit --tag burstdb
done
for i in 1 2 3; do
  log "pgqueuer #$i"; /tmp/peervenv/bin/python /work/shared/bench/b_pgqueuer.py --n 20000 --mode instant --lead 6 --batch 100 2>&1 | tail -2 >> "$OUT/campaign.log"
  log "A packed #$i"; $A bench burst --jobs 40000 --runs 1 --handler noop --packed-queues chronoq.bench --pack-size 250 --claim-batch 1000 --database-url $DBA --out "$OUT/A-packed" 2>&1 | rows
done
log "A idle x3"; $A bench idle --runs 3 --database-url $DBA --out "$OUT/A-idle" 2>&1 | tail -40 >> "$OUT/campaign.log"
log "A memory"; $A bench memory --runs 1 --database-url $DBA --out "$OUT/A-memory" 2>&1 | tail -30 >> "$OUT/campaign.log"
log "done"
