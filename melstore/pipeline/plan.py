"""What the Snakefile knows at parse time: the checked config, manifest and shards."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from melstore.errors import ConfigError
from melstore.features.extractor import FeatureParams
from melstore.features.presets import check_feature_set_names, resolve_feature_set
from melstore.pipeline import demo
from melstore.pipeline.config import validate_config
from melstore.pipeline.manifest import (
    Listing,
    Manifest,
    build_manifest,
    manifest_from_listing,
    metadata_csv,
)
from melstore.pipeline.memory import clip_arrays_mb, job_memory_mb, longest_seconds
from melstore.pipeline.shards import SHARD_DIGEST_CHARS, assign_shards
from melstore.store.format import Storage

# Feature-set keys that say how a store keeps its values, not how they are computed.
STORAGE_KEYS = ("precision_db", "compression")

# What an extraction job is told of each of its clips.
ENTRY_COLUMNS = ("clip_id", "path", "problem")

# Folders the workflow writes, relative to the working directory.
OUTPUT_FOLDERS = ("results", "logs", ".snakemake")


@dataclass
class Plan:
    """The checked configuration of one run and everything derived from it.

    Attributes
    ----------
    dataset : str
        ``dataset.name``; outputs go below ``results/<dataset>/``.
    root : Path
        The dataset folder.
    manifest : Manifest
        Every clip, in store order.
    feature_sets : dict
        Name to :class:`FeatureParams`, for each entry of ``features``.
    storage : dict
        Name to :class:`Storage`, for each entry of ``features``.
    shards : dict
        Shard name to manifest rows (shared by all feature sets).
    """

    config: dict
    dataset: str
    root: Path
    manifest: Manifest
    feature_sets: dict[str, FeatureParams]
    storage: dict[str, Storage]
    shards: dict[str, list[int]]

    @classmethod
    def from_config(cls, config: dict, *, schema_path: str | Path) -> Plan:
        """Validate ``config``, resolve its feature sets and list the dataset.

        Raises
        ------
        ConfigError
            For the first problem found, naming the config key or file.
        """
        validate_config(config, schema_path)
        dataset = config["dataset"]
        check_root_is_apart(dataset["root"])
        if demo.is_demo_root(dataset["root"]) and dataset["layout"] != "urbansound8k":
            raise ConfigError(
                f"config key 'dataset.layout': {dataset['root']} holds the generated demo, which "
                f"is in the urbansound8k layout, not {dataset['layout']!r}"
            )
        check_feature_set_names(config["feature_sets"])  # every entry, listed in features or not
        computed = {
            name: {key: v for key, v in values.items() if key not in STORAGE_KEYS}
            for name, values in config["feature_sets"].items()
        }
        feature_sets = {name: resolve_feature_set(name, computed) for name in config["features"]}
        storage = {
            name: Storage(
                **{key: config["feature_sets"].get(name, {}).get(key) for key in STORAGE_KEYS}
            )
            for name in config["features"]
        }
        manifest = load_manifest(dataset)
        check_source_column(dataset, manifest)
        shards = assign_shards(manifest.table["clip_id"].tolist(), config["shard_size"])
        return cls(
            config, dataset["name"], Path(dataset["root"]), manifest, feature_sets, storage, shards
        )

    @cached_property
    def _columns(self) -> dict[str, np.ndarray]:
        """clip_id, path and problem as object arrays: a shard's values are one take each."""
        table = self.manifest.table
        return {name: np.array(table[name].tolist(), dtype=object) for name in ENTRY_COLUMNS}

    def shard_entries(self, shard: str) -> list[tuple[str, str, str]]:
        """(clip_id, path, problem) of each clip in ``shard``."""
        rows = self.shards[shard]
        columns = (self._columns[name][rows].tolist() for name in ENTRY_COLUMNS)
        return list(zip(*columns, strict=True))

    def shard_sources(self, shard: str) -> str:
        """A digest of the path, problem, size and mtime of every file in ``shard``.

        The audio files are deliberately not Snakemake inputs: Snakemake stats
        every input of every ready job on each scheduling round (docs/design.md).
        This digest in a shard file's name reruns the shard when a file is
        added, removed or rewritten, even with an older mtime. The sizes and
        mtimes are those the dataset was listed with
        (:func:`~melstore.pipeline.manifest.scan_audio`). A generated dataset
        has none: it depends on its generator rule instead.
        """
        rows = self.shards[shard]
        text = np.empty(2 * len(rows), dtype=object)
        text[0::2], text[1::2] = self._columns["path"][rows], self._columns["problem"][rows]
        digest = hashlib.sha256("\0".join(text.tolist()).encode())
        digest.update(self.manifest.file_stats[rows].tobytes())
        return digest.hexdigest()

    def shard_file(self, feature_set: str, shard: str, *settings: object) -> str:
        """The name of a shard's file, ``<shard>-<digest>.h5``, without its folder.

        The digest is of all that decides the file's bytes: its files
        (:meth:`shard_sources`), the feature set's parameters and storage, and
        ``settings`` (the extraction code and library versions). A change gives
        the shard a new file, which Snakemake then builds; the others stay.
        """
        digest = hashlib.sha256(self.shard_sources(shard).encode())
        parts = [self.feature_sets[feature_set].to_dict(), self.storage[feature_set].to_dict()]
        digest.update(json.dumps([*parts, *settings], sort_keys=True).encode())
        return f"{shard}-{digest.hexdigest()[:SHARD_DIGEST_CHARS]}.h5"

    def longest_seconds(self, rows: list[int]) -> float:
        """The longest duration of the files of manifest ``rows`` (:func:`longest_seconds`)."""
        paths = self._columns["path"][rows].tolist()
        return longest_seconds(self.root, paths, self.manifest.file_stats[rows, 0].tolist())

    def extract_mem_mb(self, feature_set: str, shard: str, *, threads: int) -> int:
        """What the extraction job of ``shard`` asks for (``mem_mb``), from its longest file.

        Only a variable-length set reads headers: a fixed-length clip has its duration.
        """
        params, rows = self.feature_sets[feature_set], self.shards[shard]
        seconds = self.longest_seconds(rows) if params.duration is None else 0.0
        worker = clip_arrays_mb(params, seconds=seconds)
        return job_memory_mb(worker, threads=threads, shard_clips=len(rows))

    def generated_files(self) -> list[str]:
        """Files the demo generator writes (its metadata CSV first), if the root is the demo's."""
        if not demo.is_demo_root(self.root):
            return []
        return [str(self.root / path) for path in demo.relative_paths()]

    def metadata_files(self) -> list[str]:
        """The metadata CSV the manifest came from, if any (an input of the gather)."""
        dataset = self.config["dataset"]
        csv = metadata_csv(dataset["root"], dataset["layout"], dataset["metadata"])
        return [] if csv is None else [str(csv)]


