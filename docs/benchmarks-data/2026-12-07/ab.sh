#!/bin/bash
# Alternating A/B: before (5a0ec96) vs after (5fb92c5), 3 pairs.
cd /tmp
export COLUMNS=200
AMQP=amqp://guest:guest@127.0.0.1:5672/
run() { # side n scenario...
  side=$1; n=$2; shift 2
  echo "=== $(date -u +%H:%M:%S) $side-$n $*"
  /tmp/venv-$side/bin/chronoq bench "$@" \
    --database-url postgresql://postgres@127.0.0.1:5432/cqbench_$side \
    --amqp-url $AMQP --namespace bench$side --out /tmp/bench-out/$side-$n
  echo "rc=$?"
}
for n in 1 2 3; do
  run before $n enqueue --runs 3
  run after  $n enqueue --runs 3
  run before $n burst --handler noop --jobs 20000 --runs 1
  run after  $n burst --handler noop --jobs 20000 --runs 1
done
echo "=== done $(date -u +%H:%M:%S)"
