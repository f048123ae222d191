"""keep_freed_memory: large freed blocks stay in the process instead of going back to the OS."""
import ctypes
import sys

import pytest
import torch

from nmt.allocator import keep_freed_memory


class _MallInfo2(ctypes.Structure):  # glibc >= 2.33, malloc.h
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def _mallinfo2():
    try:
        f = ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):
        pytest.skip("needs glibc >= 2.33")
    f.restype = _MallInfo2
    return f()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator only")
def test_a_large_block_comes_from_the_heap_and_is_kept_when_freed():
    mapped_before = _mallinfo2().hblkhd  # bytes in blocks mmapped one by one
    assert keep_freed_memory() and keep_freed_memory()  # taken, and taking it again is harmless
    x = torch.empty(48 << 20, dtype=torch.uint8)  # above glibc's largest default threshold
    x[::4096] = 1  # touch every page
    during = _mallinfo2()
    assert during.hblkhd <= mapped_before  # not a block of its own from the OS
    del x
    after = _mallinfo2()
    assert after.fordblks >= 48 << 20  # freed, and kept as free heap for the next step
