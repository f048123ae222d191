#!/usr/bin/env bash
# Levers judged by BLEU per minute (bench/RESULTS.md): each run is one system of
# recipes/multi30k-de-en/time-cpu.yaml trained for a fixed number of wall minutes (validation
# included) with one setting changed, beside a baseline run of the same length on the same code
# and machine; then one time-to-quality table of all runs. Runs one after another, never side
# by side (they would share the cores), and keep the CPU to themselves: anything else running
# meanwhile moves the minutes. A finished run (its results.json) is not run again and an
# interrupted one continues (nmt compare resumes; the minutes already spent count), so the
# script can simply be started again.
#
#   bash bench/levers.sh [OUT]                 # OUT defaults to runs/levers; ~75 minutes
#   T_MINUTES=30 R_MINUTES=30 bash bench/levers.sh
#   ONLY="t-fp32 t-bf16" bash bench/levers.sh  # only the runs named
#
# Transformer levers: peak learning rate, warm-up length, batch size (with the peak lr scaled
# by sqrt(batch ratio), the usual rule for Adam). Luong-dot lever: mixed-length batches
# instead of length buckets (train.batching). Both: bf16 autocast against float32 (train.amp), on
# CPUs that compute bf16 natively (AVX512-BF16) the lever train.amp=auto decides by.
set -euo pipefail
OUT=${1:-runs/levers}
T_MINUTES=${T_MINUTES:-12}
R_MINUTES=${R_MINUTES:-10}
PY=${PY:-.venv/bin/python}
RECIPE=recipes/multi30k-de-en/time-cpu.yaml

run() {  # NAME MINUTES compare-args...
  local name=$1 minutes=$2
  shift 2
  if [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $name "* ]]; then
    return
  fi
  if [ -f "$OUT/$name/results.json" ]; then
    echo "== $name: done before"
    return
  fi
  echo "== $name ($minutes min): $*  [$(date -u +%H:%M)]"
  "$PY" cli.py compare "$RECIPE" --out "$OUT/$name" \
    --set train.max_minutes="$minutes" "$@"
}

# the Transformer's baseline is peak lr 1e-3 (time-cpu.yaml adopted 2e-3 from this table)
run t-base        "$T_MINUTES" --only transformer --set train.lr=0.001
run t-lr2e-3      "$T_MINUTES" --only transformer --set train.lr=0.002
run t-warmup100   "$T_MINUTES" --only transformer --set train.lr=0.001 --set train.warmup=100
run t-batch4096   "$T_MINUTES" --only transformer --set train.batch_tokens=4096 \
                               --set train.lr=0.0014
run r-base        "$R_MINUTES" --only luong-dot
run r-mixed       "$R_MINUTES" --only luong-dot --set train.batching=mixed
# bf16 autocast against float32, each pinned (auto follows the CPU); T at time-cpu's lr 2e-3
run t-fp32        "$T_MINUTES" --only transformer --set train.amp=false
run t-bf16        "$T_MINUTES" --only transformer --set train.amp=bf16
run r-fp32        "$R_MINUTES" --only luong-dot --set train.amp=false
run r-bf16        "$R_MINUTES" --only luong-dot --set train.amp=bf16

"$PY" bench/time_to_quality.py "$OUT"/*/results.json
