#!/bin/bash
# The cost of queue controls for queues without any: the code before them (B) and after (A),
# alternately, three rounds each, nothing else running. A no-op burst of 20,000 jobs, and 200
# jobs/s for 10 s (CPU per job, lateness).
# Usage: campaign.sh OUTDIR. A and B are checkouts with their own virtualenvs; scratch databases
# chronoq_fca (A) and chronoq_fcb (B), migrated beforehand.
set -u
OUT=${1:-.}; mkdir -p "$OUT"
A=/work/venv/bin/chronoq; B=/work/wt/benchA/.venv/bin/chronoq
DBA=postgresql://postgres@127.0.0.1:5432/chronoq_fca; DBB=postgresql://postgres@127.0.0.1:5432/chronoq_fcb
export CHRONOQ_AMQP_URL=amqp://guest:guest@127.0.0.1:5672/
log() { echo "== $(date +%T) $*" | tee -a "$OUT/campaign.log"; }
rows() { grep -E "^│ (1|median) |│ (postgres|timer|worker|rabbitmq|other|bench|total) " >> "$OUT/campaign.log"; }
for i in 1 2 3; do
  log "A burst noop #$i"; $A bench burst --jobs 20000 --runs 1 --handler noop --database-url $DBA --out "$OUT/A-burst" 2>&1 | rows
  log "B burst noop #$i"; $B bench burst --jobs 20000 --runs 1 --handler noop --database-url $DBB --out "$OUT/B-burst" 2>&1 | rows
done
for i in 1 2 3; do
  log "A steady 200 #$i"; $A bench steady --rate 200 --duration 10 --runs 1 --handler noop --database-url $DBA --out "$OUT/A-s200" 2>&1 | rows
  log "B steady 200 #$i"; $B bench steady --rate 200 --duration 10 --runs 1 --handler noop --database-url $DBB --out "$OUT/B-s200" 2>&1 | rows
done
log "done"
