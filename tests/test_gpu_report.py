"""bench/gpu_report.py turns what bench/gpu_check.sh leaves in its output directory into the
tables of a RESULTS.md section: every measured figure lands in its row, failures are named."""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import gpu_report  # noqa: E402


def gpu_check_dir(tmp_path: Path) -> Path:
    out = tmp_path / "gpu-check"
    (out / "cmp" / "systems" / "bahdanau").mkdir(parents=True)
    (out / "versions.log").write_text("NVIDIA X1, 80000 MiB, 1.0, 300 MHz, 2000 MHz\n"
                                      "torch 9.9+cu1 cuda 1.0\n16\nnot installed: datasets\n")
    (out / "steps.log").write_text("versions\tok\t1\ntests\tCUT at 240s\t240\n")
    (out / "rnn-bf16.log").write_text("...\nworst gradient cosine, amp vs fp32: 0.9990\n")
    (out / "ddp.log").write_text(
        "2026-12-05 10:00:00 done: reached max_steps=60; 60 updates, best BLEU 1.20, 90,000 "
        "target tok/s, 9s; best.pt and last.pt in /x/ddp-1gpu\n"
        "2026-12-05 10:00:20 done: reached max_steps=60; 60 updates, best BLEU 1.19, 153,000 "
        "target tok/s, 6s; best.pt and last.pt in /x/ddp-2gpu\n")
    (out / "tests.log").write_text(
        "tests/test_a.py::test_x PASSED\n"
        "[gw1] [ 45%] FAILED tests/test_b.py::test_y \n"
        "tests/test_d.py::test_w[cuda] FAILED                      [ 50%]\n"
        "======= 7 passed, 2 skipped in 9.1s =======\n"
        "FAILED tests/test_b.py::test_y - AssertionError: boom\n"
        "ERROR tests/test_c.py::test_z - RuntimeError: CUDA\n"
        "======= 1 failed, 40 passed, 1 error in 99.0s =======\n")
    row = {"bf16": True, "batch_tokens": 4096, "cut": False, "epoch_s": 4.87, "ms_update": 36.6,
           "tok_s": 92733.2, "mfu": 0.013, "peak_gib": 1.17, "loss_first": 7.5,
           "loss_last": 4.7}
    (out / "train.json").write_text(json.dumps({
        "device": "NVIDIA X1", "peak_tflops": {"bf16": 789.4, "tf32": 403.2},
        "train": [{"model": "T-recipe", **row}, {"model": "R-recipe", **row, "cut": True},
                  {"model": "T", "bf16": False, "error": "RuntimeError: out of memory"}]}))
    on = {"graphs": True, "graphs_captured": 57, "capture_s": 12.25, "padding_extra": 0.163}
    (out / "graphs.json").write_text(json.dumps({
        "device": "NVIDIA X1", "peak_tflops": {"bf16": 789.4, "tf32": 403.2},
        "train": [{"model": "R-recipe", **row, "bf16": False, "graphs": False},
                  {"model": "R-recipe", **row, "bf16": False, **on, "tok_s": 185466.4},
                  {"model": "base", **row, "epoch_s": None, "graphs": False},
                  {"model": "base", "bf16": True, "graphs": True, "error": "RuntimeError: x"}]}))
    (out / "decode.json").write_text(json.dumps({"device": "NVIDIA X1", "decode": [
        {"run": "/x/transformer/", "beam": b, "amp": amp, "batch_tokens": bt,
         "seconds": 0.1 * b + bt / 1e5 + (0.003 if amp else 0.0), "bleu": 30 + b}
        for b in (1, 5) for amp in ("bf16", False) for bt in (1024, 65536)]}))
    (out / "cmp" / "systems" / "bahdanau" / "done.json").write_text(json.dumps(
        {"device": "NVIDIA X1", "epochs": 4.878, "time": 74.6, "best_bleu": 35.56}))
    (out / "cmp" / "results.json").write_text(json.dumps(
        {"systems": {"bahdanau": {"tests": {"test_2016_flickr": {"bleu": 38.46}}}}}))
    return out


def test_every_measured_figure_lands_in_its_table(tmp_path):
    out = gpu_check_dir(tmp_path)
    text = "\n".join(gpu_report.section(out, None))
    assert "GPU, NVIDIA X1" in text and "16 CPU cores" in text
    assert "not installed: datasets" in text and "bf16 789 TFLOP/s, TF32 403" in text
    assert "tests CUT at 240s (240 s)" in text and "0.9990" in text
    assert "accumulating 2 batches 90,000 target tok/s, 2 GPUs 153,000 (1.70x)" in text
    (out / "ddp.log").write_text("1 GPU: no DDP to run\n")  # a machine with one GPU
    assert "- DDP: 1 GPU: no DDP to run" in gpu_report.section(out, None)
    assert "7 passed, 2 skipped in 9.1s; 1 failed, 40 passed, 1 error in 99.0s" in text
    named = [r for r in text.splitlines() if r.startswith("  - ")]
    assert named == ["  - FAILED tests/test_b.py::test_y",
                     "  - FAILED tests/test_d.py::test_w[cuda]",
                     "  - ERROR tests/test_c.py::test_z"]
    assert "| T-recipe | 4,096 | bf16 | 92,733 | 36.6 | 4.9 s | 1.30% | 1.17 |" in text
    assert "4.9 s (cut, extrapolated)" in text and "failed: RuntimeError: out of memory" in text
    assert "| bahdanau | NVIDIA X1 | 4.9 | 75 s | 35.56 | 38.46 |" in text
    # CUDA graphs: off and on side by side, the speed-up, what capturing cost, the padding
    assert "| R-recipe | 4,096 | float32 (TF32) | off | 92,733 | 36.6 | 1.30% |  |  |  |" in text
    assert "| R-recipe | 4,096 | float32 (TF32) | on | 185,466 | 36.6 | 1.30% | 2.00x | " \
        "57 (12.2 s) | +16% | 7.500 -> 4.700 |" in text
    assert "| base | 4,096 | bf16 | off | 92,733 |" in text
    assert "| base | | bf16 | on | failed: RuntimeError: x |" in text
    # decoding: one row per model and search, one column per precision and batch size, bf16 first
    table = [r for r in text.splitlines() if r.startswith("| transformer |")]
    assert [r.split(" | ")[1] for r in table] == ["greedy", "beam 5"]
    header = next(r for r in text.splitlines() if r.startswith("| model | search |"))
    assert header.endswith("bf16, 1,024 | bf16, 65,536 | float32, 1,024 | float32, 65,536 |")
    d = json.loads((out / "decode.json").read_text())["decode"]
    for r in d:
        assert f"{r['seconds']:.2f} s ({r['bleu']:.2f})" in text


def test_written_section_becomes_a_dated_log_and_never_replaces_one(tmp_path, monkeypatch):
    out = gpu_check_dir(tmp_path)
    log = tmp_path / "log"
    monkeypatch.setattr(gpu_report, "LOG", log)
    monkeypatch.setattr(sys, "argv", ["gpu_report.py", str(out), "--write"])
    gpu_report.main()
    gpu_report.main()  # the same day again: a second log beside the first
    first, second = sorted(log.iterdir(), key=lambda p: len(p.name))
    assert first.name.endswith("-gpu.md") and second.name == first.name[:-3] + "-2.md"
    assert first.name[:10] == first.read_text().removeprefix("# ")[:10]  # dated by its heading
    assert "GPU, NVIDIA X1" in first.read_text() and first.read_text() == second.read_text()
