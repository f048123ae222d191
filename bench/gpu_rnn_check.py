"""On a CUDA machine: do the RNN recurrences really run in float32 under bf16 autocast, and do the
RNN weights get the gradients they get without autocast?

    python bench/gpu_rnn_check.py

cuDNN's RNN autocast wrapper casts a GRU/LSTM to *float16* whatever dtype autocast was given, and
without loss scaling small weight gradients flush to zero; nmt runs the recurrences outside
autocast (nmt.encoders.run_rnn). This prints, for a recipe-sized Bahdanau model on random data:
the dtype of a bare nn.GRU under autocast (the hazard), the dtype nmt's recurrences see, and per
RNN weight the cosine between the gradient with and without autocast and the share of elements
that are exactly zero with autocast but not without.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from nmt.config import ModelConfig  # noqa: E402  (after the path: bench/ runs as a script)
from nmt.model import build_model  # noqa: E402


def main() -> None:
    if not torch.cuda.is_available():
        sys.exit("gpu_rnn_check: needs a CUDA GPU (torch.cuda.is_available() is False)")
    dev = torch.device("cuda")
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, cuDNN "
          f"{torch.backends.cudnn.version()}")
    gru = torch.nn.GRU(64, 64, batch_first=True).to(dev)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        bare = gru(torch.randn(2, 3, 64, device=dev))[0].dtype
    print(f"bare nn.GRU under bf16 autocast returns {bare}")

    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="rnn", attention="bahdanau", enc_layers=2,
                                    dec_layers=2, dropout=0.0), 8000, 8000).to(dev)
    seen = []
    for m in model.modules():
        if isinstance(m, torch.nn.RNNBase):
            m.register_forward_hook(lambda mod, args, out: seen.append(
                (out[0].data if hasattr(out[0], "batch_sizes") else out[0]).dtype))
    src = torch.randint(4, 8000, (64, 20), device=dev)
    lengths = torch.randint(5, 21, (64,), device=dev)
    tgt = torch.randint(4, 8000, (64, 22), device=dev)
    grads = {}
    for amp in (False, True):
        model.zero_grad()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            logits, _ = model(src, lengths, tgt)
            loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1),
                                                     tgt.flatten(), reduction="sum") / tgt.numel()
        loss.backward()
        grads[amp] = {n: p.grad.detach().clone() for n, p in model.named_parameters()
                      if ".rnn." in n}
    print(f"recurrence outputs under autocast: {sorted({str(d) for d in seen})}")
    worst = 1.0
    for n, g in grads[False].items():
        a = grads[True][n]
        cos = torch.nn.functional.cosine_similarity(g.flatten(), a.flatten(), dim=0).item()
        lost = ((a == 0) & (g != 0)).float().mean().item()
        worst = min(worst, cos)
        print(f"  {n:42s} cos {cos:.4f}  zero only under amp {lost:.2%}")
    print(f"worst gradient cosine, amp vs fp32: {worst:.4f}")


if __name__ == "__main__":
    main()
