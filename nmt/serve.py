"""`nmt serve`: trained runs behind an HTTP API (FastAPI + uvicorn, `pip install 'nmt[serve]'`),
with a page at `/` that shows every system's translation and attention side by side.

    POST /translate  {"text": str | "texts": [str], "systems": [name], "beam": int,
                      "alpha": float, "max_len": "1.5x+10", "attention": bool}
                     -> {"systems": [...], "translations": {name: [str per text]},
                         "attention": {name: [per text {source, target, kind, weights}]}}
    GET  /systems    -> [{name, family, attention, params, bleu, path}]
    GET  /health     -> {"status": "ok", "systems": n, "in_flight": n, "queued": n}

Each run is loaded once. Requests for the same system and options that arrive together are
decoded as one batch (`Batcher`: the first waits `window_ms` for company, then the batch takes
what is queued up to decode.batch_tokens source tokens), so many single-sentence clients get
close to the throughput of one big batch; decoding runs in one worker thread, one batch at a
time, and a request larger than one batch is queued a batch at a time, so others that arrive
meanwhile wait for one of its batches, not for all of it. Every bad request is answered with
a JSON {"error": ..., "field": ...} and a 413 (too large) or 422 (not valid) status; nothing a
client sends stops the server. SIGTERM (uvicorn's graceful shutdown) stops accepting, finishes
the requests in flight, then exits.
"""

import asyncio
import json
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nmt import layout
from nmt.api import Translator
from nmt.distributed import decode_batch_tokens
from nmt.errors import NMTError

STATIC = Path(__file__).parent / "static"
OPTIONS = ("beam", "alpha", "max_len")  # decoding options a request may set


@dataclass
class Limits:
    max_texts: int = 64               # texts per request (413 beyond)
    max_chars: int = 2000             # characters per text (413 beyond)
    max_body: int = 1_000_000         # bytes per request body (413 beyond)
    max_beam: int = 16                # widest beam a request may ask for (422 beyond)
    max_attention_texts: int = 8      # texts per request with "attention": true (413 beyond)
    window_ms: float = 5.0            # how long a lone request waits for others to batch with


def require_serve() -> None:
    """FastAPI and uvicorn are an optional extra; say how to get them."""
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise NMTError(f"nmt serve needs FastAPI and uvicorn ({e.name} is not installed): "
                       "pip install 'nmt[serve]'") from None


class RequestError(Exception):
    """A bad request: its HTTP status, message and the JSON field at fault."""

    def __init__(self, status: int, message: str, field: str | None = None):
        super().__init__(message)
        self.status, self.message, self.field = status, message, field


@dataclass
class System:
    name: str
    translator: Any                  # nmt.api.Translator
    path: Path
    bleu: dict = field(default_factory=dict)

    def info(self) -> dict:
        t = self.translator
        return {"name": self.name, "family": t.family, "attention": t.attention_kind,
                "params": t.params, "bleu": self.bleu, "path": str(self.path)}


def parse_runs(specs: list[str]) -> list[tuple[str, Path]]:
    """RUN or NAME=RUN -> (name, path); the name defaults to the run folder's (a .pt file: its
    folder's), and two systems may not share one."""
    out: list[tuple[str, Path]] = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = "", spec
        p = Path(path)
        name = name or (p.parent.name if p.suffix == ".pt" else p.resolve().name)
        if any(n == name for n, _ in out):
            raise NMTError(f"{spec}: a second system named {name!r}; name them: NAME=RUN")
        out.append((name, p))
    if not out:
        raise NMTError("give at least one run directory (or .pt) to serve")
    return out


def recorded_bleu(path: Path) -> dict:
    """What the run recorded: its best validation BLEU (metrics.jsonl) and, in a comparison's
    systems/NAME/, each test set's BLEU from the comparison's results.json."""
    run = path if path.is_dir() else path.parent
    out: dict = {}
    try:
        vals = [r["val_bleu"] for r in map(json.loads, (run / layout.METRICS).read_text(
            encoding="utf-8").splitlines()) if r.get("kind") == "valid" and "val_bleu" in r]
        if vals:
            out["validation"] = round(max(vals), 2)
        comparison = layout.ComparisonDir.of_system(run)
        if comparison is not None and comparison.results.is_file():
            results = json.loads(comparison.results.read_text())
            tests = results["systems"].get(run.name, {}).get("tests", {})
            out.update({split: round(t["bleu"], 2) for split, t in tests.items() if "bleu" in t})
    except (OSError, ValueError, KeyError, TypeError):
        pass  # a run without records (or with odd ones) is still served
    return out


def load_systems(specs: list[str], device: str = "auto") -> dict[str, System]:

    systems = {}
    for name, path in parse_runs(specs):
        systems[name] = System(name, Translator.load(path, device=device), path,
                               recorded_bleu(path))
    return systems


