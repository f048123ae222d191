#!/usr/bin/env bash
# The GPU check, sized for one call of about 10 minutes on an H100/H200; run it whenever a CUDA
# machine is at hand:
#   NMT_DATA_DIR=... bench/gpu_check.sh [OUT_DIR]        (default runs/gpu-check)
# 1. versions; 2. the RNN recurrences under bf16 autocast (float32 inside, the gradients of
# fp32: bench/gpu_rnn_check.py); 3. training speed: tokens/s, MFU against the measured bf16 and
# TF32 matrix rates, one Multi30k epoch's seconds, for the full recipes' Transformer and Bahdanau
# RNN (bf16 and float32) and the benchmark models T and R (bench/gpu_bench.py train); 3b. CUDA
# graphs (train.cuda_graphs) off and on: tokens/s and MFU of the Transformer and Bahdanau
# recipes (float32, as they train on CUDA) and of a Transformer of base size (d_model 512, 6+6
# layers, 8 heads, ff 2048) on synthetic long batches under bf16, with the graphs captured and
# the padding their bucket shapes add (bench/gpu_bench.py train --plan; its correctness test,
# graphs against eager updates, runs with the GPU-only tests in 6); 4. T and
# the Bahdanau R of compare-cpu.yaml (the README's main job) trained by `nmt compare` on CUDA:
# wall time and BLEU beside the CPU run's; 5. those models decoding test_2016_flickr greedy and
# with beam 5 at several batch sizes, bf16 and float32 (bench/gpu_bench.py decode); 6. the test
# suite with CUDA visible (the GPU-only tests first, then the rest; xdist when installed; step
# 1 names the packages the environment lacks); before it, on a machine with 2 GPUs, DDP's
# speed. Each step has a time limit; a failing or cut step is reported (its log in OUT_DIR, all
# of it also in OUT_DIR.tgz, or $PACK, after each step) and the next one runs. Last,
# bench/gpu_report.py writes the measured part of a benchmark log (bench/log/) into OUT_DIR/section.md.
# SIZES (models timed in 3), GRAPH_PLAN (the rows of 3b, MODEL:bf16|fp32:on|off,...), SYSTEMS
# (trained in 4) and TEST_SECONDS narrow it; STEPS runs only the steps named (e.g.
# STEPS="versions graphs-speed tests" for the CUDA graphs' measurements and tests alone). Without
# CUDA it says so and stops.
# The whole comparison of the full recipes on the GPU (9.2 minutes on an H200, 2026-12-04) fits a
# second call:
#   NMT="python3 cli.py" LIMIT=540 bench/parallel_compare.sh /tmp/gc/all recipes/multi30k-de-en/compare.yaml
#   tar czf OUT.tgz --exclude='*.pt' -C /tmp/gc all
# and, where both have come back: bench/gpu_report.py OUT_DIR --compare ALL_DIR --write.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/gpu-check}
py=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
if ! found=$($py -c "import torch; print(torch.__version__, torch.cuda.is_available())" 2>&1); then
  echo "gpu_check: $py cannot import torch ($(tail -1 <<<"$found")); run make install, or" \
       "PYTHON=/path/to/python with a CUDA build of torch" >&2
  exit 2
fi
if [ "${found##* }" != True ]; then
  echo "gpu_check: needs a CUDA GPU and a CUDA build of torch; $py has torch ${found% *}," \
       "which sees no GPU (torch.cuda.is_available() is False). Nothing was run." >&2
  exit 2
fi
mkdir -p "$out"
rm -f "$out/steps.log"
pack=${PACK:-$out.tgz}
export PYTHONUNBUFFERED=1

# step NAME SECONDS CMD...: run CMD with a time limit into $out/NAME.log, print its last lines
# (TAIL, default 12) and its time, and pack $out (without checkpoints) into $PACK (or $out.tgz)
step() {
  local name=$1 secs=$2 t0=$SECONDS rc
  shift 2
  if [ -n "${STEPS:-}" ] && [[ " $STEPS " != *" $name "* ]]; then
    echo "== $name: not in STEPS, skipped"
    return 0
  fi
  echo "== $name (at most ${secs}s)"
  timeout -k 5 "$secs" "$@" > "$out/$name.log" 2>&1
  rc=$?
  tail -n "${TAIL:-12}" "$out/$name.log" | cut -c1-220
  local status
  status=$([ $rc = 0 ] && echo ok || { [ $rc = 124 ] && echo "CUT at ${secs}s" ||
    echo "FAILED (exit $rc)"; })
  echo "-- $name: $status, $((SECONDS - t0)) s"
  printf '%s\t%s\t%s\n' "$name" "$status" $((SECONDS - t0)) >> "$out/steps.log"
  pack_out
}
# pack_out: $out without checkpoints into $PACK (or $out.tgz), so a cut call still brings it back
pack_out() {
  tar czf "$pack" --exclude='*.pt' -C "$(dirname "$out")" "$(basename "$out")" 2>/dev/null
}

