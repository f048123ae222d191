"""Host-to-device copies that never make the host wait: pinned memory, asynchronous copies.

Batches (batching.py), models (the source mask, the RNN encoder's sort order) and search move
tensors through `to_device`; it is a module of its own so the network code needs neither the
data pipeline nor SentencePiece to do so.
"""
from __future__ import annotations

import torch
from torch import Tensor


def to_device(x: Tensor, device) -> Tensor:
    """A host tensor on `device` without making the host wait: to a GPU it is pinned and copied
    asynchronously (a copy from pageable memory may wait for the GPU's queue); anything already
    on `device` is returned as it is."""
    device = torch.device(device)
    if device.type == "cuda" and x.device.type == "cpu" and not x.is_pinned():
        x = x.pin_memory()
    return x.to(device, non_blocking=True)
