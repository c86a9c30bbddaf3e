#!/bin/bash
# The timer pipeline (timer-pipeline.patch applied in /work/main) against
# the code without it (git worktree add /tmp/old 4a31532), alternating, one 10 s steady run each.
# Scratch database chronoq_b13, dropped afterwards. Usage: ab.sh OUT RATE N
OUT=$1; RATE=$2; N=$3
DB=postgresql://postgres@127.0.0.1:5432/chronoq_b13
for i in $(seq 1 $N); do
  for v in old new; do
    if [ $v = old ]; then PP=/tmp/old/src; else PP=/work/main/src; fi
    PYTHONPATH=$PP /work/venv/bin/chronoq bench steady --rate $RATE --duration 10 --runs 1 --handler noop --database-url $DB --out $OUT/$v > /dev/null 2>&1
    f=$(ls -t $OUT/$v/*.json | head -1)
    python3 -c "
import json; d=json.load(open('$f')); r=d['runs'][0]
cpu=r.get('cpu_ms_per_job') or r.get('cpu',{})
print('$v', '$RATE', r['achieved_rate'], r['lateness_p50_ms'], r['lateness_p99_ms'], r['lateness_max_ms'], json.dumps(cpu)[:200])" | tee -a $OUT/ab.txt
  done
done
