#!/usr/bin/env bash
# Every system of one or more comparison recipes trained at the same time on one machine, then each
# comparison's report. On a GPU an RNN run leaves most of the card idle (its decoder is a loop of
# small steps), so concurrent systems finish the whole comparison in about the time of the
# slowest one. Each system is `nmt compare RECIPE --only NAME`; the tokenizer is built first, once
# per comparison, so that no two runs race to build it; a last plain `nmt compare` per recipe
# decodes nothing new and writes the report.
#
#   bench/parallel_compare.sh OUT_ROOT RECIPE.yaml [RECIPE.yaml ...]
#   NMT="python3 cli.py" LIMIT=540 bench/parallel_compare.sh /tmp/runs recipes/multi30k-de-en/compare.yaml
#
# PYTHON (default python3) builds the tokenizer. LIMIT (seconds, default none) sends SIGINT to a
# system still training then: it saves last.pt and stops, and running the same command again
# resumes it. THREADS (default: the cores shared out among the systems, at least 1) is each
# system's train.threads: every run taking all cores would oversubscribe them N times over.
set -uo pipefail
root=$1; shift
nmt=${NMT:-nmt}
limit=${LIMIT:-0}
pids=()
mkdir -p "$root"
date +%s > "$root/TIMES"  # start and end, for bench/gpu_report.py --compare
for recipe in "$@"; do
  out=$root/$(basename "$recipe" .yaml)
  mkdir -p "$out"
  ${PYTHON:-python3} - "$recipe" "$out" <<'PY'
import sys
from pathlib import Path
sys.path.insert(0, ".")
from nmt.compare import build_tokenizer, load_comparison, seed_runs
cmp, out = load_comparison(sys.argv[1]), Path(sys.argv[2])
if not any((out / "tokenizer").glob("*.model")):
    build_tokenizer(next(iter(cmp.recipes.values())), out / "tokenizer")
# per system its run directories under systems/, one per seed
(out / "systems.txt").write_text("".join(
    f"{name} {' '.join(sr.dir for sr in seed_runs(cmp, name))}\n" for name in cmp.recipes))
PY
done
systems=$(cat "$root"/*/systems.txt | wc -l)
threads=${THREADS:-$(( $(nproc) / systems > 1 ? $(nproc) / systems : 1 ))}
for recipe in "$@"; do
  out=$root/$(basename "$recipe" .yaml)
  while read -r name _; do
    run=($nmt compare "$recipe" --out "$out" --only "$name" --set "train.threads=$threads" --quiet)
    if [ "$limit" -gt 0 ]; then
      timeout -s INT "$limit" "${run[@]}" > "$out/$name.log" 2>&1 &
    else
      "${run[@]}" > "$out/$name.log" 2>&1 &
    fi
    pids+=($!)
  done < "$out/systems.txt"
done
for p in "${pids[@]}"; do wait "$p"; done
for recipe in "$@"; do
  out=$root/$(basename "$recipe" .yaml)
  # only the systems whose every seed finished: a plain compare would go on training one that
  # LIMIT stopped
  only=()
  while read -r name dirs; do
    done_all=1
    for d in $dirs; do [ -f "$out/systems/$d/done.json" ] || done_all=0; done
    [ $done_all = 1 ] && only+=(--only "$name")
  done < "$out/systems.txt"
  [ ${#only[@]} -gt 0 ] || { echo "$recipe: no system finished"; continue; }
  $nmt compare "$recipe" --out "$out" "${only[@]}" --quiet > "$out/report.log" 2>&1 \
    && echo "$out/report.md" || echo "$recipe: report failed, see $out/report.log"
done
date +%s >> "$root/TIMES"
touch "$root/DONE"
