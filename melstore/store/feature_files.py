"""Files of features computed for new audio (``melstore features``): .npz, .npy or .h5.

Each writer takes one clip's features at a time, so memory holds one clip
whatever the number of files, and writes into a temporary file beside its
target, which :func:`write_features` renames into place only when it is
complete: nothing half-written is ever left.

- ``.npz``: one array per audio file, keyed by the path as given.
- ``.npy``: one array of the clips stacked in the order given, (N, *clip
  shape); a variable-length store fits only one file in it, and it is
  written only if every file was computed.
- ``.h5``: ``features`` laid out as in a store (N, *clip shape), or for a
  variable-length store the clips end to end along time with
  ``frame_offset`` and ``n_frames`` per clip; ``path`` names each clip's
  file as given; attributes ``store``, ``feature_set`` and ``params`` (JSON).
"""

from __future__ import annotations

import json
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import h5py
import numpy as np

from melstore.errors import MelstoreError
from melstore.files import atomic_path
from melstore.store.format import check_outside_dataset

if TYPE_CHECKING:
    from melstore.store.inference import Extractor


@dataclass(frozen=True)
class Written:
    """What :func:`write_features` did.

    Attributes
    ----------
    computed : list of str
        The audio files whose features the output holds, in the order given.
    failed : dict of str to str
        The audio files that could not be computed, and why (one line each).
    kept : bool
        Whether the output was written (see :func:`write_features`).
    """

    computed: list[str]
    failed: dict[str, str]
    kept: bool


class FeatureWriter(ABC):
    """Writes the features of many audio files into one open temporary file."""

    suffix = ""
    # Whether a file that lacks some of the audio files is worth keeping.
    keeps_a_part = True
    # Whether it holds several clips of different lengths.
    holds_lengths_that_differ = True

    def __init__(self, path: Path, *, extractor: Extractor, count: int):
        """Open ``path`` for the features of ``count`` audio files computed by ``extractor``."""
        self.extractor, self.count = extractor, count

    @abstractmethod
    def add(self, name: str, features: np.ndarray) -> None:
        """Write one audio file's features, ``name`` being its path as given."""

    @abstractmethod
    def close(self) -> None:
        """Finish the file: nothing more is added."""


