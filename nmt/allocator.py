"""Keep freed memory in the process (Linux with glibc), so that the large tensors every training
update and every decoding step allocates and frees again come from memory the process holds.

glibc serves a block above its mmap threshold (128 KiB at first, rising with the blocks freed to
at most 32 MiB) with fresh pages from the OS and hands them back when the block is freed. A beam
step's log-probabilities (rows x vocabulary x 4 bytes: 1,000 x 8,000 x 4 = 32 MB), its
Transformer key/value buffers and a training update's activations are such blocks, so every step
faults in and zeroes tens of MB again. With the thresholds raised, glibc keeps the freed blocks
and reuses them: beam search and training take markedly less time, with the same translations
(bench/log/2026-11-26-cpu-bench-1.md, the "freed memory back to the OS" rows).

The setting is process-wide: the CLI makes it at start; a program that uses nmt as a library
may call keep_freed_memory itself. Elsewhere (macOS, musl) it does nothing.
"""
from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, glibc's malloc.h
KEEP = 1 << 30  # blocks up to 1 GiB come from the heap, and up to 1 GiB of free top stays


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds to KEEP; True if glibc took both settings."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, KEEP)) and bool(mallopt(M_TRIM_THRESHOLD, KEEP))
