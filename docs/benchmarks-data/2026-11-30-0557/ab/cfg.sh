#!/bin/bash
# cfg.sh N label:conc:linger ...
N=$1; shift
for i in $(seq $N); do for spec in "$@"; do
  IFS=: read L C X <<< "$spec"
  r=$(cd /tmp && XLINGER=$X /work/venv/bin/chronoq bench burst --jobs 20000 --runs 1 --handler ${H:-noop} --concurrency $C --database-url postgresql://postgres@127.0.0.1/chronoq_exp --out /tmp/cfg-$L 2>&1 | grep -E "│ (1 |worker|timer|postgres|rabbitmq|total)" | awk -F'│' '{v=($5!=""?$5:$3); printf "%s=%s ", $2, v}' | tr -s ' ')
  g=$(python3 /tmp/gs.py | awk '{print "mean", $5}')
  echo "$L $i $r $g"
done; done
