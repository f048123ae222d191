#!/usr/bin/env bash
# The GPU check: run it whenever a CUDA machine is at hand (meant to take under 25 minutes on one
# H100; not yet run on one).
#   NMT_DATA_DIR=... bench/gpu_check.sh [OUT_DIR]        (default runs/gpu-check)
# 1. versions; 2. the RNN recurrences under bf16 autocast (float32 inside, same gradients as
# fp32: bench/gpu_rnn_check.py); 3. exact resume on CUDA: a 2-layer GRU with dropout and a
# Transformer trained with train.deterministic, stopped at a mid-epoch checkpoint and resumed,
# must end with the same weights bit for bit as the run left alone (tests/test_deterministic.py,
# each run in a fresh process), and the GRU without train.deterministic, to say how far it drifts;
# 4. the test suite with CUDA visible (the training, resume and search tests); 5. T
# (Transformer) and R (GRU + Bahdanau) of compare-cpu.yaml trained for 400 updates with bf16
# autocast on and off: tok/s and validation loss/BLEU side by side; 6. those models decoding
# test_2016_flickr greedy and with beam 5, the search in float32 and in bf16: BLEU and
# sentences/s. A failing test step is reported (its log in OUT_DIR) and the measurements go on.
# Without CUDA it says so and stops.
set -euo pipefail
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
echo "== versions"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
$py -c "import torch, sacrebleu, sentencepiece; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version(), 'sacrebleu', sacrebleu.__version__, 'sentencepiece', sentencepiece.__version__)"
echo "== RNN recurrences under bf16 autocast"
$py bench/gpu_rnn_check.py
echo "== exact resume on CUDA (train.deterministic: bit-identical weights required)"
$py -m pytest -q -rs tests/test_deterministic.py tests/test_devices.py > "$out/deterministic.log" \
  2>&1 && tail -1 "$out/deterministic.log" || { tail -30 "$out/deterministic.log"; echo "FAILED"; }
echo "-- the same GRU without train.deterministic: how far does the resumed run drift?"
drift=$out/resume-not-deterministic
rm -rf "$drift"
# the settings of tests/test_deterministic.py, but deterministic off
tiny=(data.max_train_pairs=300 data.max_valid_pairs=10 tokenizer.vocab_size=300
      train.batch_tokens=2000 train.max_epochs=0 train.valid_every=1000 train.checkpoint_every=5
      train.log_every=1 model.enc_layers=2 model.dec_layers=2 model.dropout=0.3
      decode.max_len_a=0 decode.max_len_b=5 train.deterministic=false train.device=cuda)
sets=$(printf -- "--set %s " "${tiny[@]}")
{ $py cli.py train recipes/smoke/bahdanau.yaml --quiet --out "$drift/whole" $sets \
    --set train.max_steps=11 &&
  $py cli.py train recipes/smoke/bahdanau.yaml --quiet --out "$drift/stopped" $sets \
    --set train.max_steps=5 &&
  $py cli.py train --quiet --out "$drift/stopped" --resume --set train.max_steps=11 &&
  $py - "$drift" <<'EOF'
import sys
import torch
a, b = (torch.load(f"{sys.argv[1]}/{n}/last.pt", map_location="cpu", weights_only=False)["model"]
        for n in ("whole", "stopped"))
same = all(torch.equal(a[k], b[k]) for k in a)
worst = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
print(f"bit-identical: {same}; largest weight difference {worst:.3g}")
EOF
} > "$drift.log" 2>&1 && tail -1 "$drift.log" || { tail -10 "$drift.log"; echo "FAILED"; }
echo "== test suite with CUDA visible"
$py -m pytest -q tests > "$out/tests.log" 2>&1 && tail -1 "$out/tests.log" ||
  { grep -E "^(FAILED|ERROR)" "$out/tests.log" | head -20; tail -1 "$out/tests.log"; }
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
    # the search in float32 and under bf16 autocast (decode.amp auto, the default, is bf16 here)
    for amp in false bf16; do
      echo "-- $sys beam $beam, search amp $amp"
      $nmt eval --checkpoint "$out/cmp-amp-true/systems/$sys" --src "$src" --ref "$ref" \
        --beam $beam --amp $amp --device cuda 2>&1 | grep -iE "bleu|sent" | head -3
    done
  done
done
