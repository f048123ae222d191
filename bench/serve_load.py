"""Load and latency of `nmt serve`: 1, 4 and 16 concurrent clients, each sending single sentences
of a test set one after another, against the same sentences translated as one batch.

    python bench/serve_load.py --run bahdanau=RUN --run transformer=RUN \\
        --src $NMT_DATA_DIR/multi30k/test_2016_flickr.en.gz [--beam 5] [--seconds 30]

Per system:
1. the batch: `Translator.translate` of the first --sentences lines at once, in this process
   before the server starts: the decoding `nmt translate SRC` runs on them (translate_file
   reads up to 10,000 lines as one chunk), without the checkpoint's loading;
2. the server: `nmt serve` started in its own process on 127.0.0.1 (a free port), every
   system loaded once; for each client count, that many clients (asyncio, httpx) each send
   {"text": one sentence, "systems": [name], "beam": B}, wait for the answer and send the
   next, sentences taken in turn from the same lines, for --seconds or --max-requests,
   whichever comes first. Latency: from sending to the whole answer, per request.
Reports p50/p99 latency (ms), sentences/s, and sentences/s as a share of the batch's. Prints
the conditions (date, uptime, lscpu), a markdown table, and writes the numbers as JSON (--out).
Bounded: every level stops at --seconds, the server is stopped with SIGTERM at the end.
"""
from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def read_lines(path: str, n: int) -> list[str]:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [line.rstrip("\n") for _, line in zip(range(n), f)]


def conditions() -> str:
    out = []
    for cmd in (["date", "-u"], ["uptime"], ["sh", "-c", "lscpu | grep -v Flags | head -16"]):
        out.append(subprocess.run(cmd, capture_output=True, text=True).stdout.strip())
    return "\n".join(out)


def batch_rate(run: str, lines: list[str], beam: int, threads: int | None) -> dict:
    import torch

    from nmt.api import Translator

    if threads:
        torch.set_num_threads(threads)
    t = Translator.load(run, device="cpu")
    t.translate(lines[:20], beam=beam)  # warm-up: first-call allocations and autotuning
    t0 = time.perf_counter()
    out = t.translate(lines, beam=beam)
    s = time.perf_counter() - t0
    # output length drives decoding time: a barely trained model that runs to max_len is slow
    words = sum(len(x.split()) for x in out) / max(1, len(out))
    return {"seconds": s, "sent_per_s": len(lines) / s, "threads": _threads(),
            "output_words": words, "source_words": sum(len(x.split()) for x in lines) / len(lines)}


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def load_level(url: str, name: str, lines: list[str], clients: int, beam: int,
                     seconds: float, max_requests: int) -> dict:
    import httpx

    latencies: list[float] = []
    errors = 0
    next_line = 0
    stop = time.perf_counter() + seconds

    async def client(http):
        nonlocal next_line, errors
        while time.perf_counter() < stop and len(latencies) + errors < max_requests:
            text = lines[next_line % len(lines)]
            next_line += 1
            t0 = time.perf_counter()
            r = await http.post(url + "/translate", json={"text": text, "systems": [name],
                                                          "beam": beam})
            if r.status_code == 200:
                latencies.append(time.perf_counter() - t0)
            else:
                errors += 1

    limits = httpx.Limits(max_connections=clients + 4)
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        for k in range(2):  # warm-up, not counted
            await http.post(url + "/translate", json={"text": lines[k], "systems": [name],
                                                      "beam": beam})
        t0 = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        wall = time.perf_counter() - t0
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 \
        if latencies else float("nan")  # noqa: E731
    return {"system": name, "clients": clients, "requests": len(latencies), "errors": errors,
            "seconds": wall, "p50_ms": pick(0.5), "p99_ms": pick(0.99),
            "sent_per_s": len(latencies) / wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", action="append", required=True, help="NAME=RUN_DIR (repeatable)")
    ap.add_argument("--src", required=True, help="source sentences, one per line (.gz too)")
    ap.add_argument("--sentences", type=int, default=1000, help="lines of --src used")
    ap.add_argument("--clients", default="1,4,16")
    ap.add_argument("--beam", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=30.0, help="per level, at most")
    ap.add_argument("--max-requests", type=int, default=1000, help="per level, at most")
    ap.add_argument("--window-ms", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=None, help="torch threads, batch and "
                    "server alike (default: torch's)")
    ap.add_argument("--out", default="bench/serve_load.json")
    a = ap.parse_args()
    lines = read_lines(a.src, a.sentences)
    cond = conditions()
    print(cond, flush=True)
    runs = dict(spec.split("=", 1) for spec in a.run)
    batch = {}
    for name, run in runs.items():
        batch[name] = batch_rate(run, lines, a.beam, a.threads)
        print(f"{name}: batch of {len(lines)} in {batch[name]['seconds']:.1f} s "
              f"({batch[name]['sent_per_s']:.1f} sent/s, {batch[name]['output_words']:.1f} "
              f"output words per sentence, source {batch[name]['source_words']:.1f})", flush=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    threads = ["--threads", str(a.threads)] if a.threads else []
    server = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "serve", *a.run,
                               "--port", str(port), "--device", "cpu", "--window-ms",
                               str(a.window_ms), *threads],
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    rows = []
    try:
        import httpx

        for _ in range(600):
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        for name in runs:
            for c in map(int, a.clients.split(",")):
                r = asyncio.run(load_level(url, name, lines, c, a.beam, a.seconds,
                                           a.max_requests))
                r["share_of_batch"] = r["sent_per_s"] / batch[name]["sent_per_s"]
                rows.append(r)
                print(json.dumps(r), flush=True)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)
    table = ["| system | clients | requests | p50 latency | p99 latency | sentences/s | "
             "share of batch |", "|---|---|---|---|---|---|---|"]
    for name in runs:
        b = batch[name]
        table.append(f"| {name} | batch ({len(lines):,}) | 1 | – | – | "
                     f"{b['sent_per_s']:.1f} | 100% |")
        for r in (r for r in rows if r["system"] == name):
            table.append(f"| {name} | {r['clients']} | {r['requests']} | {r['p50_ms']:.0f} ms | "
                         f"{r['p99_ms']:.0f} ms | {r['sent_per_s']:.1f} | "
                         f"{r['share_of_batch']:.0%} |")
    print("\n".join(table))
    Path(a.out).write_text(json.dumps({"conditions": cond, "batch": batch, "levels": rows,
                                       "beam": a.beam, "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
