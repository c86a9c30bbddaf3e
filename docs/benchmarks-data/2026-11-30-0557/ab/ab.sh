#!/bin/bash
# usage: ab.sh N label extra-args...   alternates old (/tmp/old) and new (/work/main)
N=$1; shift; L=$1; shift
E=postgresql://postgres@127.0.0.1/chronoq_exp
for i in $(seq $N); do
  for side in old new; do
    if [ $side = old ]; then PP=/tmp/old/src; else PP=/work/main/src; fi
    r=$(cd /tmp && PYTHONPATH=$PP /work/venv/bin/chronoq bench burst --jobs 20000 --runs 1 --handler noop --database-url $E --out /tmp/ab-$L-$side "$@" 2>&1 | grep -E "│ (1 |worker|timer|postgres|rabbitmq|total)" | awk -F'│' '{v=($5!=""?$5:$3); printf "%s=%s ", $2, v}' | tr -s ' ')
    echo "$L $side $i $r"
  done
done
