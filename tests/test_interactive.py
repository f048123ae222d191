"""Interactive translation: at a terminal each line is answered before the next is typed;
piped input is still batched."""
import os
import pty
import select
import subprocess
import sys
from pathlib import Path

import pytest

from nmt import prediction
from nmt.checkpoint import load_for_inference
from nmt.config import DecodeConfig

ROOT = Path(__file__).resolve().parents[1]
LINES = ["Ein Hund läuft im Park.", "", "Zwei Männer spielen Fußball."]


@pytest.fixture(scope="module")
def run_dir(trained_run):
    return trained_run


def _read_line(fd: int, timeout: float = 120.0) -> bytes:
    buf = b""
    while not buf.endswith(b"\n"):
        ready, _, _ = select.select([fd], [], [], timeout)
        assert ready, f"no translation within {timeout}s; got {buf!r}"
        chunk = os.read(fd, 1)
        assert chunk, f"output closed early; got {buf!r}"
        buf += chunk
    return buf


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_a_terminal_gets_each_translation_before_the_next_line(run_dir):
    master, slave = pty.openpty()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "translate", "--checkpoint",
                             str(run_dir), "--beam", "2", "--device", "cpu"], stdin=slave,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    os.close(slave)
    try:
        outs = []
        for line in LINES:
            os.write(master, line.encode() + b"\n")
            # the answer comes while stdin is still open: nothing waits for more input
            outs.append(_read_line(proc.stdout.fileno()))
        os.write(master, b"\x04")  # Ctrl-D: end of input
        assert proc.wait(timeout=60) == 0, proc.stderr.read().decode()
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    model, tok, recipe = load_for_inference(run_dir, "cpu")
    want = prediction.translate_lines(model, tok, LINES, DecodeConfig(beam=2), "cpu")
    assert [o.decode().rstrip("\n") for o in outs] == want


def test_piped_input_is_batched_and_interactive_mode_reads_line_by_line(run_dir, monkeypatch,
                                                                         tmp_path):
    model, tok, _ = load_for_inference(run_dir, "cpu")
    src = tmp_path / "in.de"
    src.write_text("Ein Hund.\nZwei Katzen.\nDrei Vögel.\n", encoding="utf-8")
    sizes = []
    real = prediction._decode

    def spy(model, tok, lines, *args, **kwargs):
        sizes.append(len(lines))
        return real(model, tok, lines, *args, **kwargs)
    monkeypatch.setattr(prediction, "_decode", spy)
    dcfg = DecodeConfig(beam=1)
    prediction.translate_file(model, tok, src, tmp_path / "batched.en", dcfg, "cpu")
    assert sizes == [3]
    sizes.clear()
    prediction.translate_file(model, tok, src, tmp_path / "live.en", dcfg, "cpu",
                              interactive=True)
    assert sizes == [1, 1, 1]
    assert (tmp_path / "live.en").read_text() == (tmp_path / "batched.en").read_text()
