"""Size the native thread pools of numpy, BLAS and numba before they start."""

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

    Parallel Snakemake jobs with default pools oversubscribe the cores
    (measured 6.5x slower, see DESIGN.md). The pools read these variables
    when their library loads, so this must run before numpy is imported.

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
