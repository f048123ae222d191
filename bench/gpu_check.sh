#!/usr/bin/env bash
# The GPU check: run it whenever a CUDA machine is at hand (about 10-15 minutes on one H100).
#   NMT_DATA_DIR=... bench/gpu_check.sh [OUT_DIR]        (default runs/gpu-check)
# 1. versions; 2. the RNN recurrences under bf16 autocast (float32 inside, same gradients as
# fp32: bench/gpu_rnn_check.py); 3. the test suite with CUDA visible (the training, resume and
# search tests); 4. T (Transformer) and R (GRU + Bahdanau) of compare-cpu.yaml trained for 400
# updates with bf16 autocast on and off: tok/s and validation loss/BLEU side by side; 5. those
# models decoding test_2016_flickr greedy and with beam 5: BLEU and sentences/s.
# Without CUDA it says so and stops.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/gpu-check}
py=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
if ! $py -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_check: needs a CUDA GPU and a CUDA build of torch (torch.cuda.is_available() is False)" >&2
  exit 2
fi
mkdir -p "$out"
echo "== versions"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
$py -c "import torch, sacrebleu, sentencepiece; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version(), 'sacrebleu', sacrebleu.__version__, 'sentencepiece', sentencepiece.__version__)"
echo "== RNN recurrences under bf16 autocast"
$py bench/gpu_rnn_check.py
echo "== test suite with CUDA visible"
$py -m pytest -q -x tests 2>&1 | tail -3
nmt="$py cli.py"
for sys in transformer bahdanau; do
  for amp in true false; do
    run="$out/$sys-amp-$amp"
    echo "== $sys, 400 updates, train.amp=$amp"
    $nmt compare recipes/multi30k-de-en/compare-cpu.yaml --out "$out/cmp-amp-$amp" --only "$sys" \
      --set train.max_steps=400 --set train.valid_every=200 --set train.amp=$amp --device cuda \
      --quiet > "$run.log" 2>&1 || { tail -5 "$run.log"; exit 1; }
    grep -E "done:|valid step" "$run.log" | tail -3
  done
done
echo "== decoding test_2016_flickr (models trained with amp)"
data=${NMT_DATA_DIR:-$HOME/.cache/nmt}/multi30k
src=$out/test_2016_flickr.de ref=$out/test_2016_flickr.en
zcat "$data/test_2016_flickr.de.gz" > "$src"; zcat "$data/test_2016_flickr.en.gz" > "$ref"
for sys in transformer bahdanau; do
  for beam in 1 5; do
    echo "-- $sys beam $beam"
    $nmt eval --checkpoint "$out/cmp-amp-true/systems/$sys" --src "$src" --ref "$ref" --beam $beam \
      --device cuda 2>&1 | grep -iE "bleu|sent" | head -3
  done
done
