"""What every Snakemake ``script:`` adapter does around the work it wires up."""

from __future__ import annotations

import errno
import logging
import os
import sys
from contextlib import contextmanager

from melstore.errors import MelstoreError
from melstore.pipeline.runtime import pin_threads

# The extraction rule's threads: worker processes forked in the job, lowered to --cores.
EXTRACT_THREADS = 8


@contextmanager
def snakemake_job(snakemake):
    """Tune the process, log to the rule's log file, and turn expected errors into one line.

    A :class:`MelstoreError` (bad input, bad configuration) or a full disk ends
    the job with a one-line message and no traceback; anything else is a bug
    and keeps its traceback.
    """
    pin_threads(1)  # parallel work is done by processes (see extract), never threads
    _set_hdf5_file_locking(snakemake.config.get("hdf5_file_locking"))
    handler = (
        logging.FileHandler(snakemake.log[0], mode="w")
        if snakemake.log
        else logging.StreamHandler()
    )
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger = logging.getLogger("melstore")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.info("HDF5_USE_FILE_LOCKING=%s", os.environ.get("HDF5_USE_FILE_LOCKING", "(default)"))
    try:
        yield logger
    except KeyboardInterrupt:
        job = " ".join([snakemake.rule, "/".join(map(str, snakemake.wildcards))]).strip()
        _fail(logger, f"{job} interrupted; run the same command again to resume", status=130)
    except MelstoreError as err:
        _fail(logger, str(err))
    except OSError as err:
        if err.errno != errno.ENOSPC and "No space left on device" not in str(err):
            raise
        _fail(logger, f"disk full (no space left on device) while writing {snakemake.output}")


def _set_hdf5_file_locking(enabled: bool | None) -> None:
    # HDF5 reads this variable when it opens a file; None leaves the user's choice.
    if enabled is not None:
        os.environ["HDF5_USE_FILE_LOCKING"] = "TRUE" if enabled else "FALSE"


def _fail(logger: logging.Logger, message: str, *, status: int = 1) -> None:
    logger.error("%s", message)
    print(f"melstore: {message}", file=sys.stderr)
    sys.exit(status)
