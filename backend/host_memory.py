"""Keep freed host memory in the process, as a serving engine's caching allocator would.

On CPU, torch takes tensor memory from the C library's malloc. glibc serves large requests
(over a threshold that starts at 128 KiB) with fresh mmap()s and gives them back on free, and
trims the heap's free top back to the OS; the next step's activations then fault their pages
in again. On the development VM that cost a tiny-llama replay 70-135 thousand page faults and
a third of its step time (sys time), and more after an idle stretch than between
back-to-back steps, so the same prefill took 15-18 ms in a replay and 10 ms in the profile's
back-to-back steps: an error no cost model should be asked to absorb. A GPU server does not
see it (PyTorch's CUDA caching allocator keeps freed blocks), so the CPU backend keeps freed
memory too: `mallopt` raises both thresholds, and steady-state steps fault nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
"""glibc's `mallopt` parameter numbers (malloc.h)."""
MMAP_THRESHOLD_BYTES = 256 * 1024**2
"""Requests larger than this still get their own mapping (a KV pool of gigabytes, say)."""
TRIM_THRESHOLD_BYTES = 1024**3

_kept: bool | None = None


def keep_freed_host_memory() -> bool:
    """Set glibc's thresholds once per process; False where there is no glibc `mallopt`
    (macOS, musl), which leaves the C library's own behaviour."""
    global _kept
    if _kept is None:
        _kept = _set_thresholds()
    return _kept


def _set_thresholds() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
                and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