class NpzWriter(FeatureWriter):
    """An uncompressed ``.npz``: one ``<path>.npy`` member per audio file."""

    suffix = ".npz"

    def __init__(self, path: Path, *, extractor: Extractor, count: int):
        super().__init__(path, extractor=extractor, count=count)
        self._archive = zipfile.ZipFile(path, "w", allowZip64=True)

    def add(self, name: str, features: np.ndarray) -> None:
        with self._archive.open(f"{name}.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array(member, features, allow_pickle=False)

    def close(self) -> None:
        self._archive.close()


class NpyWriter(FeatureWriter):
    """One ``.npy`` of the clips stacked (N, *clip shape), streamed clip after clip."""

    suffix = ".npy"
    keeps_a_part = False  # a missing clip would shift every row after it
    holds_lengths_that_differ = False

    def __init__(self, path: Path, *, extractor: Extractor, count: int):
        super().__init__(path, extractor=extractor, count=count)
        self._file: BinaryIO = open(path, "wb")  # noqa: SIM115 - closed by close()
        self._header_written = False

    def add(self, name: str, features: np.ndarray) -> None:
        if not self._header_written:  # the first clip's shape: the store's, or the only one
            header = {
                "descr": np.lib.format.dtype_to_descr(features.dtype),
                "fortran_order": False,
                "shape": (self.count, *features.shape),
            }
            np.lib.format.write_array_header_2_0(self._file, header)
            self._header_written = True
        self._file.write(np.ascontiguousarray(features).tobytes())

    def close(self) -> None:
        self._file.close()


class H5Writer(FeatureWriter):
    """An HDF5 file laid out as a store's features, with each clip's file in ``path``."""

    suffix = ".h5"

    def __init__(self, path: Path, *, extractor: Extractor, count: int):
        super().__init__(path, extractor=extractor, count=count)
        self._file = h5py.File(path, "w")
        self._names: list[str] = []
        self._frame_counts: list[int] = []
        self._file.attrs.update(
            store=str(extractor.store),
            feature_set=extractor.feature_set,
            params=json.dumps(extractor.params, sort_keys=True),
        )

    def add(self, name: str, features: np.ndarray) -> None:
        fixed = self.extractor.clip_shape is not None
        if "features" not in self._file:
            shape = (0, *features.shape) if fixed else (*features.shape[:-1], 0)
            growing = (None, *features.shape) if fixed else (*features.shape[:-1], None)
            chunks = (1, *features.shape) if fixed else True  # a clip per chunk, as in a store
            self._file.create_dataset(
                "features", shape=shape, maxshape=growing, chunks=chunks, dtype=features.dtype
            )
        dataset = self._file["features"]
        if fixed:
            dataset.resize(len(dataset) + 1, axis=0)
            dataset[-1] = features
        else:
            start = dataset.shape[-1]
            dataset.resize(start + features.shape[-1], axis=dataset.ndim - 1)
            dataset[..., start:] = features
        self._names.append(name)
        self._frame_counts.append(features.shape[-1])

    def close(self) -> None:
        self._file.create_dataset("path", data=self._names, dtype=h5py.string_dtype("utf-8"))
        if self.extractor.clip_shape is None:
            counts = np.array(self._frame_counts, dtype=np.int64)
            self._file.create_dataset("n_frames", data=counts)
            self._file.create_dataset("frame_offset", data=np.cumsum(counts) - counts)
        self._file.close()


WRITERS = {writer.suffix: writer for writer in (NpzWriter, NpyWriter, H5Writer)}


def writer_for(output: Path) -> type[FeatureWriter]:
    """The writer of ``output``'s format, which its suffix names.

    Raises
    ------
    MelstoreError
        For a suffix other than .npz, .npy and .h5.
    """
    writer = WRITERS.get(output.suffix)
    if writer is None:
        given = f"'{output.suffix}'" if output.suffix else "no suffix"
        *others, last = WRITERS
        raise MelstoreError(f"{output}: end it in {', '.join(others)} or {last}, not {given}")
    return writer


def check_output(output: Path, extractor: Extractor, audio: Sequence[str]) -> type[FeatureWriter]:
    """The writer of ``output`` if it can hold the features of ``audio``; else why not.

    Raises
    ------
    MelstoreError
        For a suffix other than .npz, .npy and .h5, an output that is the
        store or one of the audio files or lies in its dataset, or a .npy of several clips of
        different lengths.
    """
    writer = writer_for(output)
    target = output.resolve()
    if target == extractor.store.resolve():
        raise MelstoreError(f"{output} is the store itself; write the features into another file")
    if any(Path(path).resolve() == target for path in audio):
        raise MelstoreError(f"{output} is one of the audio files; write the features elsewhere")
    check_outside_dataset(output, store=extractor.store, dataset_root=extractor.dataset_root)
    if extractor.clip_shape is None and len(audio) > 1 and not writer.holds_lengths_that_differ:
        others = [suffix for suffix, w in WRITERS.items() if w.holds_lengths_that_differ]
        raise MelstoreError(
            f"{output}: a {writer.suffix} stacks its clips in one array, and the clips of "
            f"{extractor.store} differ in length (duration: null), so it holds one file, "
            f"not {len(audio)}: write {' or '.join(others)}"
        )
    return writer


def write_features(
    output: Path,
    extractor: Extractor,
    audio: Sequence[str],
    *,
    on_file: Callable[[str, str | None], None] = lambda path, failure: None,
) -> Written:
    """Compute the features of each audio file and write them into ``output``, atomically.

    A file that cannot be computed is left out and named in the result. The
    output is kept if it holds at least one file's features, and, for
    ``.npy``, every file's: otherwise nothing is written.

    Parameters
    ----------
    output : Path
        The file to write; its suffix chooses the format (module docstring).
    extractor : Extractor
        The store's computation.
    audio : sequence of str
        The audio files, in order; each is named in the output as given.
    on_file : callable
        Called after each file with its path and why it failed (None if it
        did not), e.g. to show progress.

    Raises
    ------
    MelstoreError
        If ``output`` cannot hold these features (:func:`check_output`).
    """
    writer_class = check_output(output, extractor, audio)
    computed, failed = [], {}
    try:
        with atomic_path(output) as tmp:
            writer = writer_class(tmp, extractor=extractor, count=len(audio))
            try:
                for path in audio:
                    try:
                        features = extractor.from_file(path)
                    except MelstoreError as err:
                        failed[path] = str(err)
                    else:
                        writer.add(path, features)
                        computed.append(path)
                    on_file(path, failed.get(path))
            finally:
                writer.close()
            if not computed or (failed and not writer.keeps_a_part):
                raise _Incomplete
    except _Incomplete:
        return Written(computed, failed, kept=False)
    return Written(computed, failed, kept=True)


class _Incomplete(Exception):
    """The output is not worth keeping: atomic_path then removes it, unrenamed."""