def attention_json(a, digits: int = 3) -> dict:
    """An Attention as the page reads it: weights rounded (enough for a heatmap, a fraction
    of the bytes), kind rnn ((T, S)), transformer ((L, H, T, S)) or none."""
    w = a.weights
    kind = "none" if w is None else ("transformer" if w.dim() == 4 else "rnn")
    return {"source": a.source, "target": a.target, "translation": a.translation, "kind": kind,
            "weights": None if w is None else w.double().mul(10 ** digits).round().div(10 ** digits)
            .tolist()}


# ---------------------------------------------------------------------------- batching

@dataclass
class _Job:
    system: str
    texts: list[str]
    options: dict
    future: asyncio.Future
    tokens: int = 0


class Batcher:
    """Queues translation jobs and decodes those of one system and one set of options together,
    in one worker thread (torch uses the cores within each batch)."""

    def __init__(self, systems: dict[str, System], limits: Limits):
        self.systems, self.limits = systems, limits
        self.queue: asyncio.Queue[_Job] = asyncio.Queue()
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nmt-decode")
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
        self.pool.shutdown(wait=True)

    async def translate(self, system: str, texts: list[str], options: dict) -> list[str]:
        """The texts' translations. A request larger than one batch goes to the queue one
        batch-sized part at a time, each part queued once the previous one is done, so the
        requests that arrive meanwhile are decoded between its parts instead of after all."""
        t = self.systems[system].translator
        budget, out = _budget(t), []
        sizes = [len(x) + 1 for x in t.tok.encode_src(texts)]  # source tokens with EOS
        start = 0
        while start < len(texts) or not texts:
            end, tokens = start, 0
            while end < len(texts) and (end == start or tokens + sizes[end] <= budget):
                tokens += sizes[end]
                end += 1
            job = _Job(system, texts[start:end], options,
                       asyncio.get_running_loop().create_future(), tokens)
            await self.queue.put(job)
            out += await job.future
            if not texts:
                break
            start = end
        return out

    async def run(self, fn, *args):
        """Run fn in the decoding thread (between batches), e.g. an attention request."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    async def _loop(self) -> None:
        pending: list[_Job] = []
        while True:
            if not pending:
                pending.append(await self.queue.get())
                if self.queue.empty() and self.limits.window_ms > 0:
                    await asyncio.sleep(self.limits.window_ms / 1000)
            while not self.queue.empty():
                pending.append(self.queue.get_nowait())
            first = pending[0]
            key = (first.system, json.dumps(first.options, sort_keys=True))
            t = self.systems[first.system].translator
            budget = _budget(t)
            batch, rest, tokens = [], [], 0
            for job in pending:  # the oldest job's system and options, up to the budget
                same = (job.system, json.dumps(job.options, sort_keys=True)) == key
                if same and (not batch or tokens + job.tokens <= budget):
                    batch.append(job)
                    tokens += job.tokens
                else:
                    rest.append(job)
            pending = rest
            texts = [x for job in batch for x in job.texts]
            try:
                out = await self.run(lambda: t.translate(texts, **first.options))
            except Exception as e:  # any failure is answered to its clients; the loop goes on
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(e)
                continue
            k = 0
            for job in batch:
                if not job.future.done():  # a client that left has cancelled its future
                    job.future.set_result(out[k:k + len(job.texts)])
                k += len(job.texts)


def _budget(t) -> int:

    return decode_batch_tokens(t.decode.batch_tokens, t.device)


# ---------------------------------------------------------------------------- requests

def parse_request(body: bytes, systems: dict[str, System], limits: Limits) -> dict:
    """The checked request: texts, systems, options, attention; a RequestError names what is
    wrong."""
    if len(body) > limits.max_body:
        raise RequestError(413, f"request body over {limits.max_body:,} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RequestError(422, f"request body is not valid UTF-8 (byte {e.start}: {e.reason})")
    try:
        req = json.loads(text)
    except json.JSONDecodeError as e:
        raise RequestError(422, f"request body is not valid JSON ({e.msg} at line {e.lineno}, "
                           f"column {e.colno})")
    if not isinstance(req, dict):
        raise RequestError(422, "request body must be a JSON object, e.g. {\"text\": \"...\"}")
    unknown = sorted(set(req) - {"text", "texts", "systems", "attention", *OPTIONS})
    if unknown:
        raise RequestError(422, f"unknown field {unknown[0]!r}; fields: text or texts, "
                           f"systems, attention, {', '.join(OPTIONS)}", unknown[0])
    if ("text" in req) == ("texts" in req):
        raise RequestError(422, "give either \"text\" (one string) or \"texts\" (a list of "
                           "strings)", "text")
    if "text" in req:
        texts, where = [req["text"]], "text"
        if not isinstance(req["text"], str):
            raise RequestError(422, "\"text\" must be a string", "text")
    else:
        texts, where = req["texts"], "texts"
        if not isinstance(texts, list) or not all(isinstance(x, str) for x in texts):
            raise RequestError(422, "\"texts\" must be a list of strings", "texts")
    if len(texts) > limits.max_texts:
        raise RequestError(413, f"{len(texts)} texts in one request; at most "
                           f"{limits.max_texts}", where)
    for i, x in enumerate(texts):
        if len(x) > limits.max_chars:
            raise RequestError(413, f"{where}[{i}] has {len(x):,} characters; at most "
                               f"{limits.max_chars:,} per text", where)
    names = req.get("systems", list(systems))
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise RequestError(422, "\"systems\" must be a non-empty list of system names",
                           "systems")
    for n in names:
        if n not in systems:
            raise RequestError(422, f"unknown system {n!r}; loaded: {', '.join(systems)}",
                               "systems")
    attention = req.get("attention", False)
    if not isinstance(attention, bool):
        raise RequestError(422, "\"attention\" must be true or false", "attention")
    if attention and len(texts) > limits.max_attention_texts:
        raise RequestError(413, f"attention for {len(texts)} texts; at most "
                           f"{limits.max_attention_texts} per request", "attention")
    options = {k: req[k] for k in OPTIONS if k in req and req[k] is not None}
    beam = options.get("beam")
    if beam is not None and (isinstance(beam, bool) or not isinstance(beam, int)
                             or not 1 <= beam <= limits.max_beam):
        raise RequestError(422, f"\"beam\" must be a whole number from 1 to {limits.max_beam}",
                           "beam")
    alpha = options.get("alpha")
    if alpha is not None and (isinstance(alpha, bool) or not isinstance(alpha, (int, float))
                              or not math.isfinite(alpha) or not 0 <= alpha <= 10):
        raise RequestError(422, "\"alpha\" must be a number from 0 to 10", "alpha")
    if "max_len" in options and not isinstance(options["max_len"], (str, int)):
        raise RequestError(422, "\"max_len\" must be tokens (80) or a ratio (\"1.5x+10\")",
                           "max_len")
    if "max_len" in options:
        options["max_len"] = str(options["max_len"])
    for n in names:  # the checkpoint's own checks, with the option's name
        try:
            systems[n].translator.options(**options)
        except NMTError as e:
            raise RequestError(422, str(e).replace("--max-len", "max_len"),
                               next(iter(options), None))
    return {"texts": texts, "systems": names, "options": options, "attention": attention}


def create_app(systems: dict[str, System], limits: Limits | None = None):
    """The FastAPI application serving `systems` (name -> System)."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, Request
    from fastapi.responses import FileResponse, JSONResponse
    from fastapi.staticfiles import StaticFiles

    limits = limits or Limits()
    state: dict = {"in_flight": 0}  # /translate requests being answered

    @asynccontextmanager
    async def lifespan(app):
        state["batcher"] = Batcher(systems, limits)
        state["batcher"].start()
        yield
        await state["batcher"].stop()

    app = FastAPI(title="nmt serve", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    def error(status: int, message: str, field: str | None = None):
        return JSONResponse({"error": message, "field": field}, status_code=status)

    @app.exception_handler(Exception)
    async def unexpected(request, exc):  # a bug answers 500 to its client; the server goes on
        return error(500, f"internal error ({type(exc).__name__}: {exc})")

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html")

    @app.get("/health")
    async def health():
        b = state.get("batcher")
        return {"status": "ok", "systems": len(systems), "in_flight": state["in_flight"],
                "queued": b.queue.qsize() if b else 0}

    @app.get("/systems")
    async def list_systems():
        return [s.info() for s in systems.values()]

    @app.post("/translate")
    async def translate(request: Request):
        state["in_flight"] += 1
        try:
            return await _translate(request)
        finally:
            state["in_flight"] -= 1

    async def _translate(request):
        body = bytearray()
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limits.max_body:
            return error(413, f"request body over {limits.max_body:,} bytes")
        async for chunk in request.stream():  # stop reading at the limit, whatever was declared
            body += chunk
            if len(body) > limits.max_body:
                return error(413, f"request body over {limits.max_body:,} bytes")
        try:
            req = parse_request(bytes(body), systems, limits)
        except RequestError as e:
            return error(e.status, e.message, e.field)
        b: Batcher = state["batcher"]
        try:
            outs = await asyncio.gather(*(b.translate(n, req["texts"], req["options"])
                                          for n in req["systems"]))
            result: dict = {"systems": req["systems"],
                            "translations": dict(zip(req["systems"], outs))}
            if req["attention"]:
                result["attention"] = {}
                for n in req["systems"]:
                    t = systems[n].translator
                    maps = [await b.run(lambda x=x: attention_json(
                        t.translate_with_attention(x, **req["options"]))) for x in req["texts"]]
                    result["attention"][n] = maps
        except NMTError as e:
            return error(422, str(e))
        return result

    return app


def serve(specs: list[str], host: str = "127.0.0.1", port: int = 8000, device: str = "auto",
          limits: Limits | None = None) -> None:
    """Load every run, then serve until SIGTERM or Ctrl-C (both finish the requests in
    flight first)."""
    require_serve()
    import uvicorn

    systems = load_systems(specs, device)
    print(f"serving {', '.join(systems)} on http://{host}:{port}/", flush=True)
    uvicorn.run(create_app(systems, limits), host=host, port=port, log_level="warning")
