"""Process-wide allocator and threading settings for the command-line entry points.

Called by `cli.py` and `python -m calib.bench` before numpy is imported (the
environment variables only take effect then; `mallopt` applies from the call on).
"""

from __future__ import annotations

import os
import sys


def tune_process() -> None:
    """Process-wide settings for short, allocation-heavy CLI runs (before numpy loads).

    - one OpenBLAS thread: the engine's vector sums run on its own threads and
      OpenBLAS's spinning workers would compete with them (no matrix work here);
    - no transparent huge pages for numpy arrays: on a fragmented VM each 2 MB
      page can stall on compaction (~2 s/GB measured) where 4 KB pages cost a
      steady ~0.5 s/GB;
    - glibc malloc keeps freed memory for reuse instead of returning it to the
      OS, so numpy's large temporaries do not come back as fresh pages (first
      touch again) on every allocation, and one arena serves every thread
      (per-thread arenas would each keep their own freed memory: +50% peak
      RSS on a year-long window).
    """
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    os.environ.setdefault("NUMPY_MADVISE_HUGEPAGE", "0")
    if sys.platform != "linux":
        return
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_top_pad, m_mmap_threshold, m_arena_max = -1, -2, -3, -8
        libc.mallopt(m_mmap_threshold, 32 << 20)  # glibc's maximum: blocks up to 32 MB from the heap
        libc.mallopt(m_trim_threshold, 1 << 30)
        libc.mallopt(m_top_pad, 64 << 20)
        libc.mallopt(m_arena_max, 1)  # worker threads reuse the main heap instead of growing their own
    except (OSError, AttributeError):  # not glibc: defaults
        pass
