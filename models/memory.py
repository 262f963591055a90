"""glibc's allocator told to keep the memory a training step frees, for the length of a training loop.

Every training step allocates and frees the same large tensors (a full softmax's logits over MovieLens'
1,616 items are about 30 MB a batch, and their gradients as much again). glibc's malloc serves each block
above its mmap threshold (128 KB, rising to 32 MB at most) with a fresh `mmap` and gives it back with
`munmap` on free, so each step faults every page of them in again: 2.4 million minor page faults in 40
steps, a fifth of the step's CPU time spent in the kernel zeroing pages. With mmap off and the heap's top
kept (`mallopt`), the freed blocks are reused: 110,000 page faults, the step 1.4-1.6x faster
(`docs/models.md`, "Training time"). PyTorch's CPU tuning guide suggests jemalloc or tcmalloc preloaded
for the same reason; this needs no preloaded library and ends with the loop. Elsewhere than glibc, nothing
changes.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4          # glibc's malloc.h
DEFAULT_TRIM_THRESHOLD, DEFAULT_MMAP_MAX = 128 * 1024, 65536
KEEP = 2**31 - 1                                # mallopt takes a C int

_depth = 0


@functools.cache
def _libc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


@contextlib.contextmanager
def freed_memory_kept():
    """Within: freed blocks stay with the process (no mmap for large blocks, no trimming of the heap's top).
    On leaving the outermost one: glibc's defaults back and the free memory handed back (`malloc_trim`)."""
    global _depth
    libc = _libc()
    if libc is None:
        yield
        return
    if _depth == 0:
        libc.mallopt(M_MMAP_MAX, 0)
        libc.mallopt(M_TRIM_THRESHOLD, KEEP)
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0:
            libc.mallopt(M_MMAP_MAX, DEFAULT_MMAP_MAX)
            libc.mallopt(M_TRIM_THRESHOLD, DEFAULT_TRIM_THRESHOLD)
            libc.malloc_trim(0)
