"""Which RNN initialisation learns fastest: every RNN system of a comparison, a few hundred
updates per initialisation scheme and seed, validation BLEU and loss along the way.

    .venv/bin/python bench/init_sweep.py                       # the published sweep (GPU: minutes)
    .venv/bin/python bench/init_sweep.py --steps 40 --valid-every 20 --seeds 1 \
        --systems none --schemes torch,all --jobs 1 --max-valid 100   # a smoke run

Each scheme is a list of nmt/initialization.py steps (`model.init`): `torch` keeps torch's
defaults (random biases), the others add zero biases, Glorot input/projection weights per gate,
orthogonal recurrent weights per gate and, for Luong general, W = I. Each run is `nmt train` of
the system's recipe with `--set model.init=... train.seed=...`, stopped after --steps updates;
every run shares one tokenizer. Runs go to concurrent worker processes (--jobs): on a GPU one
RNN run leaves most of the card idle (the decoder is a loop of small steps), so several share it.
Writes OUT/results.json and prints a table: validation BLEU at each validation step, averaged
over seeds (and the seeds' spread), per system and scheme.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nmt.config import load_recipe  # noqa: E402  (after the path: bench/ runs as a script)

SCHEMES = {
    "torch": [],
    "zero_bias": ["zero_bias"],
    "xavier": ["zero_bias", "xavier"],
    "xavier_orth": ["zero_bias", "xavier", "orthogonal"],
    "all": ["zero_bias", "xavier", "orthogonal", "identity_general"],
}
SYSTEMS = {"none": "no-attention", "bahdanau": "bahdanau", "luong-dot": "luong-dot",
           "luong-general": "luong-general", "luong-concat": "luong-concat"}


def _run(job: dict) -> dict:
    import torch

    from nmt.tokenizer import Tokenizer
    from nmt.training import train

    torch.set_num_threads(job["threads"])
    recipe = load_recipe(job["recipe"], job["overrides"])
    t0 = time.time()
    summary = train(recipe, Path(job["out"]), overwrite=True, quiet=True,
                    tokenizer=Tokenizer.load(Path(job["tokenizer"])))
    curve = [r for r in map(json.loads, (Path(job["out"]) / "metrics.jsonl").open())
             if "val_bleu" in r]
    return {**{k: job[k] for k in ("system", "scheme", "seed")}, "wall": time.time() - t0,
            "tokens_per_s": summary["tokens_per_s"],
            "curve": [(r["step"], r["val_bleu"], r["val_loss"]) for r in curve]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipes", default=str(ROOT / "recipes/multi30k-de-en"))
    ap.add_argument("--out", default=str(ROOT / "runs/init-sweep"))
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--schemes", default="torch,zero_bias,xavier,xavier_orth,all")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--valid-every", type=int, default=100)
    ap.add_argument("--max-valid", type=int, default=0, help="validation sentences (0 = all)")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="CPU threads per run")
    ap.add_argument("--set", action="append", default=[], help="extra recipe overrides")
    a = ap.parse_args()

    out = Path(a.out)
    tok_dir = out / "tokenizer"
    systems, schemes = a.systems.split(","), a.schemes.split(",")
    first = load_recipe(Path(a.recipes) / f"{SYSTEMS[systems[0]]}.yaml")
    if not any(tok_dir.glob("*.model")):
        from nmt.data import load_split
        from nmt.tokenizer import Tokenizer
        train = load_split(first.data, first.data.train)
        Tokenizer.train(train.src, train.tgt, tok_dir, first.tokenizer)
    jobs = []
    for system in systems:
        for scheme in schemes:
            # identity_general only touches Luong general: elsewhere `all` is `xavier_orth`
            if scheme == "all" and system != "luong-general" and "xavier_orth" in schemes:
                continue
            for seed in range(1, a.seeds + 1):
                steps = ",".join(SCHEMES[scheme])
                jobs.append({"system": system, "scheme": scheme, "seed": seed,
                             "threads": a.threads, "tokenizer": str(tok_dir),
                             "recipe": str(Path(a.recipes) / f"{SYSTEMS[system]}.yaml"),
                             "out": str(out / f"{system}-{scheme}-{seed}"),
                             "overrides": [f"model.init=[{steps}]", f"train.seed={seed}",
                                           f"train.max_steps={a.steps}", "train.max_epochs=0",
                                           f"train.valid_every={a.valid_every}",
                                           "train.patience=0",
                                           f"data.max_valid_pairs={a.max_valid}", *a.set]})
    jobs.sort(key=lambda j: j["seed"])      # every cell's first seed first: a cut-off sweep
    t0 = time.time()                        # still covers every cell
    results = []
    with ProcessPoolExecutor(a.jobs, mp_context=get_context("spawn")) as pool:
        for done in as_completed([pool.submit(_run, j) for j in jobs]):
            results.append(done.result())
            (out / "results.json").write_text(json.dumps(results, indent=1))
    print(f"{len(jobs)} runs in {time.time() - t0:.0f} s\n")
    print(table(results))


def table(results: list[dict]) -> str:
    """Markdown: validation BLEU at each validation step, mean over seeds (+- half the range)."""
    steps = sorted({s for r in results for s, _, _ in r["curve"]})
    rows = ["| system | init | " + " | ".join(f"BLEU@{s}" for s in steps) + " | loss@end |",
            "|---" * (len(steps) + 3) + "|"]
    groups: dict[tuple, list] = {}
    for r in results:
        groups.setdefault((r["system"], r["scheme"]), []).append(r)
    for (system, scheme), rs in groups.items():
        cells = []
        for s in steps:
            v = [b for r in rs for st, b, _ in r["curve"] if st == s]
            cells.append(f"{statistics.mean(v):.1f} ± {(max(v) - min(v)) / 2:.1f}" if v else "")
        loss = statistics.mean(r["curve"][-1][2] for r in rs if r["curve"])
        rows.append(f"| {system} | {scheme} | " + " | ".join(cells) + f" | {loss:.3f} |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
