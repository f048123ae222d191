"""`nmt compare`: RNN vs RNN+attention vs attention-only, end to end, in one resumable command.

A comparison recipe names `systems`, each a recipe file and/or `set:` overrides (recipe.py:
`load_comparison` resolves and checks them all). `run` (runs.py) builds the shared tokenizer,
trains and decodes every system, `collect` (results.py) scores them and gathers everything the
report shows, and report.py writes it. The work is laid out so that re-running after an
interruption loses nothing already done (stale.py decides what may be reused):

    DIR/tokenizer/                    built once, shared by every system (+ settings.json)
    DIR/heldout/                      valid/test pairs held out of a corpus without such splits
    DIR/systems/NAME/                 a normal `nmt train` run directory (+ done.json when finished)
    DIR/systems/NAME/SPLIT.hyp        decoded test sets (+ SPLIT.json: what was decoded, how, time)
    DIR/systems/NAME-seedK/           with `seeds: N` (or --seeds N), runs K = 1..N-1 of NAME
    DIR/systems/NAME.log              with --jobs: the output of NAME's own process
    DIR/results.json, DIR/attention.json (the heatmaps' weights), DIR/report.md, DIR/*.png

With --jobs N, N runs train at once, each in its own process (on one GPU the whole comparison
then takes about the time of its slowest system).

With N seeds every system is trained N times: run K (0..N-1) with train.seed + K, so run 0 is
the system's own recipe in its usual directory, and going from 1 seed to N (or N to N+1) trains
only the new runs. The report then gives means and standard deviations over the seeds, learning
curves with a band, and a significance test that resamples both sentences and seeds
(evaluation.seed_bootstrap).

Nothing is reused unless it is what the comparison asks for now: the tokenizer only when its
settings and training data are the same, a trained system only when its resolved recipe (all but
decoding, test sets and device) equals the one it was trained with, a hypothesis file only when
it was decoded from the same source lines with the same decoding settings. A changed tokenizer or
system is an error naming the change unless --retrain is given; changed decoding or test sets
are simply decoded again. eval (the BLEU tokenizer, docs/scoring.md) counts as training, since
validation BLEU chose best.pt and when to stop; the test scores are computed afresh from the
hypothesis files on every run.
"""
from nmt.compare.recipe import Comparison, SeedRun, load_comparison, seed_runs
from nmt.compare.results import collect, curve_band, design, length_buckets, quantile_edges
from nmt.compare.runs import Job, build_tokenizer, run

__all__ = ["Comparison", "SeedRun", "load_comparison", "seed_runs", "Job", "run",
           "build_tokenizer", "collect", "design", "curve_band", "length_buckets",
           "quantile_edges"]
