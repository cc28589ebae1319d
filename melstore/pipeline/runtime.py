"""Tune the native runtime of a job process: thread pools and the C heap."""

import ctypes
import os
import sys

THREAD_ENV_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "NUMBA_NUM_THREADS",
)


def pin_threads(threads: int) -> None:
    """Limit every native thread pool of this process to ``threads``.

    Parallel processes with default pools oversubscribe the cores
    (docs/design.md). The pools read these variables when their library
    loads, so this must run before numpy is imported.

    Parameters
    ----------
    threads : int
        Number of threads the job was granted.

    Raises
    ------
    RuntimeError
        If numpy was imported before the pools could be sized.
    """
    if "numpy" in sys.modules:
        raise RuntimeError("pin_threads() must run before numpy is imported")
    for name in THREAD_ENV_VARS:
        os.environ[name] = str(max(1, int(threads)))


# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def retain_freed_memory(*, threshold_mb: int = 256) -> bool:
    """Keep freed memory in the heap instead of returning it to the system.

    Each clip allocates a few MB of temporary arrays. With glibc's default
    thresholds these are mapped and unmapped every time, and the page faults
    cost a large part of the work (docs/design.md). Raising the mmap and trim
    thresholds reuses the memory. Peak memory grows by at most ``threshold_mb``.

    Returns
    -------
    bool
        False where the C library is not glibc (nothing changed).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    size = threshold_mb * 2**20
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, size) and libc.mallopt(_M_TRIM_THRESHOLD, 2 * size))
