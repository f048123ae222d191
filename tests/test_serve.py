"""`nmt serve` (nmt/serve.py): the HTTP API against the app (TestClient), batching of requests
that arrive together, every bad request answered with its status and a JSON error, and a real
uvicorn process that finishes its request in flight on SIGTERM."""
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers_ckpt import multi30k_lines

from nmt.errors import NMTError
from nmt.serve import Batcher, Limits, create_app, load_systems, parse_runs

pytest.importorskip("fastapi", reason="nmt serve needs FastAPI: pip install 'nmt[serve]'")
pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx: pip install 'nmt[test]'")
from fastapi.testclient import TestClient  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def systems(trained_run, trained_rnn_run):
    return load_systems([f"t={trained_run}", f"rnn={trained_rnn_run}"], "cpu")


@pytest.fixture(scope="module")
def client(systems):
    with TestClient(create_app(systems, Limits(max_texts=5, max_chars=200, max_body=4000,
                                               window_ms=1))) as c:
        yield c


@pytest.fixture(scope="module")
def lines(data_dir):
    return multi30k_lines(data_dir, "val", "de", 4)


def test_runs_are_named_by_folder_or_name(tmp_path):
    assert parse_runs([str(tmp_path / "a"), "b=x/y", str(tmp_path / "c" / "best.pt")]) == [
        ("a", tmp_path / "a"), ("b", Path("x/y")), ("c", tmp_path / "c" / "best.pt")]
    with pytest.raises(NMTError, match="NAME=RUN"):
        parse_runs(["x/a", "y/a"])


def test_systems_and_health(client):
    s = client.get("/systems").json()
    assert [x["name"] for x in s] == ["t", "rnn"]
    assert [(x["family"], x["attention"]) for x in s] == [("transformer", "multi-head"),
                                                          ("rnn", "bahdanau")]
    assert all(x["params"] > 0 for x in s)
    assert client.get("/health").json()["status"] == "ok"
    page = client.get("/")
    assert page.status_code == 200 and "/static/view.js" in page.text
    assert client.get("/static/view.js").status_code == 200


