"""CUDA graphs for training updates (train.cuda_graphs): each micro-batch's forward, loss and
backward is captured once per batch shape and replayed, one launch instead of hundreds.

Why: the recipes' models are small, and on a GPU an update waits on the host launching its
kernels one by one, not on the arithmetic: a Bahdanau decoder is a Python loop over target
positions, a few dozen kernels each, forward and backward. A replayed graph launches them all
at once.

Shapes. A graph replays fixed shapes and addresses, and token batches vary in the number of
sentences and both lengths, so each batch is padded up to a bucket shape (`bucket`: every size
rounded up to four steps an octave, 8, 10, 12, 14, 16, 20, ...), and there is one graph per
bucket shape, its inputs copied into buffers of that shape before each replay. Padding rows
are a one-token source (EOS) with a target that has nothing to predict (BOS, then PAD), padding
positions are PAD: the loss ignores them and the masks hide them as in any batch, so the padded
batch's loss and gradients are today's up to float rounding (tests/test_graphs.py checks both,
for the Transformer and every RNN attention). The RNN encoder cannot pack (packing lays the
batch out by the lengths' values): inside a graph it runs on the padded shape
(encoders.fixed_shapes). The loss is scaled by the update's token count through a tensor
filled before each replay, never a number baked into the graph.

What stays outside: clipping and the optimizer step (fused Adam, a few launches; capturing it
would need capturable Adam, with its step counts on the GPU and so another optimizer state in
last.pt), and the host's one read per update of the loss and gradient norm, which decides
whether to step (a non-finite update is skipped). Gradients are never freed (zeroed in place),
since a graph adds into them at fixed addresses (allocated before the first capture).

Capture: on a side stream, after WARMUP untimed forward/backward passes there (autograd.grad,
so the real gradients are not touched), into one memory pool shared by every graph (a graph's
temporaries are free when it ends, and its only output, the loss, is copied right after each
replay, so replaying graphs in any order is safe). The CUDA random state is put back after a
capture, so capturing draws nothing: a replay advances the generator as the same pass run
eagerly from the same state does, and a resumed run (which captures again) goes on as the
uninterrupted one would (tests/test_graphs.py checks it where CUDA is).

Where graphs are not used: without CUDA (a no-op: the CPU trains exactly as without the
switch), under DDP (its gradient all-reduce hooks run outside any graph) and with
torch.compile. A capture that fails (an operation a graph cannot hold) is reported once and
training goes on eagerly. Beyond MAX_GRAPHS bucket shapes, new shapes run the same padded pass
eagerly.
"""
from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from nmt.batching import Batch
from nmt.encoders import fixed_shapes
from nmt.special import BOS, EOS, PAD

Shape = tuple[int, int, int]  # (sentences, source length, target length) of a padded batch
# (src, src_len, tgt_in, tgt_out) -> the loss summed over the batch's target tokens
LossFn = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]

MAX_GRAPHS = 256  # bucket shapes captured at most; Multi30k's epochs make fewer than 100
WARMUP = 2        # untimed passes on the side stream before each capture (lazy initialisation)