def check_source_column(dataset: dict, manifest: Manifest) -> None:
    """Refuse a ``dataset.source_column`` the dataset's metadata does not have."""
    column = dataset.get("source_column")
    if column is not None and column not in manifest.csv_columns:
        raise ConfigError(
            f"config key 'dataset.source_column': {column!r} is not a column of the dataset's "
            f"metadata; columns: {', '.join(manifest.csv_columns)}"
        )


def load_manifest(dataset: dict, *, with_stats: bool = True) -> Manifest:
    """The manifest of the ``dataset`` config section (see :func:`build_manifest`).

    The demo's manifest comes from its generator's plan, so it is known before
    the files exist; it equals what the layout reads from disk.
    """
    if not demo.is_demo_root(dataset["root"]):
        return build_manifest(
            dataset["root"], dataset["layout"], dataset["metadata"], with_stats=with_stats
        )
    audio = [path for path in demo.relative_paths() if path != demo.CSV_PATH]
    return manifest_from_listing(
        dataset["layout"], csv=demo.csv_table(), listing=Listing.unstated(audio)
    )


def check_root_is_apart(root: str | Path) -> None:
    """Refuse a dataset root that holds, or lies in, a folder the workflow writes.

    Raises
    ------
    ConfigError
        Naming ``dataset.root`` and the output folder it overlaps.
    """
    root = Path(root).resolve()
    for name in OUTPUT_FOLDERS:
        folder = Path(name).resolve()
        if folder == root or root in folder.parents or folder in root.parents:
            raise ConfigError(
                f"config key 'dataset.root': {root} overlaps the workflow's output folder "
                f"{folder}; keep the dataset outside the working directory's {name}/"
            )
