"""bench/same_runs.py: two comparison directories judged run by run (hypotheses byte for byte,
best.pt weights, logged figures without timings)."""
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import same_runs  # noqa: E402


def _run(root: Path, name: str, hyp: str, weight: float, losses: list[float], wall: float):
    d = root / "systems" / name
    d.mkdir(parents=True)
    (d / "test.hyp").write_text(hyp, encoding="utf-8")
    (d / "done.json").write_text("{}")
    torch.save({"model": {"w": torch.full((2, 2), weight)}}, d / "best.pt")
    (d / "metrics.jsonl").write_text("".join(
        json.dumps({"kind": "train", "step": 50 * (i + 1), "loss": x, "wall": wall * i}) + "\n"
        for i, x in enumerate(losses)))


def test_same_runs_names_what_differs(tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    _run(old, "same", "a b\n", 1.0, [5.0, 4.0], wall=1.0)
    _run(new, "same", "a b\n", 1.0, [5.0, 4.0], wall=3.0)  # only timings differ
    _run(old, "resumed", "c\n", 2.0, [5.0, 4.0, 3.0], wall=1.0)
    _run(new, "resumed", "c\n", 2.0, [5.0, 4.5, 3.0], wall=1.0)
    _run(old, "changed", "x\n", 1.0, [5.0], wall=1.0)
    _run(new, "changed", "y\n", 1.5, [5.0], wall=1.0)
    _run(old, "unfinished", "z\n", 1.0, [5.0], wall=1.0)
    rows = {r[0]: r for r in same_runs.compare(old, new)}
    assert rows["same"][1].startswith("test: identical") and rows["same"][2:4] == [
        "identical", "identical"]
    assert rows["resumed"][2] == "identical" and rows["resumed"][3] == \
        "2 of 3 identical; differ: train step 100"
    assert "DIFFERENT" in rows["changed"][1] and rows["changed"][2] == "DIFFERENT"
    assert rows["unfinished"][1] == "not finished in both"