def test_translations_are_the_translators(client, systems, lines):
    r = client.post("/translate", json={"texts": lines + [""], "beam": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["systems"] == ["t", "rnn"] and "attention" not in body
    for name, s in systems.items():
        assert body["translations"][name] == s.translator.translate(lines + [""], beam=3)
    one = client.post("/translate", json={"text": lines[0] + "\n" + lines[1], "systems": ["t"]})
    t = systems["t"].translator
    assert one.json()["translations"] == {"t": ["\n".join(t.translate(lines[:2]))]}


def test_attention_per_system(client, systems, lines):
    body = client.post("/translate", json={"text": lines[0], "attention": True}).json()
    for name, kind in (("t", "transformer"), ("rnn", "rnn")):
        a = body["attention"][name][0]
        assert a["kind"] == kind and a["translation"] == body["translations"][name][0]
        w = a["weights"] if kind == "rnn" else a["weights"][-1][0]  # (T, S)
        assert len(w) == len(a["target"]) and len(w[0]) == len(a["source"])
        assert all(abs(sum(row) - 1) < 0.01 for row in w)


BAD = [  # (body bytes, status, words the error must contain)
    (b'{"text": "Ein Hund", "beam": 0}', 422, "beam"),
    (b'{"text": "Ein Hund", "beam": "5"}', 422, "beam"),
    (b'{"text": "Ein Hund", "alpha": -1}', 422, "alpha"),
    (b'{"text": "Ein Hund", "max_len": "long"}', 422, "max_len"),
    (b'{"text": "Ein Hund", "systems": ["nope"]}', 422, "unknown system 'nope'"),
    (b'{"text": "Ein Hund", "colour": 1}', 422, "unknown field 'colour'"),
    (b'{"texts": "Ein Hund"}', 422, "list of strings"),
    (b'{"text": 5}', 422, "string"),
    (b'{}', 422, "either"),
    (b'[1, 2]', 422, "JSON object"),
    (b'{"text": "Ein', 422, "not valid JSON"),
    (b'{"text": "\xff\xfe"}', 422, "not valid UTF-8"),
    (json.dumps({"texts": ["a"] * 6}).encode(), 413, "at most 5"),
    (json.dumps({"text": "a" * 201}).encode(), 413, "201 characters"),
    (json.dumps({"text": "a" * 5000}).encode(), 413, "request body over"),
]


@pytest.mark.parametrize("body,status,words", BAD, ids=[w for _, _, w in BAD])
def test_bad_requests_get_a_clear_error_and_the_server_goes_on(client, body, status, words):
    r = client.post("/translate", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == status and words in r.json()["error"], r.text
    ok = client.post("/translate", json={"text": "Ein Hund.", "systems": ["rnn"], "beam": 1})
    assert ok.status_code == 200 and len(ok.json()["translations"]["rnn"]) == 1


def test_requests_arriving_together_are_decoded_as_one_batch(systems, lines):
    """Eight single-sentence requests: fewer decoding calls than requests, and each gets what
    it would have got alone."""
    t = systems["rnn"].translator
    alone = [t.translate([x], beam=2) for x in lines * 2]
    calls = []
    original = t.translate

    def counting(texts, **kw):
        calls.append(len(texts))
        return original(texts, **kw)

    async def main():
        b = Batcher(systems, Limits(window_ms=20))
        b.start()
        try:
            return await asyncio.gather(*(b.translate("rnn", [x], {"beam": 2})
                                          for x in lines * 2))
        finally:
            await b.stop()

    t.translate = counting
    try:
        got = asyncio.run(main())
    finally:
        del t.translate
    assert got == alone and sum(calls) == 8 and len(calls) < 8


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sigterm_finishes_the_request_in_flight(trained_run, lines):
    import httpx

    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # a long batching window keeps the request in flight while SIGTERM arrives
    p = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "serve", str(trained_run),
                          "--port", str(port), "--device", "cpu", "--window-ms", "500"],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        result = {}
        thread = threading.Thread(target=lambda: result.update(r=httpx.post(
            url + "/translate", json={"texts": lines, "beam": 2}, timeout=60)))
        thread.start()
        for _ in range(300):  # until the server holds the request
            if httpx.get(url + "/health", timeout=5).json()["in_flight"]:
                break
            time.sleep(0.02)
        p.send_signal(signal.SIGTERM)
        thread.join(60)
        # uvicorn re-raises the signal once it has drained, so the exit says what ended it
        assert p.wait(30) in (0, -signal.SIGTERM)
        r = result["r"]
        assert r.status_code == 200 and len(r.json()["translations"][trained_run.name]) == 4
        assert "Traceback" not in p.stdout.read()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_without_fastapi_the_error_says_what_to_install(monkeypatch):
    from nmt.serve import require_serve

    monkeypatch.setitem(sys.modules, "fastapi", None)  # import fastapi now raises ImportError
    with pytest.raises(NMTError, match=r"pip install 'nmt\[serve\]'"):
        require_serve()
    from typer.testing import CliRunner

    from cli import app

    r = CliRunner().invoke(app, ["serve", "some/run"])
    assert r.exit_code == 2 and "pip install 'nmt[serve]'" in " ".join(r.output.split())


def test_systems_show_the_bleu_the_run_recorded(tmp_path):
    from nmt.serve import recorded_bleu

    run = tmp_path / "cmp" / "systems" / "bahdanau"
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in (
        {"kind": "train", "step": 1}, {"kind": "valid", "val_bleu": 20.0},
        {"kind": "valid", "val_bleu": 25.5})) + "\n")
    (tmp_path / "cmp" / "results.json").write_text(json.dumps(
        {"systems": {"bahdanau": {"tests": {"test_2016_flickr": {"bleu": 30.123}}}}}))
    assert recorded_bleu(run) == {"validation": 25.5, "test_2016_flickr": 30.12}
    assert recorded_bleu(run / "best.pt") == recorded_bleu(run)
    assert recorded_bleu(tmp_path / "nothing") == {}


def test_a_large_request_does_not_hold_back_the_others_beyond_one_batch(systems, lines):
    """A request of many batches goes one batch at a time, and a sentence sent meanwhile is
    answered before that request ends; both get the translations they would get alone."""
    from dataclasses import replace

    t = systems["rnn"].translator
    big = lines * 3                              # 12 sentences, about 4 batches at 60 tokens
    alone_big, alone_one = t.translate(big, beam=1), t.translate([lines[1]], beam=1)
    finished = []

    async def main():
        b = Batcher(systems, Limits(window_ms=0))
        b.start()

        async def send(name, texts, delay):
            await asyncio.sleep(delay)
            out = await b.translate("rnn", texts, {"beam": 1})
            finished.append(name)
            return out

        try:
            return await asyncio.gather(send("big", big, 0), send("one", [lines[1]], 0))
        finally:
            await b.stop()

    old = t.decode
    t.decode = replace(old, batch_tokens=60)
    try:
        got_big, got_one = asyncio.run(main())
    finally:
        t.decode = old
    assert got_big == alone_big and got_one == alone_one
    assert finished == ["one", "big"]
