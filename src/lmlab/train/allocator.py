"""The C allocator of a training process: large freed buffers stay in the heap for the next step.

torch allocates CPU tensors with the C library's malloc. glibc serves a block above its mmap
threshold (at most 32 MiB, however it adapts) with a fresh mmap and gives it back to the system
when freed, so such a buffer costs a page fault per 4 KiB page every time it is allocated again.
A training step allocates the same large buffers at every step: the token embedding's gradient
is vocab × d_model floats (30,522 × 384 × 4 bytes = 47 MB for a BERT vocabulary), created and
zeroed by the backward pass and freed by ``zero_grad``. Raising the mmap and trim thresholds keeps
such blocks in the heap, so the next step reuses the pages: the embedding's backward drops from
19.5 to 7 ms (1 thread), a full MiniLM fine-tuning step by about 6 % (benchmarks/bench_unpad.py,
``--heap``).

The price: memory freed by the process is returned to the system less eagerly (a training
process holds its peak working set anyway). Only glibc has these settings; elsewhere this does
nothing. The training loop sets them when it starts.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
KEEP_BELOW_BYTES = 1 << 30  # blocks up to 1 GiB come from the heap and stay there when freed


@functools.cache
def keep_large_buffers() -> bool:
    """Set glibc's mmap and trim thresholds to `KEEP_BELOW_BYTES`; False where there is no glibc."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (macOS, musl without mallopt, Windows)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, KEEP_BELOW_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD, KEEP_BELOW_BYTES))
