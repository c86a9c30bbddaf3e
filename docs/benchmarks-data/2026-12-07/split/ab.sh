#!/bin/bash
# Alternating A/B of the consumer and timer split: before (3d8401c) against after, 3 pairs of
# each burst. Each side has its own database (their migration series differ) and namespace.
export COLUMNS=200
OUT=${OUT:-/tmp/bench-split}
AMQP=amqp://guest:guest@127.0.0.1:5672/
run() { # side n scenario...
  side=$1; n=$2; shift 2
  echo "=== $(date -u +%H:%M:%S) $side-$n $*"
  /work/venv-$side/bin/chronoq bench "$@" \
    --database-url postgresql://postgres@127.0.0.1:5432/cqsplit_$side \
    --amqp-url $AMQP --namespace split$side --out $OUT/$side-$n
  echo "rc=$?"
}
for n in 1 2 3; do
  run before $n burst --handler noop --jobs 20000 --runs 1
  run after  $n burst --handler noop --jobs 20000 --runs 1
  run before $n burst --handler db --jobs 20000 --runs 1
  run after  $n burst --handler db --jobs 20000 --runs 1
done
echo "=== done $(date -u +%H:%M:%S)"