def bucket(n: int) -> int:
    """n rounded up to the bucket ladder: 1..8 as they are, then four steps an octave (8, 10,
    12, 14, 16, 20, 24, 28, 32, 40, ...): at most 25% padding, a handful of sizes per octave."""
    if n <= 8:
        return n
    step = 1 << (n.bit_length() - 3)  # n in [2^k, 2^(k+1)): steps of 2^(k-2)
    return -(-n // step) * step


def bucket_shape(batch: Batch) -> Shape:
    """The padded shape of `batch`: its sentences and both lengths, each rounded up by bucket."""
    return bucket(batch.src.size(0)), bucket(batch.src.size(1)), bucket(batch.tgt_in.size(1))


def pad_batch(batch: Batch, shape: Shape | None = None) -> Batch:
    """`batch` (host tensors, as collate makes them) padded to `shape` (default bucket_shape):
    extra rows hold a one-token source (EOS, length 1: nothing is empty, so no attention row is
    all masked) and a target with nothing to predict (BOS then PAD in, all PAD out); extra
    positions are PAD. ntokens stays the real count; an extra row's index is -1."""
    rows, S, T = shape or bucket_shape(batch)
    B, s, t = batch.src.size(0), batch.src.size(1), batch.tgt_in.size(1)
    src = batch.src.new_full((rows, S), PAD)                    # (rows, S)
    src[:B, :s] = batch.src
    src[B:, 0] = EOS
    src_len = batch.src_len.new_ones(rows)                      # (rows,)
    src_len[:B] = batch.src_len
    tgt_in = batch.tgt_in.new_full((rows, T), PAD)              # (rows, T)
    tgt_in[:B, :t] = batch.tgt_in
    tgt_in[B:, 0] = BOS
    tgt_out = batch.tgt_out.new_full((rows, T), PAD)            # (rows, T)
    tgt_out[:B, :t] = batch.tgt_out
    index = batch.index.new_full((rows,), -1)                   # (rows,)
    index[:B] = batch.index
    return Batch(src, src_len, tgt_in, tgt_out, batch.ntokens, index)


def unavailable(setting: bool | str, device: torch.device, world: int,
                compiled: bool) -> str | None:
    """Why train.cuda_graphs gives no graphs here, or None when updates are to be captured."""
    if setting is False:
        return "train.cuda_graphs is false"
    if device.type != "cuda":
        return f"CUDA graphs need a CUDA device, and this run trains on {device.type}"
    if world > 1:
        return "not under DDP (its gradient all-reduce runs outside any graph)"
    if compiled:
        return "not with torch.compile"
    return None


@dataclass
class _Step:
    """The fixed buffers of one bucket shape: the inputs a replay reads (filled before each),
    and, once captured, its graph and the loss it writes."""
    src: Tensor                      # (rows, S) long
    src_len: Tensor                  # (rows,) long, on the device
    tgt_in: Tensor                   # (rows, T) long
    tgt_out: Tensor                  # (rows, T) long
    scale: Tensor                    # () float32: what the loss is multiplied by before backward
    graph: torch.cuda.CUDAGraph | None = None
    loss: Tensor | None = None       # () the captured pass's summed loss

    @classmethod
    def like(cls, batch: Batch, device: torch.device) -> "_Step":
        def empty(x: Tensor) -> Tensor:
            return torch.empty(x.shape, dtype=x.dtype, device=device)
        return cls(empty(batch.src), empty(batch.src_len), empty(batch.tgt_in),
                   empty(batch.tgt_out), torch.zeros((), device=device))

    def fill(self, batch: Batch, scale: float) -> None:
        """Copy a padded batch of this shape in (asynchronously: the host does not wait)."""
        for name in ("src", "src_len", "tgt_in", "tgt_out"):
            getattr(self, name).copy_(getattr(batch, name), non_blocking=True)
        self.scale.fill_(scale)


class GraphedSteps:
    """Forward, loss and backward of padded micro-batches, one CUDA graph per bucket shape.

    `loss(src, src_len, tgt_in, tgt_out)` is the summed loss of a batch (under the autocast the
    run uses, with its weight cache off: a graph must not keep casts made at capture). With
    capture=False every pass runs eagerly on the same buffers and fixed shapes: the CPU tests
    check the padded path so, where no graph can be captured."""

    def __init__(self, model: torch.nn.Module, loss: LossFn, device: torch.device,
                 capture: bool = True):
        self.model, self.loss_fn, self.device, self.capture = model, loss, device, capture
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.steps: dict[Shape, _Step] = {}
        self.captured = 0                # graphs captured
        self.capture_seconds = 0.0       # spent warming up and capturing them
        self.pool = torch.cuda.graph_pool_handle() if capture else None
        self.stream = torch.cuda.Stream(device) if capture else None

    def pad(self, batch: Batch) -> Batch:
        return pad_batch(batch)

    def backward(self, batch: Batch, scale: float) -> Tensor:
        """One padded micro-batch (pad_batch, then on the device): its loss multiplied by
        `scale` is backpropagated into the parameters' gradients. Returns the summed loss, a
        tensor of its own. The first batch of a shape captures its graph (an exception there
        means the shape cannot be captured: the caller goes on without graphs)."""
        shape: Shape = (batch.src.size(0), batch.src.size(1), batch.tgt_in.size(1))
        # graphs are captured and replayed on the run's device, whichever is current
        with torch.cuda.device(self.device) if self.capture else nullcontext():
            step = self.steps.get(shape)
            new = step is None
            if step is None:
                step = self.steps[shape] = _Step.like(batch, self.device)
            step.fill(batch, scale)
            if new and self.capture and self.captured < MAX_GRAPHS:
                self._capture(step)
            if step.graph is None:
                return self._pass(step)
            step.graph.replay()
            return step.loss.clone()  # before another graph's replay may reuse its memory

    def _pass(self, step: _Step) -> Tensor:
        """What a graph holds: forward and loss on fixed shapes, backward of the scaled loss."""
        with fixed_shapes(self.model):
            loss = self.loss_fn(step.src, step.src_len, step.tgt_in, step.tgt_out)
        (loss * step.scale).backward()
        return loss.detach()

    def _capture(self, step: _Step) -> None:
        """Warm up on the side stream, then capture step's pass into a graph sharing the pool;
        the CUDA random state is as before (warm-up and capture draw nothing)."""
        t0 = time.perf_counter()
        rng = torch.cuda.get_rng_state(self.device)
        main = torch.cuda.current_stream(self.device)
        try:
            self.stream.wait_stream(main)  # the buffers were filled on the main stream
            with torch.cuda.stream(self.stream):
                for _ in range(WARMUP):
                    with fixed_shapes(self.model):
                        loss = self.loss_fn(step.src, step.src_len, step.tgt_in, step.tgt_out)
                    used = torch.autograd.grad(loss * step.scale, self.params, allow_unused=True)
            main.wait_stream(self.stream)
            # the graph must add into gradients that exist: allocated now, outside its pool
            # (a parameter the pass does not use keeps none, and Adam leaves it alone)
            for p, g in zip(self.params, used):
                if p.grad is None and g is not None:
                    p.grad = torch.zeros_like(p)
            del loss, used  # the warm-up's gradients: not kept through the capture
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self.pool, stream=self.stream):
                step.loss = self._pass(step)
            step.graph = graph
            self.captured += 1
        finally:
            # whatever happened, the main stream's next work (an eager pass, the optimizer)
            # waits for the side stream's, which reads the parameters
            main.wait_stream(self.stream)
            torch.cuda.set_rng_state(rng, self.device)
            self.capture_seconds += time.perf_counter() - t0
