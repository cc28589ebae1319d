"""Tune the native runtime of a job process: thread pools and the C heap."""

import ctypes
import os

THREAD_ENV_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "NUMBA_NUM_THREADS",
)


def pin_threads(threads: int) -> None:
    """Limit every native thread pool of this process to ``threads``, loaded or not.

    Parallel processes with default pools oversubscribe the cores
    (docs/design.md). Pools already loaded are limited through threadpoolctl;
    the environment variables size those whose libraries load later.

    Parameters
    ----------
    threads : int
        Number of threads the job was granted.
    """
    from threadpoolctl import threadpool_limits

    threads = max(1, int(threads))
    for name in THREAD_ENV_VARS:
        os.environ[name] = str(threads)
    threadpool_limits(limits=threads)


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
