#!/usr/bin/env bash
# Every system of one or more comparison recipes trained at the same time on one machine, each
# comparison by `nmt compare RECIPE --jobs N` (N its number of runs: all at once), the
# comparisons side by side. On a GPU an RNN run leaves most of the card idle (its decoder is a
# loop of small steps), so concurrent systems finish the whole comparison in about the time of
# the slowest one (bench/RESULTS.md, whole comparisons).
#
#   bench/parallel_compare.sh OUT_ROOT RECIPE.yaml [RECIPE.yaml ...]
#   NMT="python3 cli.py" LIMIT=540 bench/parallel_compare.sh /tmp/runs recipes/multi30k-de-en/compare.yaml
#
# Each comparison goes to OUT_ROOT/<recipe name>/ (its log: compare.log there), its report once
# all of its systems have finished. LIMIT (seconds, default none) stops a comparison still
# running then as Ctrl-C would: each system saves last.pt, and the same command again resumes.
# THREADS (default: the cores shared out among all the systems, at least 1) is each system's
# train.threads. SETS: more --set values for every comparison, space-separated (e.g.
# SETS=train.cuda_graphs=true). PYTHON (default python3) counts the runs. OUT_ROOT/TIMES: start
# and end.
set -uo pipefail
root=$1; shift
nmt=${NMT:-nmt}
limit=${LIMIT:-0}
mkdir -p "$root"
date +%s > "$root/TIMES"  # start and end, for bench/gpu_report.py --compare
runs=()  # per recipe its number of runs (systems x seeds)
for recipe in "$@"; do
  runs+=("$(${PYTHON:-python3} - "$recipe" <<'PY'
import sys
sys.path.insert(0, ".")
from nmt.compare import load_comparison, seed_runs
cmp = load_comparison(sys.argv[1])
print(sum(len(seed_runs(cmp, name)) for name in cmp.recipes))
PY
)") || exit 2
done
total=0
for n in "${runs[@]}"; do total=$((total + n)); done
threads=${THREADS:-$(( $(nproc) / total > 1 ? $(nproc) / total : 1 ))}
extra=()
for s in ${SETS:-}; do extra+=(--set "$s"); done
pids=()
i=0
for recipe in "$@"; do
  out=$root/$(basename "$recipe" .yaml)
  mkdir -p "$out"
  cmd=($nmt compare "$recipe" --out "$out" --jobs "${runs[$i]}" --set "train.threads=$threads"
       "${extra[@]}" --quiet)
  if [ "$limit" -gt 0 ]; then
    timeout -s INT "$limit" "${cmd[@]}" > "$out/compare.log" 2>&1 &
  else
    "${cmd[@]}" > "$out/compare.log" 2>&1 &
  fi
  pids+=($!)
  i=$((i + 1))
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=1; done
for recipe in "$@"; do
  out=$root/$(basename "$recipe" .yaml)
  [ -f "$out/report.md" ] && echo "$out/report.md" || echo "$recipe: $(tail -n 1 "$out/compare.log")"
done
date +%s >> "$root/TIMES"
touch "$root/DONE"
exit $rc
