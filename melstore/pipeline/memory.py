"""An extraction job's memory: what ``melstore plan`` predicts and the rule's ``mem_mb`` asks.

What it buys: a job of long recordings asks for what it needs, so that
``snakemake --resources mem_mb=N`` and SLURM (``--mem``) run no more of them
at once than fit. One model serves both: a parent, and per worker a base, a
block of audio and a few copies of the largest clip's features. A
variable-length set streams each file, so a worker holds the features of its
file, not its audio; its longest file is found from the headers of its largest
files. The constants were measured on the bench machines (bench/README.md).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

from melstore.errors import AudioError
from melstore.features.audio import read_header
from melstore.features.extractor import FeatureParams

JOB_BASE_MB = 160  # an extraction job's parent process
WORKER_BASE_MB = 75  # a forked worker, before its clip's arrays
RECORD_BYTES_PER_CLIP = 1200  # the parent's index of the clips of its previous shard files
BLOCK_MB = 20  # a streamed block's audio, resampled samples and frames
FEATURE_COPIES = 6  # a clip's features held at once: power, log, rounding, result, transfer
# The files whose headers are read for the longest one: the largest by size.
LONGEST_CANDIDATES = 64


def job_memory_mb(worker_peak_mb: float, *, threads: int, shard_clips: int) -> int:
    """An extraction job's memory: its parent with the shard's index, and its workers."""
    parent = JOB_BASE_MB + shard_clips * RECORD_BYTES_PER_CLIP / 1e6
    return int(math.ceil(parent + threads * (WORKER_BASE_MB + worker_peak_mb)))


def clip_arrays_mb(params: FeatureParams, *, seconds: float) -> float:
    """A worker's arrays for a clip of ``seconds``: a block of audio, copies of its features.

    A fixed-length set's clips are its ``duration``, whatever the file's length.
    """
    if params.duration is not None:
        seconds = params.duration
    n_frames = params.frames_for(math.ceil(seconds * params.sr))
    features_mb = n_frames * math.prod(params.frame_shape) * 4 / 1e6
    return BLOCK_MB + FEATURE_COPIES * features_mb


def longest_seconds(root: str | os.PathLike, paths: Sequence[str], sizes: Sequence[int]) -> float:
    """The longest duration among the :data:`LONGEST_CANDIDATES` largest of ``paths`` (0 if none).

    Within a format a file's duration grows with its size; an unreadable
    header counts as 0 (its job reports the file).
    """
    largest = sorted(range(len(paths)), key=lambda i: sizes[i], reverse=True)
    longest = 0.0
    for i in largest[:LONGEST_CANDIDATES]:
        try:
            longest = max(longest, read_header(os.path.join(root, paths[i])).duration)
        except AudioError:
            continue
    return longest
