"""The training loop's allocator setting (models/memory.py): large blocks come from the reused heap inside,
from their own mmap again after it, on glibc (mallinfo2 counts the mmapped bytes)."""
import ctypes

import pytest

from models import memory

BIG = 64 * 2**20         # above glibc's largest dynamic mmap threshold (32 MB): always mmapped by default


class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                      "fsmblks", "uordblks", "fordblks", "keepcost")]


def mmapped_growth() -> int:
    """How many more bytes glibc holds in mmapped blocks while a BIG block is alive."""
    libc = memory._libc()
    info = libc.mallinfo2
    info.restype = MallInfo2
    before = info().hblkhd
    block = bytearray(BIG)
    grown = info().hblkhd - before
    del block
    return grown


@pytest.fixture(autouse=True)
def glibc():
    libc = memory._libc()
    if libc is None or not hasattr(libc, "mallinfo2"):
        pytest.skip("not glibc 2.33 or newer")


def test_large_blocks_come_from_the_kept_heap_inside_and_from_mmap_outside():
    assert mmapped_growth() >= BIG
    with memory.freed_memory_kept():
        assert mmapped_growth() == 0
    assert mmapped_growth() >= BIG


def test_nested_uses_keep_the_setting_until_the_outermost_ends():
    @memory.freed_memory_kept()
    def inner():
        return mmapped_growth()

    with memory.freed_memory_kept():
        assert inner() == 0
        assert mmapped_growth() == 0            # the inner one's end did not restore the defaults
    assert mmapped_growth() >= BIG