versions() {
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm \
    --format=csv,noheader
  $py -c "import torch, sacrebleu, sentencepiece; print('torch', torch.__version__, 'cuda',
torch.version.cuda, 'cudnn', torch.backends.cudnn.version(), 'sacrebleu', sacrebleu.__version__,
'sentencepiece', sentencepiece.__version__)"
  nproc
  # a GPU image's own environment may lack some of nmt's packages: name them, as the tests that
  # need them fail or skip for that reason, not for the GPU's
  $py -c "import importlib.util as u; m = [p for p in ('typer', 'rich', 'datasets', 'matplotlib',
'yaml', 'tensorboard', 'ctranslate2', 'xdist') if u.find_spec(p) is None]
print('not installed:', ', '.join(m) or 'none')"
}
tests() {
  local par=() rc
  $py -c "import xdist" 2>/dev/null && par=(-n "${TEST_WORKERS:-12}")
  # the tests that only run with a GPU first, so that the time limit never cuts them; then the
  # rest (-v: a log cut by the time limit still names each failure)
  $py -m pytest -v -p no:cacheprovider -p no:benchmark -k "cuda or cudnn" tests
  rc=$?
  $py -m pytest -v -p no:cacheprovider -p no:benchmark "${par[@]}" -k "not (cuda or cudnn)" tests || rc=1
  return $rc
}
# data parallelism, where the machine has 2 GPUs: the Transformer recipe for the same updates of
# the same global batch on one GPU accumulating 2 batches and on 2 GPUs (torchrun, NCCL); the
# tokens/s of each in its "done:" line. Its correctness test (2 ranks = 1 process accumulating,
# on CUDA) runs with the GPU-only tests.
ddp() {
  local gpus
  gpus=$(nvidia-smi -L | grep -c "^GPU")
  [ "$gpus" -ge 2 ] || { echo "$gpus GPU: no DDP to run"; return 0; }
  local train=(cli.py train recipes/multi30k-de-en/transformer.yaml --quiet
               --set train.max_epochs=0 --set train.max_steps=60 --set train.device=cuda)
  $py "${train[@]}" --out "$out/ddp-1gpu" --set train.accum_steps=2 || return 1
  $py -m torch.distributed.run --standalone --nproc_per_node=2 "${train[@]}" \
    --out "$out/ddp-2gpu" || return 1
  grep -h "done:" "$out/ddp-1gpu/train.log" "$out/ddp-2gpu/train.log"
}

export py out
export -f versions tests ddp  # for timeout's bash -c
step versions 30 bash -c versions
step rnn-bf16 45 $py bench/gpu_rnn_check.py
step train-speed 130 $py bench/gpu_bench.py train "$out/train.json" --cap "${CAP:-14}" \
  --sizes "${SIZES:-T-recipe,R-recipe,T,R}"
TAIL=8 step graphs-speed 220 $py bench/gpu_bench.py train "$out/graphs.json" \
  --cap "${GRAPH_CAP:-10}" --plan "${GRAPH_PLAN:-T-recipe:fp32:off,T-recipe:fp32:on,\
R-recipe:fp32:off,R-recipe:fp32:on,base:bf16:off,base:bf16:on}"
only=()
for s in ${SYSTEMS:-transformer bahdanau}; do only+=(--only "$s"); done
TAIL=8 step compare-cpu-on-gpu 170 $py cli.py compare recipes/multi30k-de-en/compare-cpu.yaml \
  --out "$out/cmp" "${only[@]}" --device cuda --quiet
runs=$(ls -d "$out"/cmp/systems/*/ 2>/dev/null | while read -r d; do
  [ -f "$d/best.pt" ] && echo "$d"; done)
# shellcheck disable=SC2086  # one argument per trained system
TAIL=45 step decode-speed 120 $py bench/gpu_bench.py decode "$out/decode.json" $runs
TAIL=4 step ddp 120 bash -c ddp
TAIL=3 step tests "${TEST_SECONDS:-240}" bash -c tests
[ -f "$out/tests.log" ] && grep -E " (FAILED|ERROR) " "$out/tests.log" | cut -c1-200 | head -40
# the measured part of a benchmark log (bench/log/), from the files above (bench/gpu_report.py)
$py bench/gpu_report.py "$out" > "$out/section.md" 2> "$out/section.err" \
  && echo "section: $out/section.md" || tail -3 "$out/section.err"
pack_out
